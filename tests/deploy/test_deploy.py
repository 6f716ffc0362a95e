"""The pipeline as its users run it: Airflow 3 on Celery, Postgres-backed MLflow, the champion over HTTP.

``deploy_platform`` starts PostgreSQL, Redis, ``mlflow server``, Airflow's api-server, scheduler,
dag-processor and triggerer, and one Celery worker per queue (``default``, ``gpu``, distinct host names), each
through ``python -m pipeline.ops.services`` as ``docker/compose.yaml`` does. The tests drive it only through
Airflow's REST API v2 (a token from ``/auth/token``), MLflow's client over HTTP and ``POST /invocations``, in
order, on one platform:

1. a run with a few training steps: every task succeeds, ``train`` on the gpu worker, the rest on default, the
   DVC pool held; the champion alias, its lineage tags, the ``colbert_champion`` asset event, the input
   example;
2. the canary DAG runs on that asset event and records its numbers to MLflow;
3. ``colbert-pipeline serve`` answers the champion's ids, scores and texts over HTTP;
4. a bad Param fails in ``validate_params``, once, leaving ``params.yaml`` as it was;
5. Redis (the Celery broker) SIGKILLed while the run dispatches its tasks and restarted 20 s later, empty: no
   service dies, the run does not hang (a task dispatched into the outage fails at once), and a new try of
   what failed completes it, keeping the champion; or no task was dispatched into the outage and the run
   goes on through the restarted broker. The test says which of the two it saw, and checks that the crash
   fell inside the run and that the run completed after it;
6. the gpu worker SIGKILLed during ``train``: the task fails (retries are 0 here), no stage survives, and the
   next run completes, keeping the champion where it was.

7. headless Chromium shows MLflow's page of the champion's model (its metrics and datasets) and Airflow's grid
   of the first run, logged in with a token from ``/auth/token``.

Set ``COLBERT_DEPLOY_REPORT=<file>`` to keep a JSON record of the first run's tasks (docs/history.md's table),
``COLBERT_DEPLOY_SCREENSHOTS=<folder>`` to keep the two screenshots (``make docs-screenshots``: docs/assets/).
"""

from __future__ import annotations

import ast
import contextlib
import datetime as dt
import itertools
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pipeline.ops import services
from pipeline.project.layout import STAGES
from tests.deploy import ui_pages
from tests.deploy.browser import BINARIES as BROWSERS
from tests.deploy.browser import check_png, chromium, running_browser, small_png
from tests.deploy.deploy_platform import (
    REPO_ROOT,
    AirflowApi,
    Platform,
    Process,
    http_json,
    missing,
    require_binaries,
    running_platform,
    tail,
    wait_until,
)
from tests.workspace import DAG_TINY

pytestmark = pytest.mark.deploy

DAG_ID = "colbert_pipeline"
CANARY_DAG_ID = "colbert_canary"
MODEL_NAME = "colbert-deploy"
TINY = {**DAG_TINY, "register.model_name": MODEL_NAME}
#: The docs' screenshots (docs/assets/), kept where COLBERT_DEPLOY_SCREENSHOTS says (make docs-screenshots).
MODEL_PAGE_PNG = "mlflow-model-page.png"
GRID_PNG = "airflow-grid.png"
RUN_TIMEOUT = 1500.0  # bounded, with room for a loaded 2-core machine
ENV = {
    "COLBERT_PIPELINE_SCHEDULE": "none",  # runs come from the API only (a weekly run would start at unpause)
    "COLBERT_PIPELINE_RETRIES": "0",  # "as configured": a killed task fails at once, no retry delay to wait
    "COLBERT_PIPELINE_CANARY_QUERIES": "4",
    "AIRFLOW__API__WORKERS": "1",
    "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
    # A task whose worker vanished is failed after 30 s without a heartbeat (default 300 s).
    "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "30",
    "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "5",
    # A task queued into a broker that then died is re-queued after 180 s in the queue (default 600 s: the
    # broker-crash test spent 720 s of CI's 1,141 s waiting for it).
    "AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT": "180",
    "AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT_CHECK_INTERVAL": "15",
}


@pytest.fixture(scope="module")
def deployed() -> Iterator[dict[str, Any]]:
    require_binaries()
    with running_platform(extra_env=ENV) as platform:
        api = AirflowApi(platform.api_url, services.ADMIN_USER, platform.admin_password)
        api.wait_parsed([DAG_ID, CANARY_DAG_ID], platform)
        for dag_id in (DAG_ID, CANARY_DAG_ID):
            api.request("PATCH", f"/dags/{dag_id}", {"is_paused": False})
        yield {"platform": platform, "api": api, "runs": {}}


def _mlflow(platform: Platform) -> Any:
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=platform.mlflow_url)


def _explain(deployed: dict[str, Any], run_id: str) -> dict[str, Any]:
    """What a run did, for an assertion's message: task states and tries, which stages DVC skipped, the
    registry's versions, and the end of the register task's log."""
    api = deployed["api"]
    tasks: dict[str, Any] = {}
    for task, ti in api.task_instances(DAG_ID, run_id).items():
        tasks[task] = [ti["state"], ti["try_number"]]
        if ti["state"] == "success" and task in STAGES:
            path = f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/{task}/xcomEntries/return_value"
            tasks[task].append("skipped" if api.get(path)["value"].get("skipped") else "ran")
    register_log = _task_logs(deployed, run_id, "register", max(1, tasks.get("register", [0, 1])[1]))
    return {"tasks": tasks, "registry": _registry(deployed["platform"]), "register_log": register_log[-3000:]}


def _registry(platform: Platform) -> list[dict[str, str]]:
    """Every version of the model with what decided its promotion (an assertion's message)."""
    keys = ("promotion.decision", "promotion.reason", "lineage.model.md5", "benchmark.md5", "metric.value")
    versions = _mlflow(platform).search_model_versions(f"name = '{MODEL_NAME}'")
    return [
        {"version": str(v.version), "aliases": ",".join(v.aliases), **{k: v.tags.get(k, "") for k in keys}}
        for v in sorted(versions, key=lambda v: int(v.version))
    ]


def _seconds(ti: dict[str, Any]) -> float:
    start = dt.datetime.fromisoformat(ti["start_date"])
    end = dt.datetime.fromisoformat(ti["end_date"])
    return (end - start).total_seconds()


def _run(deployed: dict[str, Any], conf: dict[str, Any], key: str) -> tuple[str, str]:
    api, platform = deployed["api"], deployed["platform"]
    run_id = api.trigger(DAG_ID, conf)
    state = api.wait_run(DAG_ID, run_id, RUN_TIMEOUT, platform)
    deployed["runs"][key] = run_id
    return run_id, state


def _task_logs(deployed: dict[str, Any], run_id: str, task_id: str, try_number: int = 1) -> str:
    body = deployed["api"].get(f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/{task_id}/logs/{try_number}")
    content = body.get("content") if isinstance(body, dict) else body
    return json.dumps(content) if not isinstance(content, str) else content


def test_the_pools_the_dag_uses_are_the_ones_init_creates(deployed: dict[str, Any]) -> None:
    tree = ast.parse((REPO_ROOT / "dags" / "colbert_pipeline.py").read_text())
    constants = {
        target.id: node.value.value
        for node in tree.body
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant)
        for target in node.targets
        if isinstance(target, ast.Name)
    }
    assert (constants["DVC_POOL"], constants["GPU_POOL"]) == (services.DVC_POOL, services.GPU_POOL)
    assert {constants["DEFAULT_QUEUE"], constants["GPU_QUEUE"]} == set(services.QUEUES)
    pools = {pool["name"]: pool for pool in deployed["api"].get("/pools")["pools"]}
    assert pools[services.DVC_POOL]["slots"] == 1
    assert pools[services.GPU_POOL]["slots"] == 1


def test_a_run_trains_on_the_gpu_worker_and_promotes(deployed: dict[str, Any]) -> None:
    api, platform = deployed["api"], deployed["platform"]
    run_id, state = _run(deployed, {"overrides": TINY}, "first")
    tis = api.task_instances(DAG_ID, run_id)
    states = {task: ti["state"] for task, ti in tis.items()}
    assert state == "success", states
    expected = {task: "success" for task in tis} | {"keep_champion": "skipped"}
    assert states == expected

    # Queues and workers: train on the gpu queue's worker, every other task on the default one.
    for task, ti in tis.items():
        if ti["state"] != "success":
            continue
        queue = "gpu" if task == "train" else "default"
        assert (ti["queue"], ti["hostname"]) == (queue, f"worker-{queue}"), task
        assert ti["try_number"] == 1, task
    assert tis["train"]["pool"] == services.GPU_POOL
    # The DVC pool held: its tasks ran one at a time.
    spans = sorted(
        (ti["start_date"], ti["end_date"], task)
        for task, ti in tis.items()
        if ti["pool"] == services.DVC_POOL and ti["state"] == "success"
    )
    assert len(spans) >= 6
    for (_, end, first), (start, _, second) in itertools.pairwise(spans):
        assert end <= start, f"{first} and {second} held the one-slot DVC pool at once"

    record = [
        {
            "task": task,
            "queue": ti["queue"],
            "worker": ti["hostname"],
            "pool": ti["pool"],
            "seconds": round(_seconds(ti), 1),
        }
        for task, ti in sorted(tis.items(), key=lambda item: item[1]["start_date"] or "9")
        if ti["state"] == "success"
    ]
    print(json.dumps(record, indent=1))
    if os.environ.get("COLBERT_DEPLOY_REPORT"):
        Path(os.environ["COLBERT_DEPLOY_REPORT"]).write_text(json.dumps(record, indent=1) + "\n")

    # The champion: the version this run registered, with its lineage tags, linked to the train output.
    client = _mlflow(platform)
    champion = client.get_model_version_by_alias(MODEL_NAME, "champion")
    register = api.get(f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/register/xcomEntries/return_value")
    promote = api.get(f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/promote/xcomEntries/return_value")
    assert str(promote["value"]["version"]) == str(champion.version)
    train = api.get(f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/train/xcomEntries/return_value")
    tags = champion.tags
    assert tags["promotion.decision"] == "promoted"
    assert tags["lineage.model.md5"] == train["value"]["outputs"]["models/colbert"]
    assert {"lineage.data_eval.md5", "lineage.index.md5", "git_commit", "params_hash"} <= set(tags)
    assert register["value"]["skipped"] is False
    # record_run pushed the outputs and committed the run to its own ref (issue 18's versioning, deployed).
    assert tags["colbert.dvc_pushed"] == "true"
    assert tags["colbert.run_ref"] == "refs/colbert-runs/" + run_id.replace(":", "-")
    deployed["champion"] = str(champion.version)

    # The asset event the canary DAG is scheduled on.
    assets = api.get("/assets?name_pattern=colbert_champion")["assets"]
    assert [asset["name"] for asset in assets] == ["colbert_champion"]
    events = api.get(f"/assets/events?asset_id={assets[0]['id']}")["asset_events"]
    assert [event["source_run_id"] for event in events] == [run_id]
    assert str(events[0]["extra"]["version"]) == str(champion.version)


def test_the_logged_champion_carries_a_valid_serving_input_example(deployed: dict[str, Any]) -> None:
    import mlflow
    from mlflow.models import validate_serving_input

    platform = deployed["platform"]
    # The registry answers `models:/` URIs at the default URI (tracking_uri= covers runs only); conftest puts
    # the session's store back after the test.
    mlflow.set_tracking_uri(platform.mlflow_url)
    uri = f"models:/{MODEL_NAME}@champion"
    local = Path(mlflow.artifacts.download_artifacts(uri, dst_path=str(platform.root / "champion-model")))
    example = json.loads((local / "serving_input_example.json").read_text())
    assert example["dataframe_split"]["columns"] == ["query"]
    k = example["params"]["k"]
    answer = validate_serving_input(str(local), example)  # (it pops "params" from the dict it is given)
    assert len(answer["ids"][0]) == k
    assert len(answer["texts"][0]) == len(answer["ids"][0]) and all(answer["texts"][0])


def test_the_canary_dag_probes_the_new_champion(deployed: dict[str, Any]) -> None:
    api, platform = deployed["api"], deployed["platform"]
    assert "champion" in deployed, "needs the first run's champion"

    def canary_run() -> dict[str, Any] | None:
        platform.check_alive()
        runs = api.get(f"/dags/{CANARY_DAG_ID}/dagRuns")["dag_runs"]
        done = [run for run in runs if run["state"] in ("success", "failed")]
        return done[0] if done else None

    run = wait_until("the canary DAG run on the champion asset", canary_run, 600, interval=3.0)
    assert run["run_type"] == "asset_triggered"
    assert run["state"] == "success", _task_logs_canary(api, run["dag_run_id"])
    client = _mlflow(platform)
    experiment = client.get_experiment_by_name("colbert-canary")
    (result,) = client.search_runs([experiment.experiment_id])
    assert result.data.tags["champion_version"] == deployed["champion"]
    assert result.data.tags["canary.passed"] == "true"
    metrics = result.data.metrics
    assert metrics["new_answered"] == metrics["new_queries"] == 4
    assert 0.0 <= metrics["new_recall_at_10"] <= 1.0
    assert 0.0 < metrics["new_p50_ms"] <= metrics["new_p95_ms"]
    assert result.data.tags["previous_version"] == "none"  # the first champion has nothing to compare to


def _task_logs_canary(api: AirflowApi, run_id: str) -> str:
    with contextlib.suppress(Exception):
        body = api.get(f"/dags/{CANARY_DAG_ID}/dagRuns/{run_id}/taskInstances/probe_champion/logs/1")
        return json.dumps(body)[-4000:]
    return "(no log)"


def test_the_champion_answers_over_http(deployed: dict[str, Any]) -> None:
    platform = deployed["platform"]
    serve = platform._service("serve", ["serve"], COLBERT_PIPELINE_MODEL_NAME=MODEL_NAME)
    try:
        serve.wait_ready(lambda: _pings(f"{platform.serve_url}/ping"), 300)
        query = {"dataframe_split": {"columns": ["query"], "data": [["a question about entity 3"]]}}
        status, body = http_json("POST", f"{platform.serve_url}/invocations", {**query, "params": {"k": 3}})
        assert status == 200, body
        (row,) = body["predictions"]
        assert len(row["ids"]) == len(row["scores"]) == len(row["texts"]) == 3
        assert row["scores"] == sorted(row["scores"], reverse=True)
        assert all(isinstance(text, str) and text for text in row["texts"])
        status, body = http_json("POST", f"{platform.serve_url}/invocations", {"dataframe_split": {}})
        assert status == 400, body
    finally:
        serve.stop()


def _pings(url: str) -> bool:
    try:
        return http_json("GET", url, timeout=5)[0] == 200
    except OSError:  # not listening yet
        return False


def test_a_bad_param_fails_in_validate_params_once(deployed: dict[str, Any]) -> None:
    api, platform = deployed["api"], deployed["platform"]
    params = platform.workspace / "params.yaml"
    before = params.read_bytes()
    run_id, state = _run(deployed, {"overrides": {"train.no_such_key": 3}}, "bad")
    assert state == "failed"
    tis = api.task_instances(DAG_ID, run_id)
    assert tis["validate_params"]["state"] == "failed"
    assert tis["validate_params"]["try_number"] == 1  # AirflowFailException: no retry
    assert "train.no_such_key" in _task_logs(deployed, run_id, "validate_params")
    assert {ti["state"] for task, ti in tis.items() if task != "validate_params"} <= {"upstream_failed"}
    assert params.read_bytes() == before


def _when(timestamp: str | None) -> dt.datetime | None:
    """An Airflow API timestamp (ISO 8601, UTC) as an aware datetime."""
    return None if not timestamp else dt.datetime.fromisoformat(timestamp.replace("Z", "+00:00"))


#: The two ways the broker crash can go, both a pass, and the test says which one it saw.
FAILED_AND_RETRIED = "a task dispatched into the outage failed at once; its new try completed the run"
RODE_IT_OUT = "no task was dispatched into the outage; the run went on through the restarted broker"


def test_a_broker_crash_mid_run_fails_fast_and_a_retry_completes_the_run(deployed: dict[str, Any]) -> None:
    api, platform = deployed["api"], deployed["platform"]
    assert "champion" in deployed, "needs the first run's champion"
    run_id = api.trigger(DAG_ID, {"overrides": TINY})
    deployed["runs"]["broker-crash"] = run_id
    run_path = f"/dags/{DAG_ID}/dagRuns/{run_id}"
    validate = f"{run_path}/taskInstances/validate_params"
    wait_until(
        "validate_params done", lambda: api.get(validate)["state"] == "success", RUN_TIMEOUT, interval=1.0
    )
    # Down while the scheduler dispatches the next tasks and the workers hold their broker connections.
    old_redis = platform.services["redis"].process.pid
    crashed_at = dt.datetime.now(dt.UTC)
    run_state = api.get(run_path)["state"]
    left = [task for task, ti in api.task_instances(DAG_ID, run_id).items() if ti["state"] != "success"]
    platform.crash_broker(down_for=20.0)
    restarted_at = dt.datetime.now(dt.UTC)
    # The crash happened, mid-run: the run had tasks left when Redis died, and another Redis runs now.
    assert run_state == "running" and left, (run_state, left)
    assert platform.services["redis"].process.pid != old_redis
    # Bounded, and every service (scheduler, both workers) must survive the outage: wait_run checks them.
    state = api.wait_run(DAG_ID, run_id, RUN_TIMEOUT, platform)
    tis = api.task_instances(DAG_ID, run_id)
    failed = sorted(task for task, ti in tis.items() if ti["state"] == "failed")
    path = FAILED_AND_RETRIED if state == "failed" else RODE_IT_OUT
    print(
        f"\nbroker crash at {crashed_at:%H:%M:%S}, back at {restarted_at:%H:%M:%S}: {path} (failed: {failed})"
    )
    deployed["broker_crash_path"] = path
    if path == FAILED_AND_RETRIED:
        # A task dispatched into the outage fails at its first try (retries are 0 in this tier; where they are
        # configured, Airflow's retry is this same new try), and it failed because of the crash: after it.
        assert failed and all(tis[task]["try_number"] == 1 for task in failed), tis
        assert all((_when(tis[task]["end_date"]) or restarted_at) >= crashed_at for task in failed), tis
        # The run's failed and upstream_failed tasks cleared, as the UI's "clear failed tasks" of a run does.
        # Both this and clearTaskInstances answered HTTP 500 while the DAG had a deadline alert on by default:
        # Airflow 3.3.2's clear recomputes queued-time deadlines and fails on their stored interval
        # (apache/airflow#70368); the deadline is off by default now (pipeline/ops/notify.py).
        api.request("POST", f"{run_path}/clear", {"dry_run": False, "only_failed": True})
        state = api.wait_run(DAG_ID, run_id, RUN_TIMEOUT, platform)
        tis = api.task_instances(DAG_ID, run_id)
        assert all(tis[task]["try_number"] == 2 for task in failed), {t: tis[t]["try_number"] for t in failed}
    else:
        assert not failed, tis
    assert state == "success", {task: (ti["state"], ti["try_number"]) for task, ti in tis.items()}
    # The run completed after the crash, through the restarted broker: tasks started after Redis came back,
    # and the run ended after that.
    started_after = [
        task for task, ti in tis.items() if (_when(ti["start_date"]) or crashed_at) > restarted_at
    ]
    assert started_after, {task: ti["start_date"] for task, ti in tis.items()}
    assert _when(api.get(run_path)["end_date"]) > restarted_at
    # The same inputs as the first run: nothing new to register, the champion stays.
    kept = (tis["keep_champion"]["state"], tis["promote"]["state"]) == ("success", "skipped")
    assert kept, _explain(deployed, run_id)
    champion = _mlflow(platform).get_model_version_by_alias(MODEL_NAME, "champion")
    assert str(champion.version) == deployed["champion"]
    deployed["broker_crash_failed"] = failed


def test_a_worker_killed_during_train_fails_the_task_and_the_next_run_completes(
    deployed: dict[str, Any],
) -> None:
    api, platform = deployed["api"], deployed["platform"]
    assert "champion" in deployed, "needs the first run's champion"
    # Many more steps: train is still running when its worker dies.
    run_id = api.trigger(DAG_ID, {"overrides": {**TINY, "train.max_steps": 2000}})
    worker: Process = platform.services["worker-gpu"]

    def training() -> bool:
        platform.check_alive()
        ti = api.get(f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/train")
        # The stage itself, not the ``dvc status --json train`` the task runs first (a kill then is the
        # orphaned-before-start case, tests/ops/test_runner.py).
        stage = [p for p in platform.stage_processes() if "colbert-pipeline train" in " ".join(p.cmdline())]
        return ti["state"] == "running" and bool(stage) and time.time() - stage[0].create_time() > 5

    wait_until("train running on the gpu worker", training, RUN_TIMEOUT, interval=1.0)
    members = {proc.pid for proc in worker.group_members()}
    stages = {proc.pid: " ".join(proc.cmdline()) for proc in platform.stage_processes()}
    worker.kill_group()

    state = api.wait_run(DAG_ID, run_id, 300, None)
    ti = api.get(f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/train")
    assert (state, ti["state"], ti["try_number"]) == ("failed", "failed", 1)

    # No stage process outlives its worker (none left holding DVC's lock).
    time.sleep(5)
    survivors = {proc.pid: " ".join(proc.cmdline()) for proc in platform.stage_processes()}
    for proc in platform.stage_processes():  # whatever the verdict, the next run needs the workspace
        with contextlib.suppress(Exception):
            proc.kill()
    platform.start_worker("gpu")

    run_id, state = _run(deployed, {"overrides": TINY}, "after-kill")
    tis = api.task_instances(DAG_ID, run_id)
    assert state == "success", {task: ti["state"] for task, ti in tis.items()}
    # Nothing new to register: the champion stays where the first run put it.
    kept = (tis["keep_champion"]["state"], tis["promote"]["state"]) == ("success", "skipped")
    assert kept, _explain(deployed, run_id)
    champion = _mlflow(platform).get_model_version_by_alias(MODEL_NAME, "champion")
    assert str(champion.version) == deployed["champion"]
    assert not survivors, (
        f"stage processes outlived the SIGKILLed worker (worker group {sorted(members)}, stages before the "
        f"kill {stages}): {survivors}"
    )


def test_the_uis_show_the_champion_and_the_runs(deployed: dict[str, Any], tmp_path: Path) -> None:
    """MLflow's model page and Airflow's grid in headless Chromium; PNGs to ``COLBERT_DEPLOY_SCREENSHOTS``."""
    if chromium() is None:
        missing(f"the UI screenshots need Chromium ({', '.join(BROWSERS)}) on PATH (`make services`)")
    api, platform = deployed["api"], deployed["platform"]
    assert "champion" in deployed, "needs the first run's champion"
    run_id = deployed["runs"]["first"]
    tasks = sorted(task["task_id"] for task in api.get(f"/dags/{DAG_ID}/tasks")["tasks"])
    with running_browser(tmp_path) as browser:
        shots = {
            MODEL_PAGE_PNG: ui_pages.mlflow_model_page(browser, platform.mlflow_url, MODEL_NAME),
            GRID_PNG: ui_pages.airflow_grid(browser, platform.api_url, api.token, DAG_ID, run_id, tasks),
        }
    folder = os.environ.get("COLBERT_DEPLOY_SCREENSHOTS")
    for name, png in shots.items():
        check_png(png)
        if folder:
            _write_png(Path(folder) / name, small_png(png))


def _write_png(path: Path, png: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_bytes(png)
    partial.replace(path)  # a reader never sees half a file
    print(f"wrote {path} ({len(png) // 1024} KiB)")


def test_every_service_is_still_up(deployed: dict[str, Any]) -> None:
    platform = deployed["platform"]
    for name, process in platform.services.items():
        if name != "serve":
            assert process.process is not None and process.process.poll() is None, (
                f"{name} died: {tail(process.log)}"
            )
