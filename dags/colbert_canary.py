"""The champion canary DAG: runs on each ``colbert_champion`` event the pipeline DAG emits.

    probe_champion   load the new champion (and the one it replaced) from the MLflow registry, ask both
                     the fixed canary queries of the workspace's benchmark, log latency p50/p95 and
                     recall@10 to MLflow (experiment ``colbert-canary``); fail, with the numbers, if the
                     new champion cannot answer

The logic lives in ``pipeline.ops.canary``. Settings: ``COLBERT_PIPELINE_WORKSPACE`` and
``MLFLOW_TRACKING_URI`` (Airflow Variable first, then environment), as for the pipeline DAG;
``COLBERT_PIPELINE_CANARY_QUERIES`` (default 8).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pendulum
from airflow.sdk import dag, get_current_context, task

from pipeline.ops import canary, dag_shared, orchestration
from pipeline.ops.dag_shared import CHAMPION, fail_without_retry, lookup


@dag(
    dag_id="colbert_canary",
    schedule=[CHAMPION],
    start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args={"owner": "colbert-pipeline", "retries": 0, "queue": "default"},
    tags=["colbert", "mlops", "canary"],
    doc_md=__doc__,
)
def colbert_canary() -> None:
    """Probe each new champion with fixed benchmark queries; fail loudly if it cannot answer."""

    @task(execution_timeout=timedelta(minutes=30))
    def probe_champion() -> dict[str, Any]:
        # The pipeline's promote task puts the registered model's name on the event (a run's Params may
        # have named another model than the workspace's params.yaml, which is restored after the run).
        events = get_current_context().get("triggering_asset_events") or {}
        names = [(event.extra or {}).get("model_name") for batch in events.values() for event in batch]
        model_name = next((name for name in reversed(names) if name), None)
        settings = dag_shared.settings()
        with fail_without_retry(canary.CanaryFailed, orchestration.OrchestrationError):
            return canary.run_canary(
                settings.workspace,
                orchestration.resolve_tracking_uri(settings),
                model_name=model_name,
                n_queries=int(lookup("COLBERT_PIPELINE_CANARY_QUERIES") or canary.DEFAULT_QUERIES),
            )

    probe_champion()


canary_dag = colbert_canary()
