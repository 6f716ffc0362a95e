"""The batch-inference DAG and its logic: a small query file in, a TREC run and JSONL of hits out in MLflow,
the hits the same as ``colbert-pipeline search --json`` prints for the same queries.

The registry is SQLite with one version of the tiny search project (tests/search_project.py); the DAG file is
loaded with ``DagBag`` in a temporary ``AIRFLOW_HOME``, as tests/ops/test_dag.py does.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from pipeline.ops import batch_inference
from pipeline.project.errors import InputError
from pipeline.project.runs import read_trec_run
from tests.search_project import sqlite_registry

REPO_ROOT = Path(__file__).resolve().parents[2]
MODEL = "batch-animals"
QUERIES = {
    "q-falcon": "The falcon lives in the cliffs.",
    "q-walrus": "What does the walrus eat?",
    "q-koala": "Young koalas stay with their mother",
}


@pytest.fixture(scope="module")
def registry(module_tmp_path: Path, saved_colbert: Path) -> Iterator[SimpleNamespace]:
    with sqlite_registry(module_tmp_path, saved_colbert, MODEL) as registry:
        registry.client.set_registered_model_alias(MODEL, "champion", registry.versions[0])
        # its runs' artifacts in the test's folder, not in ./mlruns (a SQLite store's default root)
        registry.client.create_experiment(batch_inference.EXPERIMENT, str(module_tmp_path / "batch-runs"))
        yield registry


def _search_json(registry: SimpleNamespace, tmp_path: Path, capsys, monkeypatch, k: int) -> list[list[dict]]:
    """What ``colbert-pipeline search --json`` prints for :data:`QUERIES`, one array per query."""
    from pipeline import cli

    monkeypatch.setenv("MLFLOW_TRACKING_URI", registry.uri)
    params = tmp_path / "params.yaml"
    params.write_text(f"register:\n  model_name: {MODEL}\n")
    capsys.readouterr()
    assert cli.main(["search", *QUERIES.values(), "-k", str(k), "--json", "--params", str(params)]) == 0
    return [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("[")]


def test_a_query_file_becomes_a_run_and_hits_that_match_search(
    registry, tmp_path, capsys, monkeypatch
) -> None:
    import mlflow

    queries = tmp_path / "queries.jsonl"  # BEIR's queries.jsonl shape
    queries.write_text("".join(json.dumps({"_id": q, "text": t}) + "\n" for q, t in QUERIES.items()))
    result = batch_inference.run_batch_inference(queries, registry.uri, MODEL, k=3, batch_size=2)
    assert (result["model"], result["version"], result["queries"], result["hits"]) == (MODEL, "1", 3, 9)
    run = mlflow.MlflowClient(registry.uri).get_run(result["run_id"])
    assert run.data.tags["model_version"] == "1" and run.data.tags["model_name"] == MODEL
    local = Path(
        mlflow.artifacts.download_artifacts(
            run_id=result["run_id"], dst_path=str(tmp_path / "out"), tracking_uri=registry.uri
        )
    )
    records = [json.loads(line) for line in (local / batch_inference.HITS_FILE).read_text().splitlines()]
    assert [r["query_id"] for r in records] == list(QUERIES) and [r["query"] for r in records] == list(
        QUERIES.values()
    )
    assert {(r["model"], r["model_version"]) for r in records} == {(MODEL, "1")}
    # The same hits as `search --json` (ids and texts exactly; scores to float noise between batch sizes).
    searched = _search_json(registry, tmp_path, capsys, monkeypatch, k=3)
    assert len(searched) == len(records)
    for record, hits in zip(records, searched, strict=True):
        assert [(h["id"], h["text"]) for h in record["hits"]] == [(h["id"], h["text"]) for h in hits]
        for ours, theirs in zip(record["hits"], hits, strict=True):
            assert ours["score"] == pytest.approx(theirs["score"], rel=1e-4, abs=1e-4)
    assert records[0]["hits"][0] == {**records[0]["hits"][0], "id": "d5a", "text": QUERIES["q-falcon"]}
    # The TREC run holds the same ranking, tagged with the version.
    trec = read_trec_run(local / batch_inference.RUN_FILE)
    for record in records:
        ranked = sorted(trec[record["query_id"]], key=lambda doc: -trec[record["query_id"]][doc])
        assert ranked == [h["id"] for h in record["hits"]]
    assert (local / batch_inference.RUN_FILE).read_text().split("\n")[0].endswith(f"{MODEL}-v1")


def test_the_task_reads_its_settings_and_a_tsv_relative_to_the_workspace(
    registry, tmp_path, monkeypatch
) -> None:
    workspace = tmp_path / "workspace"
    (workspace / ".dvc").mkdir(parents=True)
    (workspace / "dvc.yaml").write_text("stages: {}\n")
    (workspace / "params.yaml").write_text(f"register:\n  model_name: {MODEL}\n")
    (workspace / "queries.tsv").write_text("".join(f"{q}\t{t}\n" for q, t in QUERIES.items()))
    settings = {"COLBERT_PIPELINE_WORKSPACE": str(workspace), "MLFLOW_TRACKING_URI": registry.uri}
    assert batch_inference.run_configured(settings.get) is None  # no queries file: nothing to do
    result = batch_inference.run_configured(
        {**settings, "COLBERT_PIPELINE_BATCH_QUERIES": "queries.tsv"}.get, k=2
    )
    assert (result["queries"], result["hits"], result["version"]) == (3, 6, "1")


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("queries.tsv", "q1\twho?\nq2 no tab here\n", r"queries\.tsv:2: expected 'query id<TAB>text'"),
        ("queries.tsv", "q1\twho?\nq1\twhat?\n", r"queries\.tsv:2: duplicate query id 'q1'"),
        ("queries.tsv", "\n", r"queries\.tsv: no queries"),
        ("queries.jsonl", '{"_id": "q1"}\n', r"queries\.jsonl:1"),
        ("queries.txt", "who?\n", r"unsupported format"),
    ],
)
def test_a_bad_queries_file_is_refused_naming_file_and_line(tmp_path, name, text, message) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(InputError, match=message):  # before any registry call: the URI is never reached
        batch_inference.run_batch_inference(path, "http://127.0.0.1:9", MODEL)
    with pytest.raises(InputError, match="k: expected a positive integer"):
        batch_inference.run_batch_inference(path, "http://127.0.0.1:9", MODEL, k=0)


def test_the_dag_runs_on_each_promotion_and_by_hand(module_tmp_path: Path) -> None:
    os.environ.setdefault("AIRFLOW_HOME", str(module_tmp_path / "airflow-home"))
    os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
    from airflow.dag_processing.dagbag import DagBag

    from pipeline.ops.dag_shared import CHAMPION

    dagbag = DagBag(dag_folder=str(REPO_ROOT / "dags" / "colbert_batch_inference.py"))
    assert dagbag.import_errors == {}
    dag = dagbag.dags["colbert_batch_inference"]
    assert set(dag.task_dict) == {"score_queries"}
    assert CHAMPION.name in str(dag.timetable.asset_condition) or CHAMPION.uri in str(
        dag.timetable.asset_condition
    )
    assert set(dag.params) == {"queries_file", "k"} and dag.params["k"] == batch_inference.DEFAULT_K
    task = dag.task_dict["score_queries"]
    assert task.retries >= 1 and task.execution_timeout is not None and task.queue == "default"
    assert dag.max_active_runs == 1 and dag.catchup is False
