"""The ops wing: effects at the edges of the pipeline, with no torch at import.

- ``tracking``: MLflow runs (one parent per pipeline run, a child per stage) and the bounded retry layer;
- ``lineage``: git and DVC hashes (the one ``dvc.lock`` reader);
- ``promotion``: the pure promotion rule and the registry's records; ``registry``: the MLflow registry calls;
- ``serving``: the served pyfunc; ``canary``: the new champion's check;
- ``services``: the deployment's service commands (the compose stack and tests/deploy run the same);
- ``run_params``, ``orchestration``, ``runner``: what the Airflow DAG does; its supervised stage processes.
"""

from pipeline.project.errors import require

# mlflow and dvc (and DVC's hashing library) come with the `mlops` extra, not with the core library.
require(__name__, "mlops", "mlflow", "dvc", "dvc_data")
