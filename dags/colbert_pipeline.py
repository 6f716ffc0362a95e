"""The colbert-pipeline DAG: the DVC stages, one task each, then a visible promotion decision.

    validate_params -> start_mlflow_run -> prepare -> baseline -> train -> evaluate -> index -> register
        -> record_run -> decide_promotion -> promote | keep_champion

``record_run`` pushes the run's outputs to the DVC remote, commits its ``params.yaml`` and ``dvc.lock`` to
``refs/colbert-runs/<run_id>`` (the checked-out branch is untouched), tags the new model version with both,
then puts the workspace's ``params.yaml`` back as it was before the run's Params.

Each stage task runs ``dvc repro --single-item <stage>`` (or ``colbert-pipeline <stage>`` when
``COLBERT_PIPELINE_RUNNER=cli``) in a child process in the workspace, so GPU work never inherits a forked CUDA
context and DVC skips what did not change. The logic lives in ``pipeline.ops.orchestration``; this file only
wires it into Airflow.

Settings (Airflow Variable first, then environment):
    COLBERT_PIPELINE_WORKSPACE   the project checkout the stages run in (default: this repo)
    COLBERT_PIPELINE_RUNNER      dvc (default) | cli
    COLBERT_PIPELINE_HF_OFFLINE  1 (default) | 0: let stages reach the Hugging Face Hub
    COLBERT_PIPELINE_DVC_REMOTE  the DVC remote (by name) the outputs are pushed to; default: the workspace's
    COLBERT_PIPELINE_TASK_CLONE  stateless mode: the worker's clone a task starts from (default: workspace)
    MLFLOW_TRACKING_URI          default: the workspace's params.yaml, else sqlite:///<workspace>/mlruns.db
Parse-time settings (environment only, so parsing never touches the metadata database):
    COLBERT_PIPELINE_SCHEDULE    cron or preset (default @weekly; "none" for manual runs only)
    COLBERT_PIPELINE_RETRIES     retries per task (default 2, exponential backoff)
    COLBERT_PIPELINE_RETRY_DELAY_S  seconds before a task's first retry (default 60; each later one waits
                                 twice as long, and Airflow adds up to as much again at random)
    COLBERT_PIPELINE_GPU_STAGES  comma-separated stages on the gpu queue and pool (default: train)
    COLBERT_PIPELINE_STATELESS   1: each stage task runs `colbert-pipeline task STAGE --run <run id>` from the
                                 worker's own clone (COLBERT_PIPELINE_TASK_CLONE) over the
                                 git remote, DVC remote and MLflow; no DVC pool, several runs at once,
                                 register in the one-slot pool `colbert_register` (docs/stateless.md).
                                 Default 0.
    COLBERT_PIPELINE_MAX_ACTIVE_RUNS  runs at once in stateless mode (default 4; always 1 otherwise)
                                 Stateless mode also maps the index's encoding over index.shards
                                 (encode_shard, after train, before index) when a run sets it above 1.
    COLBERT_PIPELINE_NOTIFY_TO   comma-separated e-mail addresses told of each run's failure or success
                                 (SMTP provider's notifier; none: no e-mails)
    COLBERT_PIPELINE_NOTIFY_FROM sender (default: the SMTP connection's from_email)
    COLBERT_PIPELINE_SMTP_CONN_ID  the Airflow SMTP connection (default smtp_default)
    COLBERT_PIPELINE_DEADLINE    a run not finished this long after it was queued misses its deadline alert
                                 (e.g. 30h; default "none": off, as Airflow 3.3.2 cannot clear a run
                                 that holds one); see pipeline/ops/notify.py
"""

from __future__ import annotations

import logging
import os
from datetime import timedelta
from typing import Any

import pendulum
from airflow.sdk import Asset, Param, TriggerRule, chain, dag, get_current_context, task

from pipeline.ops import dag_shared, notify, orchestration, stateless_dag
from pipeline.ops.dag_shared import CHAMPION, fail_without_retry, lookup
from pipeline.ops.promotion import Decision
from pipeline.project.config import ConfigError
from pipeline.project.layout import STAGES
from pipeline.project.params_file import check_tracked_inputs, load_params, read_params_file

logger = logging.getLogger(__name__)

DAG_ID = "colbert_pipeline"
#: DVC allows one ``repro`` per workspace (its lock): every DVC task shares this one-slot pool.
DVC_POOL = "colbert_dvc_workspace"
GPU_POOL = "gpu"
#: Stateless mode: the register tasks of all runs take turns (two runs never promote at once).
REGISTER_POOL = "colbert_register"
GPU_QUEUE = "gpu"
DEFAULT_QUEUE = "default"

SCHEDULE = os.environ.get("COLBERT_PIPELINE_SCHEDULE", "@weekly")
RETRIES = int(os.environ.get("COLBERT_PIPELINE_RETRIES", "2"))
RETRY_DELAY = timedelta(seconds=orchestration.seconds_from_env("COLBERT_PIPELINE_RETRY_DELAY_S", 60.0))
GPU_STAGES = frozenset(
    name.strip() for name in os.environ.get("COLBERT_PIPELINE_GPU_STAGES", "train").split(",") if name.strip()
)
NOTIFY = notify.NotifySettings.from_environ(os.environ)
STATELESS = stateless_dag.stateless_from_env()
MAX_ACTIVE_RUNS = stateless_dag.max_active_runs_from_env(STATELESS)
#: The pool of the tasks that touch the shared workspace; none in stateless mode (Airflow's default pool).
WORKSPACE_POOL = None if STATELESS else DVC_POOL

#: Upper bounds per stage on the offline sample's scale up to a real GPU run; a hung stage is stopped.
STAGE_TIMEOUTS = {
    "prepare": timedelta(hours=2),
    "baseline": timedelta(hours=2),
    "train": timedelta(hours=24),
    "evaluate": timedelta(hours=2),
    "index": timedelta(hours=8),
    "register": timedelta(minutes=30),
}

# Outputs other DAGs can schedule on (``schedule=[CHAMPION]``). Logical URIs: the files live in the workspace
# at the paths params.yaml names, and each event's extra carries the paths and DVC hashes.
PREPARED_DATA = Asset(name="colbert_prepared_data", uri="x-colbert-pipeline://data/prepared")
MODEL = Asset(name="colbert_model", uri="x-colbert-pipeline://models/colbert")
INDEX = Asset(name="colbert_index", uri="x-colbert-pipeline://indexes")
STAGE_OUTLETS = {"prepare": [PREPARED_DATA], "train": [MODEL], "index": [INDEX]}

DEFAULT_ARGS: dict[str, Any] = {
    "owner": "colbert-pipeline",
    "retries": RETRIES,
    "retry_delay": RETRY_DELAY,
    "retry_exponential_backoff": 2.0,
    "max_retry_delay": timedelta(minutes=30),
    "execution_timeout": timedelta(minutes=30),
    "queue": DEFAULT_QUEUE,
}


def _restore_params_and_fail_parent(context: Any) -> None:
    """on_failure_callback of a stage task: undo this run's params overrides, mark its MLflow run FAILED."""
    ti = context["ti"]
    update = ti.xcom_pull(task_ids="validate_params")
    if update and not update.get("stateless"):
        orchestration.restore_params(update)
    parent = ti.xcom_pull(task_ids="start_mlflow_run")
    if parent:
        try:
            error = context.get("exception")
            orchestration.finish_parent_run(
                dag_shared.settings(),
                parent,
                "FAILED",
                {"failed_task": ti.task_id, "error": str(error or "")},
            )
        except Exception:  # a tracking server that is down must not hide the stage's own error
            logger.exception("could not mark MLflow run %s as failed", parent)


def _reapply_run_params(update: dict[str, Any] | None = None) -> None:
    """Before a stage runs: params.yaml holds this run's Params (``update``: validate_params' XCom), also
    when a failure had put them back and the task was then cleared (or retried) by hand."""
    if update is None:
        update = get_current_context()["ti"].xcom_pull(task_ids="validate_params")
    if update and not update.get("stateless"):
        with fail_without_retry(ConfigError):  # the file was edited since: running would ignore either side
            orchestration.reapply_params(update)


def _run_in_workspace(stage: str, parent_run_id: str) -> orchestration.StageResult:
    """Shared-workspace mode: `dvc repro --single-item STAGE` (or the stage's CLI) in the workspace."""
    settings = dag_shared.settings()
    _reapply_run_params()
    return orchestration.run_stage(
        stage,
        settings,
        parent_run_id=parent_run_id,
        tracking_uri=orchestration.resolve_tracking_uri(settings),
        emit=logging.getLogger(f"colbert_pipeline.{stage}").info,
    )


def _stage_pool(stage: str) -> str | None:
    """GPU stages: the gpu pool; the rest: the DVC pool, or in stateless mode none (register: its own)."""
    if stage in GPU_STAGES:
        return GPU_POOL
    if STATELESS and stage == "register":
        return REGISTER_POOL
    return WORKSPACE_POOL


def _run_stateless(stage: str, parent_run_id: str, shard: str | None = None) -> orchestration.StageResult:
    """Stateless mode: `colbert-pipeline task STAGE [--shard I/N] --run <run id> --set ...` from the worker's
    clone."""
    context = get_current_context()
    settings = dag_shared.settings()
    update = context["ti"].xcom_pull(task_ids="validate_params") or {}
    result = stateless_dag.run_stage(
        stage,
        context["run_id"],
        update.get("overrides") or {},
        stateless_dag.clone_of(settings, lookup),
        parent_run_id,
        orchestration.resolve_tracking_uri(settings),
        emit=logging.getLogger(f"colbert_pipeline.{stage}").info,
        extra_env=stateless_dag.task_environment(lookup),
        shard=shard,
    )
    return orchestration.StageResult(
        stage=stage,
        skipped=bool(result.get("skipped")),
        outputs=dict(result.get("outputs") or {}),
        mlflow_run_id=None,
        seconds=float(result.get("seconds") or 0.0),
    )


def _stage_task(stage: str):
    """A task that runs one stage; GPU stages go to the gpu queue and pool, the rest share the DVC pool."""
    on_gpu = stage in GPU_STAGES

    @task(
        task_id=stage,
        pool=_stage_pool(stage),
        queue=GPU_QUEUE if on_gpu else DEFAULT_QUEUE,
        execution_timeout=STAGE_TIMEOUTS.get(stage, timedelta(hours=2)),
        outlets=STAGE_OUTLETS.get(stage, []),
        on_failure_callback=_restore_params_and_fail_parent,
        # stateless: index also waits for its shard tasks, of which an unsharded run maps none (skipped)
        trigger_rule=TriggerRule.NONE_FAILED_MIN_ONE_SUCCESS
        if STATELESS and stage == "index"
        else TriggerRule.ALL_SUCCESS,
        doc_md=(
            f"Runs `colbert-pipeline task {stage} --run <run id>` from the worker's clone in a child process."
            if STATELESS
            else f"Runs the `{stage}` stage (`dvc repro --single-item {stage}`) in a child process."
        ),
    )
    def run(parent_run_id: str, upstream: dict[str, Any] | None = None) -> dict[str, Any]:
        # ``upstream`` is the previous stage's XCom: taking it orders the chain and records what it left.
        if upstream:
            logger.info("after %s: %s", upstream["stage"], upstream["outputs"] or "no tracked outputs")
        with fail_without_retry():
            run_one = _run_stateless if STATELESS else _run_in_workspace
            result = run_one(stage, parent_run_id)
        outlet_events = get_current_context()["outlet_events"]
        for asset in STAGE_OUTLETS.get(stage, []):
            outlet_events[asset].extra = {"skipped": result.skipped, "outputs": result.outputs}
        return result.as_xcom()

    return run


@task
def index_shards(params_update: dict[str, Any]) -> list[str]:
    """Stateless mode: the shards of this run's index encoding (``index.shards`` above 1), one shard task
    each; none for an unsharded run, whose index task encodes the corpus itself."""
    return stateless_dag.shard_labels(int(params_update.get("index_shards") or 1))


@task(
    task_id="encode_shard",
    pool=_stage_pool("index"),
    queue=GPU_QUEUE if "index" in GPU_STAGES else DEFAULT_QUEUE,
    execution_timeout=STAGE_TIMEOUTS["index"],
    on_failure_callback=_restore_params_and_fail_parent,
    doc_md="Runs `colbert-pipeline task index --shard I/N --run <run id>`: one shard of the corpus encoded.",
)
def encode_shard(parent_run_id: str, shard: str) -> dict[str, Any]:
    """Stateless mode, mapped over :func:`index_shards`: encode one shard and push it for the index task."""
    with fail_without_retry():
        result = _run_stateless("index", parent_run_id, shard=shard)
    return {**result.as_xcom(), "shard": shard}


#: The Params a run can be triggered with (``airflow dags trigger --conf``); each maps to a params.yaml key.
DAG_PARAMS = {
    "base_model": Param(None, type=["null", "string"], description="train.base_model: a folder or Hub id"),
    "data_source": Param(
        None,
        type=["null", "string"],
        enum=[None, "sample", "triplets", "kd", "beir"],
        description="prepare.source",
    ),
    "data_path": Param(
        None,
        type=["null", "string"],
        description="prepare.triplets.path or prepare.beir.folder (for the chosen source)",
    ),
    "epochs": Param(None, type=["null", "integer"], minimum=1, description="train.epochs"),
    "promotion_margin": Param(None, type=["null", "number"], minimum=0, description="register.margin"),
    "overrides": Param(
        {},
        type="object",
        description='any other params.yaml keys, dotted: {"train.max_steps": 100}',
    ),
}


@task(pool=WORKSPACE_POOL)
def validate_params() -> dict[str, Any]:
    """Validate this run's Params against params.yaml; write changed keys into it for DVC to see (in
    stateless mode only validate: each task writes them into its own checkout of the run's ref)."""
    context = get_current_context()
    settings = dag_shared.settings()
    with fail_without_retry(ConfigError):  # names the key; retrying cannot fix it
        current = read_params_file(settings.params_path)
        source = (current.get("prepare") or {}).get("source", "sample")
        overrides = orchestration.overrides_from_dag_params(context["params"], source)
        if settings.runner == "dvc" or STATELESS:  # an input DVC does not watch would never re-run anything
            params = load_params(settings.params_path, overrides, overrides_source=orchestration.RUN_OVERRIDE)
            check_tracked_inputs(params, settings.workspace)
        if STATELESS:
            return stateless_dag.validated(overrides, params.index.shards)
        update = orchestration.apply_run_overrides(settings.params_path, overrides, run_key=context["run_id"])
    return update.as_xcom()


@task
def start_mlflow_run(params_update: dict[str, Any]) -> str:
    """Create the MLflow parent run of this DAG run; every stage's run becomes its child."""
    context = get_current_context()
    return orchestration.start_parent_run(
        dag_shared.settings(),
        dag_id=context["dag"].dag_id,
        run_id=context["run_id"],
        tags={"params_sha256": params_update["sha256"], "overrides": ",".join(params_update["changed"])},
    )


@task(pool=WORKSPACE_POOL, on_failure_callback=_restore_params_and_fail_parent)
def record_run(params_update: dict[str, Any], register_result: dict[str, Any]) -> dict[str, Any]:
    """Push outputs, commit params.yaml + dvc.lock to this run's ref, tag the version; restore params.
    In stateless mode each task already pushed its outputs and the ref: this only says so."""
    context = get_current_context()
    if params_update.get("stateless"):
        ref = stateless_dag.run_ref(context["run_id"])
        logger.info("stateless run: every task recorded itself on %s", ref)
        return {"ref": ref, "recorded_by": "task", "params_restored": False}
    settings = dag_shared.settings()
    _reapply_run_params(params_update)  # the ref must hold the params this run ran with
    version = None if register_result.get("skipped") else orchestration.read_registry(settings).version
    record = orchestration.record_run(settings, context["run_id"], version)
    # Scheduled runs use the configured defaults: this run's Params live on in its ref, not here.
    record["params_restored"] = orchestration.restore_params(params_update)
    logger.info("run recorded: %s", record)
    return record


@task.branch
def decide_promotion(register_result: dict[str, Any]) -> str:
    """Read metrics/registry.json: promote when the register stage moved ``champion``."""
    if register_result.get("skipped"):
        # DVC skipped register: no new version exists, and registry.json is the last run's decision.
        logger.info("promotion decision: KEEP CHAMPION: register was unchanged, no new model version")
        return "keep_champion"
    with fail_without_retry(OSError, ValueError, ConfigError):
        decision = _decision()
    logger.info(
        "promotion decision: %s (version %s): %s",
        "PROMOTE" if decision.promoted else "KEEP CHAMPION",
        decision.version,
        decision.reason,
    )
    return "promote" if decision.promoted else "keep_champion"


def _decision() -> Decision:
    """The register stage's decision: from the workspace, or in stateless mode from the run's ref."""
    settings = dag_shared.settings()
    if STATELESS:
        clone = stateless_dag.clone_of(settings, lookup)
        return stateless_dag.read_run_decision(clone, get_current_context()["run_id"], lookup)
    return orchestration.read_registry(settings)


def _finish(parent_run_id: str, register_result: dict[str, Any], outcome: str) -> dict[str, Any]:
    settings = dag_shared.settings()
    if register_result.get("skipped"):
        version, reason = None, "register unchanged (DVC skipped it): no new model version"
        model_name = None
    else:
        decision = _decision()
        version, reason, model_name = decision.version, decision.reason, decision.model_name
    orchestration.finish_parent_run(
        settings,
        parent_run_id,
        "FINISHED",
        {"promotion": outcome, "registry_version": version or "", "promotion_reason": reason},
    )
    return {
        "outcome": outcome,
        "version": version,
        "model_name": model_name,
        "mlflow_run_id": parent_run_id,
    }


@task(outlets=[CHAMPION])
def promote(parent_run_id: str, register_result: dict[str, Any]) -> dict[str, Any]:
    """The new model version is the champion: emit the champion asset for downstream DAGs."""
    result = _finish(parent_run_id, register_result, "promoted")
    # The model's name travels with the event: the workspace's params.yaml is back to its defaults by now.
    get_current_context()["outlet_events"][CHAMPION].extra = {
        "version": result["version"],
        "model_name": result["model_name"],
    }
    logger.info("champion is now version %s", result["version"])
    return result


@task
def keep_champion(parent_run_id: str, register_result: dict[str, Any]) -> dict[str, Any]:
    """No new champion (the challenger did not beat it by the margin, or nothing changed)."""
    result = _finish(parent_run_id, register_result, "kept")
    logger.info("champion unchanged; this run's challenger: %s", result["version"] or "none")
    return result


@dag(
    dag_id=DAG_ID,
    schedule=None if SCHEDULE.lower() == "none" else SCHEDULE,
    start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=MAX_ACTIVE_RUNS,
    default_args=DEFAULT_ARGS,
    tags=["colbert", "mlops", "dvc", "mlflow"],
    doc_md=__doc__,
    params=DAG_PARAMS,
    # Airflow's own alerting: an e-mail per failed or succeeded run, and a deadline on the whole run (train
    # alone may take a day, so a per-task timeout says too little too late).
    on_failure_callback=notify.run_notifiers(NOTIFY, "failed"),
    on_success_callback=notify.run_notifiers(NOTIFY, "succeeded"),
    deadline=notify.deadline_alert(NOTIFY),
)
def colbert_pipeline() -> None:
    """Fine-tune, evaluate, index and register a ColBERT model; promote it when it beats the champion."""
    params_update = validate_params()
    parent_run_id = start_mlflow_run(params_update)
    previous = None
    stage_tasks = []
    for stage in STAGES:
        current = _stage_task(stage)(parent_run_id, previous)
        stage_tasks.append(current)
        previous = current
    chain(*stage_tasks)
    if STATELESS:  # the index's encoding fans out over shards (Airflow's dynamic task mapping)
        shards = encode_shard.partial(parent_run_id=parent_run_id).expand(shard=index_shards(params_update))
        stage_tasks[STAGES.index("train")] >> shards >> stage_tasks[STAGES.index("index")]
    register_result = stage_tasks[-1]
    decision = decide_promotion(register_result)
    record_run(params_update, register_result) >> decision
    decision >> [promote(parent_run_id, register_result), keep_champion(parent_run_id, register_result)]


pipeline_dag = colbert_pipeline()
