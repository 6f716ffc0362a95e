"""Pipeline stages. Each module has ``run(params, project) -> dict``: it reads its inputs by path, writes its
outputs by path (atomically) and logs to MLflow. The CLI, ``dvc.yaml`` and the Airflow DAG all call it the
same way (``colbert-pipeline <stage>``); none of them holds logic of its own.


Stages are leaves: they read their paths from :class:`pipeline.project.layout.Layout` and call the library,
data and ops modules; nothing but the CLI's dispatch imports a stage. Their names and order are
:data:`pipeline.project.layout.STAGES` (the pipeline) and :data:`pipeline.project.layout.REPORT_STAGES`
(quality, report).
"""

from pipeline.project.errors import require

# A stage tracks with MLflow, is versioned by DVC, scores with trec_eval and plots: the `mlops` extra.
require(__name__, "mlops", "mlflow", "dvc", "pytrec_eval", "matplotlib")
