"""The batch-inference DAG: a file of queries scored with the champion, on each promotion or on demand.

    score_queries   answer every query of the file with models:/<name>@champion (as `colbert-pipeline
                    search` does), and log a TREC run (run.trec) and the hits with their texts
                    (hits.jsonl) as artifacts of one MLflow run (experiment colbert-batch-inference)

Runs on each ``colbert_champion`` event (the pipeline DAG's promote task), or when triggered by hand with
the params ``queries_file`` and ``k``. The logic lives in ``pipeline.ops.batch_inference``.

Settings (Airflow Variable first, then environment):
    COLBERT_PIPELINE_BATCH_QUERIES  the queries file when a run names none (relative: to the workspace);
                                    unset, an asset-triggered run is skipped
    COLBERT_PIPELINE_WORKSPACE      the project checkout (its params.yaml names the model and tracking URI)
    MLFLOW_TRACKING_URI             the registry (default: the workspace's params.yaml)
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pendulum
from airflow.sdk import Param, dag, get_current_context, task
from airflow.sdk.exceptions import AirflowSkipException

from pipeline.ops import batch_inference
from pipeline.ops.dag_shared import CHAMPION, fail_without_retry, lookup
from pipeline.ops.follower import AliasMissing
from pipeline.project.errors import InputError


@dag(
    dag_id="colbert_batch_inference",
    schedule=[CHAMPION],
    start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    params={
        "queries_file": Param(
            None,
            type=["null", "string"],
            description="queries file (default: COLBERT_PIPELINE_BATCH_QUERIES)",
        ),
        "k": Param(batch_inference.DEFAULT_K, type="integer", minimum=1, maximum=1000, description="hits"),
    },
    default_args={
        "owner": "colbert-pipeline",
        "retries": 2,
        "retry_delay": timedelta(minutes=1),
        "retry_exponential_backoff": 2.0,
        "max_retry_delay": timedelta(minutes=10),
        "queue": "default",
    },
    tags=["colbert", "mlops", "inference"],
    doc_md=__doc__,
)
def colbert_batch_inference() -> None:
    """Score the configured queries file with each new champion."""

    @task(execution_timeout=timedelta(hours=2))
    def score_queries() -> dict[str, Any]:
        context = get_current_context()
        # As in the canary DAG: the promote task puts the registered model's name on the event.
        events = context.get("triggering_asset_events") or {}
        names = [(event.extra or {}).get("model_name") for batch in events.values() for event in batch]
        params = context["params"]
        with fail_without_retry(InputError, AliasMissing):  # OrchestrationError is an InputError
            result = batch_inference.run_configured(
                lookup,
                queries_file=params.get("queries_file"),
                model_name=next((name for name in reversed(names) if name), None),
                k=int(params["k"]),
            )
        if result is None:
            raise AirflowSkipException(
                f"no queries file: set the queries_file param or {batch_inference.QUERIES_ENV}"
            )
        return result

    score_queries()


batch_inference_dag = colbert_batch_inference()
