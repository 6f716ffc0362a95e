"""The corpus DAG: a changed corpus updates the champion's index, and the champion follows, with no training.

    check_champion_model -> start_mlflow_run -> index -> register -> record_run
        -> decide_promotion -> promote | keep_champion

It runs on each ``colbert_corpus`` asset event (whoever delivers a new corpus into ``index.data`` emits one,
e.g. ``airflow assets materialize`` or a producer DAG with ``outlets=[CORPUS]``) and on a schedule
(``COLBERT_PIPELINE_CORPUS_SCHEDULE``, default ``@daily``; ``none``: the asset alone). ``index`` runs
``dvc repro --single-item index``: DVC skips it when the corpus did not change, and otherwise the stage
updates the index in place (docs/indexes.md, "Updating an index in place"). ``register`` then registers the
champion's model with the updated index, a corpus update promoted without retraining or re-evaluating
(docs/versions.md). Training and evaluation are not tasks of this DAG.

``check_champion_model`` refuses to start when the workspace's model is not the champion's
(:mod:`pipeline.ops.corpus_update`). Stage tasks share the pipeline DAG's one-slot DVC pool: the two DAGs
never run DVC in the workspace at once. Settings as for the pipeline DAG (``COLBERT_PIPELINE_WORKSPACE``,
``COLBERT_PIPELINE_RUNNER``, ``MLFLOW_TRACKING_URI``, ...; Airflow Variable first, then environment; at
parse time ``COLBERT_PIPELINE_RETRIES`` and ``COLBERT_PIPELINE_RETRY_DELAY_S``).
"""

from __future__ import annotations

import logging
import os
from datetime import timedelta
from typing import Any

import pendulum
from airflow.sdk import AssetOrTimeSchedule, CronTriggerTimetable, dag, get_current_context, task

from pipeline.ops import corpus_update, dag_shared, orchestration
from pipeline.ops.dag_shared import CHAMPION, CORPUS, fail_without_retry

logger = logging.getLogger(__name__)

DAG_ID = "colbert_corpus"
#: The pipeline DAG's pool: one DVC command at a time in the shared workspace.
DVC_POOL = "colbert_dvc_workspace"
SCHEDULE = os.environ.get("COLBERT_PIPELINE_CORPUS_SCHEDULE", "@daily")
RETRIES = int(os.environ.get("COLBERT_PIPELINE_RETRIES", "2"))
RETRY_DELAY = timedelta(seconds=orchestration.seconds_from_env("COLBERT_PIPELINE_RETRY_DELAY_S", 60.0))
STAGE_TIMEOUTS = {"index": timedelta(hours=8), "register": timedelta(minutes=30)}


def _schedule() -> Any:
    if SCHEDULE.strip().lower() == "none":
        return [CORPUS]
    return AssetOrTimeSchedule(timetable=CronTriggerTimetable(SCHEDULE, timezone="UTC"), assets=[CORPUS])


@task(pool=DVC_POOL)
def check_champion_model() -> dict[str, Any]:
    """The workspace's model must be the champion's: a corpus run updates the champion's index only."""
    settings = dag_shared.settings()
    with fail_without_retry(orchestration.OrchestrationError):
        return corpus_update.check_champion_model(settings, orchestration.resolve_tracking_uri(settings))


@task
def start_mlflow_run(champion: dict[str, Any]) -> str:
    context = get_current_context()
    return orchestration.start_parent_run(
        dag_shared.settings(),
        dag_id=context["dag"].dag_id,
        run_id=context["run_id"],
        tags={"corpus_update_of": champion["champion"], "model_md5": champion["model_md5"]},
    )


def _stage_task(stage: str):
    @task(task_id=stage, pool=DVC_POOL, execution_timeout=STAGE_TIMEOUTS[stage])
    def run(parent_run_id: str, upstream: dict[str, Any] | None = None) -> dict[str, Any]:
        settings = dag_shared.settings()
        with fail_without_retry():
            result = orchestration.run_stage(
                stage,
                settings,
                parent_run_id=parent_run_id,
                tracking_uri=orchestration.resolve_tracking_uri(settings),
                emit=logging.getLogger(f"colbert_corpus.{stage}").info,
            )
        return result.as_xcom()

    return run


@task(pool=DVC_POOL)
def record_run(register_result: dict[str, Any]) -> dict[str, Any]:
    """Push the outputs, commit params.yaml + dvc.lock to this run's ref, tag the new version with it."""
    settings = dag_shared.settings()
    version = None if register_result.get("skipped") else orchestration.read_registry(settings).version
    return orchestration.record_run(settings, get_current_context()["run_id"], version)


@task.branch
def decide_promotion(register_result: dict[str, Any]) -> str:
    if register_result.get("skipped"):
        logger.info("promotion decision: KEEP CHAMPION: the corpus did not change, no new version")
        return "keep_champion"
    decision = orchestration.read_registry(dag_shared.settings())
    logger.info("promotion decision: %s: %s", "PROMOTE" if decision.promoted else "KEEP", decision.reason)
    return "promote" if decision.promoted else "keep_champion"


def _finish(parent_run_id: str, register_result: dict[str, Any], outcome: str) -> dict[str, Any]:
    settings = dag_shared.settings()
    decision = None if register_result.get("skipped") else orchestration.read_registry(settings)
    reason = decision.reason if decision else "the corpus did not change"
    version = decision.version if decision else None
    orchestration.finish_parent_run(
        settings, parent_run_id, "FINISHED", {"promotion": outcome, "promotion_reason": reason}
    )
    return {
        "outcome": outcome,
        "version": version,
        "model_name": decision.model_name if decision else None,
        "comparison": decision.comparison if decision else None,
    }


@task(outlets=[CHAMPION])
def promote(parent_run_id: str, register_result: dict[str, Any]) -> dict[str, Any]:
    """The updated index's version is the champion: emit the champion asset (the canary DAG runs on it)."""
    result = _finish(parent_run_id, register_result, "promoted")
    get_current_context()["outlet_events"][CHAMPION].extra = {
        "version": result["version"],
        "model_name": result["model_name"],
    }
    return result


@task
def keep_champion(parent_run_id: str, register_result: dict[str, Any]) -> dict[str, Any]:
    return _finish(parent_run_id, register_result, "kept")


@dag(
    dag_id=DAG_ID,
    schedule=_schedule(),
    start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args={
        "owner": "colbert-pipeline",
        "retries": RETRIES,
        "retry_delay": RETRY_DELAY,
        "queue": "default",
    },
    tags=["colbert", "mlops", "corpus"],
    doc_md=__doc__,
)
def colbert_corpus() -> None:
    """Update the champion's index from a changed corpus and promote it; never train."""
    champion = check_champion_model()
    parent_run_id = start_mlflow_run(champion)
    index = _stage_task("index")(parent_run_id)
    register_result = _stage_task("register")(parent_run_id, index)
    decision = decide_promotion(register_result)
    record_run(register_result) >> decision
    decision >> [promote(parent_run_id, register_result), keep_champion(parent_run_id, register_result)]


corpus_dag = colbert_corpus()
