"""The index stage stores search settings that reach ``index.recall_target``, and search uses them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from mlflow import MlflowClient

from pipeline import indexes, retrieve
from pipeline.data.corpus import read_corpus
from pipeline.indexes.embedding_store import STORE_FOLDER
from pipeline.indexes.indexing import exact_search, recall_at_k
from pipeline.indexes.tuning import SEARCH_SETTINGS_FILE
from pipeline.models.precision import resolve_precision
from pipeline.project.config import Params
from pipeline.stages import index as index_stage

REPO = Path(__file__).resolve().parents[2]

ANIMALS = ["otter", "heron", "badger", "lynx", "gecko", "walrus", "ibis", "marmot"]


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")


@pytest.fixture()
def project(tmp_path, saved_colbert) -> Path:
    """A project with a saved model and a small BEIR folder (40 documents, 8 judged test queries)."""
    shutil.copytree(saved_colbert, tmp_path / "models" / "colbert")
    corpus = tmp_path / "corpus"
    (corpus / "qrels").mkdir(parents=True)
    rows = [
        {"_id": f"{animal}-{i}", "title": animal, "text": f"Fact {i} about the {animal}: it {verb}."}
        for animal in ANIMALS
        for i, verb in enumerate(["swims", "eats fish", "sleeps by day", "lives in groups", "sings"])
    ]
    _write_jsonl(corpus / "corpus.jsonl", rows)
    _write_jsonl(corpus / "queries.jsonl", [{"_id": a, "text": f"what does the {a} eat"} for a in ANIMALS])
    (corpus / "qrels" / "test.tsv").write_text(
        "query-id\tcorpus-id\tscore\n" + "".join(f"{a}\t{a}-1\t1\n" for a in ANIMALS), encoding="utf-8"
    )
    return tmp_path


def _params(**index) -> Params:
    return Params.model_validate(
        {
            "index": {"name": "animals", "corpus": "corpus", "chunk_size": 16, **index},
            "tracking": {"retries": 1},
        }
    )


def test_index_stage_stores_settings_that_reach_the_target_and_search_uses_them(project):
    result = index_stage.run(_params(recall_target=0.95), project)
    metrics = json.loads((project / "metrics" / "index.json").read_text())
    search = metrics["search"]
    assert search["reached"] and search["recall@10"] >= 0.95 and search["target"] == 0.95
    assert search["probe_queries"] == len(ANIMALS)
    assert search["probe_source"].endswith("test queries")
    assert search["qps"] > 0 and search["exact_qps"] > 0
    assert search["settings"]["mode"] in {"plaid", "exact"}
    assert metrics["precision"] == resolve_precision("auto", None)  # index.precision's default, resolved
    # One query at a time through the stored settings (what the gate's recall and the model page show).
    assert 0 < search["p50_ms"] <= search["p95_ms"] and search["latency_queries"] == len(ANIMALS)
    from pipeline.indexes.storage import VersionStore
    from pipeline.ops import lineage

    assert metrics["index_version"] == VersionStore(Path(result["index"])).current()
    # The run names the corpus it indexed (its DVC md5 the digest) as its dataset input.
    run = MlflowClient().get_run(result["mlflow_run_id"])
    (corpus,) = [d.dataset for d in run.inputs.dataset_inputs if d.dataset.name == "corpus"]
    assert corpus.digest == lineage.compute_md5(project / "corpus")
    assert run.data.metrics["search_p95_ms"] == search["p95_ms"]

    path = Path(result["index"])
    stored = json.loads((path / SEARCH_SETTINGS_FILE).read_text())
    assert stored["settings"] == search["settings"] and stored["trials"]
    # The full-precision copy stays whatever won (which one wins is a matter of timing, and the index's files
    # must not depend on timing); the timing-dependent search.json is outside the DVC hash (.dvcignore).
    # ... inside the version it belongs to, published with it in one commit
    assert (path / metrics["index_version"] / STORE_FOLDER).is_dir() and not (path / STORE_FOLDER).exists()
    assert SEARCH_SETTINGS_FILE in (REPO / ".dvcignore").read_text().split()

    # A fresh PLAID (as `search` and the served model open it) searches with the stored settings and
    # reaches the target on the probe queries.
    from pipeline import models

    model = models.ColBERT(model_name_or_path=str(project / "models" / "colbert"), device="cpu")
    index = indexes.PLAID(index_folder=path.parent, index_name=path.name, device="cpu")
    assert index.search_settings is not None
    assert index.search_settings.mode == search["settings"]["mode"]
    queries = model.encode([f"what does the {a} eat" for a in ANIMALS], is_query=True)
    ids, texts = zip(*read_corpus(project / "corpus"), strict=True)
    reference = exact_search(queries, model.encode(list(texts), is_query=False), list(ids), k=10)
    found = retrieve.ColBERT(index).retrieve(queries, k=10)
    assert recall_at_k(found, reference, k=10) >= 0.95


def test_a_corpus_without_queries_is_tuned_on_queries_drawn_from_it(project):
    shutil.rmtree(project / "corpus" / "qrels")
    (project / "corpus" / "queries.jsonl").unlink()
    result = index_stage.run(_params(probe_queries=5, n_centroids=16), project)
    search = json.loads((project / "metrics" / "index.json").read_text())["search"]
    assert search["probe_source"] == "drawn from the corpus"
    assert search["probe_queries"] == 5
    path = Path(result["index"])  # index.n_centroids reached the build (fast-plaid's rule gives 256 here)
    live = json.loads((path / "CURRENT").read_text())["version"]
    assert len(np.load(path / live / "plaid" / "centroids.npy")) == 16


def test_a_missing_backend_is_named_before_any_work(project, monkeypatch):
    from pipeline.models import backends

    # as where the onnx extra is not installed (this project's lock cannot install it), on any machine
    monkeypatch.setattr(backends, "_installed", lambda module: False)
    with pytest.raises(ValueError, match=r"index\.backend: 'onnx' needs"):
        index_stage.run(_params(backend="onnx"), project)
    assert not (project / "indexes").exists()


def test_the_prepared_benchmark_gives_its_queries_as_probes(tmp_path):
    from pipeline.data.beir import BeirData
    from pipeline.data.nano import build_nano_benchmark

    corpus = {f"d{i}": f"document {i} about {animal}" for i, animal in enumerate(ANIMALS)}
    queries = {f"q{i}": f"what does the {animal} eat" for i, animal in enumerate(ANIMALS)}
    qrels = {f"q{i}": {f"d{i}": 1} for i in range(len(ANIMALS))}
    build_nano_benchmark(
        BeirData(corpus=corpus, queries=queries, qrels=qrels, name="animals"),
        tmp_path / "data" / "prepared" / "eval",
        n_queries=len(queries),
        n_documents=len(corpus),
        seed=0,
    )
    params = Params.model_validate({"index": {"probe_queries": 3}})
    probes, origin = index_stage.probe_texts(params, tmp_path, list(corpus.values()))
    assert len(probes) == 3 and set(probes) <= set(queries.values())
    assert origin.endswith("eval queries")
