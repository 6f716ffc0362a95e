"""End to end: ``dag.test()`` runs the whole DAG on the offline sample against a real MLflow server.

A copy of the repository (``git ls-files``) is the DVC workspace; ``airflow db migrate`` prepares a temporary
``AIRFLOW_HOME``. Each DAG run happens in its own Python process (Airflow reads its settings once per
process), which prints the run's task states and XComs for the assertions here. Three runs:

1. tiny overrides through the DAG's ``overrides`` Param: every stage runs; the first model becomes champion;
2. the same Params again: DVC skips every stage, outputs keep their timestamps, the champion stays;
3. a bad data file: ``prepare`` fails with the stage's own error; the champion, ``metrics/registry.json`` and
   ``params.yaml`` are left as they were.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pipeline.layout import STAGES
from tests.mlflow_server import running_mlflow_server  # tests/mlflow_server.py: a real server process

pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
DAG_ID = "colbert_pipeline"
MODEL_NAME = "colbert-pipeline-e2e"

#: Small enough for a 2-core CPU: a few training steps on a few entities, a tiny benchmark and index.
TINY = {
    "prepare.sample.n_train_entities": 8,
    "prepare.sample.n_eval_entities": 2,
    "prepare.sample.n_distractors": 20,
    "prepare.eval_queries": 8,
    "prepare.eval_documents": 24,
    "train.max_steps": 2,
    "train.batch_size": 4,
    "train.save_steps": 1000,
    "evaluate.batch_size": 16,
    "index.kmeans_niters": 1,
    "register.model_name": MODEL_NAME,
}

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


def _copy_repository(destination: Path) -> Path:
    """The project files of this checkout, as a fresh git + DVC workspace."""
    listed = subprocess.run(
        # Tracked files and new ones not ignored: the code under test, without outputs, caches or the venv.
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO_ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    for name in filter(None, listed.split("\0")):
        source = REPO_ROOT / name
        if source.is_file():
            target = destination / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "e2e",
        "GIT_AUTHOR_EMAIL": "e2e@localhost",
        "GIT_COMMITTER_NAME": "e2e",
        "GIT_COMMITTER_EMAIL": "e2e@localhost",
    }
    commands = [["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-q", "-m", "workspace"]]
    if not (destination / ".dvc" / "config").exists():
        commands.insert(1, [str(BIN / "dvc"), "init", "-q"])
    for command in commands:
        subprocess.run(command, cwd=destination, check=True, env=env, capture_output=True)
    return destination


@pytest.fixture(scope="module")
def e2e(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    missing = [stage for stage in STAGES if not (REPO_ROOT / "pipeline" / "stages" / f"{stage}.py").exists()]
    if missing or not (REPO_ROOT / "dvc.yaml").exists():
        pytest.skip(f"the pipeline is not complete yet (missing stages: {missing or 'dvc.yaml'})")
    root = tmp_path_factory.mktemp("dag-e2e")
    workspace = _copy_repository(root / "workspace")
    home = root / "airflow-home"
    home.mkdir()
    with running_mlflow_server(root) as uri:
        env = {
            **os.environ,
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(REPO_ROOT / "dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "COLBERT_PIPELINE_WORKSPACE": str(workspace),
            "COLBERT_PIPELINE_RETRIES": "0",  # dag.test() would otherwise wait out the retry delays
            "MLFLOW_TRACKING_URI": uri,
            "HF_HUB_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false",
        }
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
    result, output = _trigger(e2e, {"overrides": TINY, "epochs": 1}, "run1")
    return {"result": result, "output": output, "mtimes": _mtimes(e2e["workspace"])}


def test_first_run_trains_registers_and_promotes(e2e: dict[str, Any], first_run: dict[str, Any]) -> None:
    result = first_run["result"]
    assert result["state"] == "success", first_run["output"][-6000:]
    expected = {
        task: "success" for task in ("validate_params", "start_mlflow_run", *STAGES, "decide_promotion")
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


def test_second_run_skips_unchanged_stages(e2e: dict[str, Any], first_run: dict[str, Any]) -> None:
    champion = _champion_version(e2e)
    result, output = _trigger(e2e, {"overrides": TINY, "epochs": 1}, "run2")
    assert result["state"] == "success", output[-6000:]
    assert result["xcom"]["validate_params"]["changed"] == []
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
    (workspace / "bad-triplets.jsonl").write_text('{"query": "q", "positive": "p"\n')  # line 1 is cut short

    bad = {**TINY, "prepare.source": "triplets", "prepare.triplets.path": "bad-triplets.jsonl"}
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
