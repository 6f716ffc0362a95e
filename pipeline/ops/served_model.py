"""The served model's code, logged as it is (MLflow's models from code).

``mlflow.pyfunc.log_model(python_model=<this file>)`` stores this file, not a pickled Python object, so
loading a registry version runs reviewed code from the version's ``code/`` folder and unpickles nothing.
"""

import mlflow.models

from pipeline.ops.serving import ColBERTSearchModel

mlflow.models.set_model(ColBERTSearchModel())
