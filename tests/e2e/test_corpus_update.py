"""A changed corpus under ``dvc repro``: only ``index`` and ``register`` re-run, the index is updated in place
from the build ``dvc.lock`` records, and the champion that follows answers from the new corpus; then the
corpus DAG (``dag.test()``) does the same on the next change, with no training task at all.

The project is the offline sample at test size with ``index.corpus`` a slice of SciFact kept in ``corpus/``
(``index.data``, which only the index stage depends on). The tests share it, in order.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.dag_module import dag_test_env
from tests.stages.test_index_update import scifact_rows
from tests.workspace import TINY, make_workspace, run, workspace_env

pytestmark = pytest.mark.slow

CORPUS = "corpus/scifact.jsonl"
TRAINING_STAGES = ("prepare", "baseline", "train", "evaluate")
BIN = Path(sys.executable).parent

DRIVER = r"""
import json, os
from airflow.dag_processing.dagbag import DagBag

bag = DagBag(dag_folder=os.environ["AIRFLOW__CORE__DAGS_FOLDER"])
assert not bag.import_errors, bag.import_errors
run = bag.dags["colbert_corpus"].test()
value = lambda state: getattr(state, "value", state)
tasks = {ti.task_id: value(ti.state) for ti in run.get_task_instances()}
print("E2E-RESULT " + json.dumps({"state": value(run.state), "tasks": tasks}), flush=True)
"""


def _jsonl(rows: list[dict]) -> str:
    return "".join(json.dumps(row) + "\n" for row in rows)


@pytest.fixture(scope="module")
def project(module_tmp_path: Path) -> dict[str, Any]:
    """The workspace after a first ``dvc repro register``: version 1 of the model is champion."""
    rows = scifact_rows(80)
    overrides = {
        **TINY,
        "index.corpus": CORPUS,
        "index.probe_queries": 8,
        "register.max_latency_ratio": None,  # the same model timed against itself: noise on a shared machine
    }
    workspace = make_workspace(module_tmp_path / "project", overrides, files={CORPUS: _jsonl(rows[:60])})
    env = workspace_env(f"sqlite:///{module_tmp_path / 'mlruns.db'}", workspace)
    first = run(["dvc", "repro", "register"], workspace, env, timeout=1500).stdout
    assert all(f"Running stage '{stage}'" in first for stage in (*TRAINING_STAGES, "index", "register"))
    return {"workspace": workspace, "env": env, "rows": rows, "root": module_tmp_path}


def test_a_corpus_change_reruns_only_index_and_register_and_the_champion_follows(project) -> None:
    workspace, env, rows = project["workspace"], project["env"], project["rows"]
    # The corpus changes: 3 documents removed, 1 changed, 4 added.
    changed = {**rows[10], "text": rows[10]["text"] + " A later erratum."}
    corpus = [changed if row is rows[10] else row for row in rows[3:60]] + rows[60:64]
    (workspace / CORPUS).write_text(_jsonl(corpus), encoding="utf-8")
    status = json.loads(run(["dvc", "status", "--json"], workspace, env).stdout)
    assert status["index"] == [{"changed deps": {"corpus": "modified"}}], status
    # quality and report never ran (`dvc repro register`): only they, and index, are out of date
    assert set(status) == {"index", "quality", "report"}, status

    second = run(["dvc", "repro", "register"], workspace, env, timeout=1500).stdout
    assert "Running stage 'index'" in second and "Running stage 'register'" in second
    for stage in TRAINING_STAGES:  # no training, no evaluation
        assert f"Running stage '{stage}'" not in second, second
    update = json.loads((workspace / "metrics" / "index.json").read_text())["update"]
    # DVC deleted the index before the stage ran: the stage restored dvc.lock's build from the cache
    assert (update["mode"], update["added"], update["removed"], update["changed"], update["encoded"]) == (
        "incremental",
        4,
        3,
        1,
        5,
    ), update
    decision = json.loads((workspace / "metrics" / "registry.json").read_text())
    assert decision["promoted"] is True and decision["comparison"] == "corpus_update", decision["reason"]
    assert decision["version"] == "2" and decision["champion_before"] == "1"

    # The champion answers from the updated corpus: an added document by its own text, never a removed one.
    added, removed = rows[60], rows[:3]
    queries = [added["text"], *(row["text"] for row in removed)]
    answer = run(["colbert-pipeline", "search", *queries, "--k", "10", "--json"], workspace, env).stdout
    hits = [[hit["id"] for hit in json.loads(line)] for line in answer.splitlines()]
    assert added["_id"] in hits[0][:3], hits[0]
    assert not {row["_id"] for row in removed} & {doc for row in hits for doc in row}


def test_the_corpus_dag_updates_the_champion_and_runs_no_training(project) -> None:
    workspace, rows, root = project["workspace"], project["rows"], project["root"]
    corpus = [json.loads(line) for line in (workspace / CORPUS).read_text().splitlines()] + rows[64:66]
    (workspace / CORPUS).write_text(_jsonl(corpus), encoding="utf-8")
    home = root / "airflow-home"
    home.mkdir()
    env = dag_test_env(project["env"], home, workspace, TOKENIZERS_PARALLELISM="false")
    env.pop("PYTHONPATH", None)  # the DAG imports the package under test; its stages run the workspace's copy
    run([str(BIN / "airflow"), "db", "migrate"], root, env, timeout=600)
    process = subprocess.run(
        [sys.executable, "-c", DRIVER], env=env, cwd=root, capture_output=True, text=True, timeout=1500
    )
    output = process.stdout + process.stderr
    (root / "corpus-dag.log").write_text(output)
    marker = [line for line in process.stdout.splitlines() if line.startswith("E2E-RESULT ")]
    assert process.returncode == 0 and marker, output[-6000:]
    result = json.loads(marker[-1].removeprefix("E2E-RESULT "))
    assert result["state"] == "success", result
    assert {task: result["tasks"][task] for task in ("index", "register", "promote")} == dict.fromkeys(
        ("index", "register", "promote"), "success"
    ), result
    assert result["tasks"]["keep_champion"] == "skipped"
    update = json.loads((workspace / "metrics" / "index.json").read_text())["update"]
    assert (update["mode"], update["added"], update["removed"], update["encoded"]) == ("incremental", 2, 0, 2)
    decision = json.loads((workspace / "metrics" / "registry.json").read_text())
    assert (decision["version"], decision["comparison"], decision["promoted"]) == ("3", "corpus_update", True)
