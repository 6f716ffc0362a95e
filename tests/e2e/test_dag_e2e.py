"""End to end: ``dag.test()`` runs the whole DAG on the offline sample against a real MLflow server.

A copy of the repository (``git ls-files``) is the DVC workspace; ``airflow db migrate`` prepares a temporary
``AIRFLOW_HOME``. Each DAG run happens in its own Python process (Airflow reads its settings once per
process), which prints the run's task states and XComs for the assertions here. Three runs:

1. tiny overrides through the DAG's ``overrides`` Param: every stage runs; the first model becomes champion;
   the run is pushed to the workspace's DVC remote and committed to its own git ref, params.yaml is put back,
   and ``colbert-pipeline reproduce champion`` pulls the same hashes into a fresh folder;
2. the same Params again: DVC skips every stage, outputs keep their timestamps, the champion stays;
3. a bad data file: ``prepare`` fails with the stage's own error; the champion, ``metrics/registry.json`` and
   ``params.yaml`` are left as they were.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pipeline.project.layout import STAGES
from tests.dag_module import dag_test_env
from tests.mlflow_server import running_mlflow_server  # tests/mlflow_server.py: a real server process
from tests.workspace import DAG_TINY, make_workspace

pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
DAG_ID = "colbert_pipeline"
MODEL_NAME = "colbert-pipeline-e2e"

TINY = {**DAG_TINY, "register.model_name": MODEL_NAME}

DRIVER = r"""
import json, os, sys
from airflow.dag_processing.dagbag import DagBag
from airflow.models.xcom import XComModel
from airflow.utils.session import create_session

bag = DagBag(dag_folder=os.environ["AIRFLOW__CORE__DAGS_FOLDER"])
assert not bag.import_errors, bag.import_errors
dag = bag.dags["colbert_pipeline"]
run = dag.test(run_conf=json.loads(sys.argv[1]))
value = lambda state: getattr(state, "value", state)
result = {"state": value(run.state), "run_id": run.run_id, "tasks": {}, "xcom": {}}
with create_session() as session:
    for ti in run.get_task_instances(session=session):
        result["tasks"][ti.task_id] = value(ti.state)
    query = XComModel.get_many(run_id=run.run_id, key="return_value", dag_ids=dag.dag_id)
    for row in session.scalars(query):
        result["xcom"][row.task_id] = XComModel.deserialize_value(row)
print("E2E-RESULT " + json.dumps(result, default=str), flush=True)
"""


@pytest.fixture(scope="module")
def e2e(module_tmp_path: Path) -> Iterator[dict[str, Any]]:
    # A change that deletes a stage (or dvc.yaml) must fail here, not turn the whole module into skips.
    missing = [stage for stage in STAGES if not (REPO_ROOT / "pipeline" / "stages" / f"{stage}.py").exists()]
    if missing or not (REPO_ROOT / "dvc.yaml").exists():
        pytest.fail(f"the pipeline is incomplete (missing: {missing or 'dvc.yaml'})", pytrace=False)
    root = module_tmp_path
    workspace = make_workspace(root / "workspace", overrides={})  # the DAG run's Params set TINY
    home = root / "airflow-home"
    home.mkdir()
    with running_mlflow_server(root) as uri:
        env = dag_test_env(
            os.environ,
            home,
            workspace,
            MLFLOW_TRACKING_URI=uri,
            HF_HUB_OFFLINE="1",
            TOKENIZERS_PARALLELISM="false",
        )
        migrate = subprocess.run(
            [str(BIN / "airflow"), "db", "migrate"], env=env, capture_output=True, text=True, timeout=300
        )
        assert migrate.returncode == 0, migrate.stdout[-3000:] + migrate.stderr[-3000:]
        yield {"workspace": workspace, "env": env, "uri": uri, "root": root}


def _trigger(e2e: dict[str, Any], conf: dict[str, Any], name: str) -> tuple[dict[str, Any], str]:
    """One ``dag.test()`` in its own process; returns its result and its whole log."""
    started = time.monotonic()
    process = subprocess.run(
        [sys.executable, "-c", DRIVER, json.dumps(conf)],
        env=e2e["env"],
        cwd=e2e["root"],
        capture_output=True,
        text=True,
        timeout=900,
    )
    output = process.stdout + process.stderr
    (e2e["root"] / f"{name}.log").write_text(output)
    marker = [line for line in process.stdout.splitlines() if line.startswith("E2E-RESULT ")]
    assert process.returncode == 0 and marker, output[-6000:]
    result = json.loads(marker[-1].removeprefix("E2E-RESULT "))
    result["seconds"] = time.monotonic() - started
    return result, output


def _client(e2e: dict[str, Any]):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=e2e["uri"])


def _champion_version(e2e: dict[str, Any]) -> str | None:
    from mlflow.exceptions import MlflowException

    try:
        return _client(e2e).get_model_version_by_alias(MODEL_NAME, "champion").version
    except MlflowException:
        return None


def _mtimes(workspace: Path) -> dict[str, float]:
    paths = ["data/prepared/train", "data/prepared/eval", "models/colbert", "metrics/registry.json"]
    return {path: (workspace / path).stat().st_mtime_ns for path in paths}


@pytest.fixture(scope="module")
def first_run(e2e: dict[str, Any]) -> dict[str, Any]:
    params_before = (e2e["workspace"] / "params.yaml").read_bytes()
    result, output = _trigger(e2e, {"overrides": TINY, "epochs": 1}, "run1")
    return {
        "result": result,
        "output": output,
        "mtimes": _mtimes(e2e["workspace"]),
        "params_before": params_before,
    }


def _git(workspace: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=workspace, capture_output=True, text=True, check=True).stdout


def test_first_run_trains_registers_and_promotes(e2e: dict[str, Any], first_run: dict[str, Any]) -> None:
    result = first_run["result"]
    assert result["state"] == "success", first_run["output"][-6000:]
    expected = {
        task: "success"
        for task in ("validate_params", "start_mlflow_run", *STAGES, "record_run", "decide_promotion")
    }
    assert {task: result["tasks"][task] for task in expected} == expected
    # No champion existed, so the first model is promoted: the branch ran promote and skipped the other way.
    assert (result["tasks"]["promote"], result["tasks"]["keep_champion"]) == ("success", "skipped")

    registry = json.loads((e2e["workspace"] / "metrics" / "registry.json").read_text())
    assert registry["promoted"] is True
    assert _champion_version(e2e) == str(registry["version"])
    assert result["xcom"]["promote"]["version"] == str(registry["version"])

    # XCom carries paths, hashes and run ids only.
    train = result["xcom"]["train"]
    assert train["skipped"] is False and train["outputs"]["models/colbert"].endswith(".dir")
    update = result["xcom"]["validate_params"]
    assert set(update["changed"]) >= {"train.max_steps", "register.model_name"}

    # One MLflow parent run per DAG run, tagged with the Airflow ids; every stage run is its child.
    client = _client(e2e)
    parent_id = result["xcom"]["start_mlflow_run"]
    parent = client.get_run(parent_id)
    assert parent.data.tags["airflow.dag_id"] == DAG_ID
    assert parent.data.tags["airflow.run_id"] == result["run_id"]
    assert parent.data.tags["promotion"] == "promoted"
    assert parent.info.status == "FINISHED"
    children = client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent_id}'"
    )
    assert {run.data.tags.get("stage", run.info.run_name) for run in children} >= set(STAGES)


def test_first_run_is_recorded_in_a_ref_and_the_remote(
    e2e: dict[str, Any], first_run: dict[str, Any]
) -> None:
    workspace, record = e2e["workspace"], first_run["result"]["xcom"]["record_run"]
    # The run's params and dvc.lock went to a ref of its own; the checked-out branch did not move.
    assert record["ref"] == "refs/colbert-runs/" + first_run["result"]["run_id"].replace(":", "-")
    assert _git(workspace, "rev-parse", record["ref"]).strip() == record["commit"]
    assert _git(workspace, "rev-list", "--count", "HEAD").strip() == "1"
    committed = _git(workspace, "show", f"{record['commit']}:params.yaml")
    assert "max_steps: 2" in committed and "max_steps: 2" not in (workspace / "params.yaml").read_text()
    assert _git(workspace, "show", f"{record['commit']}:dvc.lock") == (workspace / "dvc.lock").read_text()
    # The workspace's params.yaml is what it was before the run's Params: scheduled runs keep the defaults.
    assert record["params_restored"] is True
    assert (workspace / "params.yaml").read_bytes() == first_run["params_before"]
    # The outputs are in the workspace's default remote, and the new version points at the ref and remote.
    assert record["pushed"] is True
    assert Path(record["remote"]["url"]).resolve() == (workspace / ".dvc-remote").resolve()
    assert any((workspace / ".dvc-remote").rglob("*.dir"))
    tags = _client(e2e).get_model_version(MODEL_NAME, record["version"]).tags
    assert tags["colbert.run_ref"] == record["ref"] and tags["colbert.run_commit"] == record["commit"]
    assert (tags["colbert.dvc_remote"], tags["colbert.dvc_pushed"]) == (record["remote"]["url"], "true")


def test_reproduce_the_champion_in_a_fresh_folder(e2e: dict[str, Any], first_run: dict[str, Any]) -> None:
    """The champion's run, checked out elsewhere and pulled from the remote, has its lineage hashes."""
    record = first_run["result"]["xcom"]["record_run"]
    folder = e2e["root"] / "reproduced"
    completed = subprocess.run(
        [
            *(str(BIN / "colbert-pipeline"), "reproduce", "champion", "--into", str(folder)),
            *("--repo", str(e2e["workspace"]), "--set", f"register.model_name={MODEL_NAME}"),
        ],
        cwd=e2e["workspace"],
        env=e2e["env"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    report = json.loads(completed.stdout[: completed.stdout.rindex("}") + 1])
    assert (report["version"], report["commit"]) == (record["version"], record["commit"])
    checks = {check["artifact"]: check for check in report["checks"]}
    assert set(checks) == {"data_train", "data_eval", "model", "index"}
    assert all(check["identical"] for check in checks.values()), checks
    assert _git(folder, "rev-parse", "HEAD").strip() == record["commit"]
    assert (folder / "models" / "colbert" / "model.safetensors").is_file()


def test_second_run_skips_unchanged_stages(e2e: dict[str, Any], first_run: dict[str, Any]) -> None:
    champion = _champion_version(e2e)
    result, output = _trigger(e2e, {"overrides": TINY, "epochs": 1}, "run2")
    assert result["state"] == "success", output[-6000:]
    # The first run's Params were put back, so the same Params are written again, and match dvc.lock.
    assert (
        result["xcom"]["validate_params"]["changed"]
        == first_run["result"]["xcom"]["validate_params"]["changed"]
    )
    for stage in STAGES:
        assert result["xcom"][stage]["skipped"] is True, stage
        # DVC's own `dvc status --json` said so, and the stage was not started at all.
        assert f"stage {stage}: skipped (unchanged: dvc status reports it up to date)" in output, stage
    assert _mtimes(e2e["workspace"]) == first_run["mtimes"]
    assert result["xcom"]["train"]["outputs"] == first_run["result"]["xcom"]["train"]["outputs"]
    # Nothing new was registered, so the champion stays.
    assert (result["tasks"]["promote"], result["tasks"]["keep_champion"]) == ("skipped", "success")
    assert _champion_version(e2e) == champion


def test_failing_stage_fails_its_task_and_leaves_the_champion(
    e2e: dict[str, Any], first_run: dict[str, Any]
) -> None:
    workspace = e2e["workspace"]
    champion = _champion_version(e2e)
    assert champion is not None
    registry_before = (workspace / "metrics" / "registry.json").read_bytes()
    params_before = (workspace / "params.yaml").read_bytes()
    # In prepare.data (inputs/), the path dvc.yaml watches; line 1 is cut short.
    (workspace / "inputs" / "bad-triplets.jsonl").write_text('{"query": "q", "positive": "p"\n')

    bad = {**TINY, "prepare.source": "triplets", "prepare.triplets.path": "inputs/bad-triplets.jsonl"}
    result, output = _trigger(e2e, {"overrides": bad}, "run3")

    assert result["state"] == "failed"
    assert result["tasks"]["validate_params"] == "success"  # the override is well-formed ...
    assert result["tasks"]["prepare"] == "failed"  # ... the data it points at is not
    assert all(result["tasks"][stage] == "upstream_failed" for stage in STAGES[1:])
    assert result["tasks"]["promote"] in {"upstream_failed", "skipped"}
    # The task fails at once (bad input, no retry) with the stage's own error from its result file (file and
    # line), not a generic DVC message.
    assert re.search(
        r"AirflowFailException: stage 'prepare' failed \(exit status \d+, input\): "
        r"DataFormatError: \S*bad-triplets\.jsonl:1\b",
        output,
    )
    assert _champion_version(e2e) == champion
    assert (workspace / "metrics" / "registry.json").read_bytes() == registry_before
    # The failed run's overrides were rolled back, so the next scheduled run uses the last good params.
    assert (workspace / "params.yaml").read_bytes() == params_before
    parent = _client(e2e).get_run(result["xcom"]["start_mlflow_run"])
    assert parent.info.status == "FAILED" and parent.data.tags["failed_task"] == "prepare"
