"""The prepare stage on every source, and a few training steps on what it writes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from datasets import load_from_disk

from pipeline.data import sources
from pipeline.data.nano import load_nano_benchmark
from pipeline.data.readers import DataFormatError
from pipeline.project.params_file import load_params
from pipeline.stages import prepare, train
from pipeline.training import trainer as training

TINY = {
    "prepare.sample.n_train_entities": 6,
    "prepare.sample.n_eval_entities": 3,
    "prepare.sample.n_distractors": 10,
    "prepare.eval_queries": 10,
    "prepare.eval_documents": 60,
    "train.max_steps": 2,
    "train.batch_size": 4,
    "train.device": "cpu",
}


def params_for(project: Path, **overrides):
    return load_params(project / "params.yaml", {**TINY, **overrides})


def test_sample_source_writes_train_eval_and_stats(tmp_path):
    result = prepare.run(params_for(tmp_path), tmp_path)
    out = tmp_path / "data" / "prepared"
    stats = json.loads((out / "stats.json").read_text())
    dataset = load_from_disk(str(out / "train" / "dataset"))
    assert stats["train_rows"] == len(dataset) == 6 * 5 * 2
    assert dataset.column_names == ["query", "positive", "negative_1"]
    benchmark = load_nano_benchmark(out / "eval", "sample")
    assert len(benchmark.queries) == stats["eval_queries"] == 10
    assert not set(benchmark.queries.values()) & set(dataset["query"])
    assert result["stats"]["benchmark"] == "NanoSample"
    # A second run with the same seed writes the same training set.
    prepare.run(params_for(tmp_path), tmp_path)
    assert load_from_disk(str(out / "train" / "dataset"))["query"] == dataset["query"]


def test_triplets_source_dedupes_holds_out_queries_and_reports_bad_lines(tmp_path):
    rows = [
        {"query": f"question {i}", "positive": f"answer {i}", "negative": f"other {i}"} for i in range(20)
    ]
    rows.append(dict(rows[0]))  # an exact duplicate
    path = tmp_path / "triplets.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    result = prepare.run(
        params_for(tmp_path, **{"prepare.source": "triplets", "prepare.triplets.path": str(path)}), tmp_path
    )
    stats = result["stats"]
    assert stats["duplicates_dropped"] == 1
    assert stats["train_rows"] + stats["eval_queries"] == 20
    path.write_text(path.read_text() + '{"query": "q", "positive": ""}\n')
    before = (tmp_path / "data" / "prepared" / "stats.json").read_text()
    with pytest.raises(DataFormatError, match=r"triplets.jsonl:22: field 'positive' is empty"):
        prepare.run(
            params_for(tmp_path, **{"prepare.source": "triplets", "prepare.triplets.path": str(path)}),
            tmp_path,
        )
    # The failed run left the previous outputs as they were.
    assert (tmp_path / "data" / "prepared" / "stats.json").read_text() == before


def test_leaked_eval_query_is_refused():
    from pipeline.data.beir import BeirData

    leaky = sources.Prepared(
        kind="triplets",
        rows=[{"query": "same question", "positive": "p", "negative_1": "n"}],
        benchmark=BeirData(corpus={"d": "p"}, queries={"q": "same question"}, qrels={"q": {"d": 1}}),
    )
    with pytest.raises(sources.LeakError, match="same question"):
        sources.check_no_leak(leaky)


@pytest.mark.slow
def test_kd_source_joins_ids_and_trains_with_distillation(tmp_path, shared_data):
    kd = shared_data / "kd-sample-flagembedding"
    overrides = {
        "prepare.source": "kd",
        "prepare.kd.scores": str(kd / "train.jsonl"),
        "prepare.kd.queries": str(kd / "queries.jsonl"),
        "prepare.kd.documents": str(kd / "documents.jsonl.gz"),
        "prepare.kd.eval_fraction": 0.2,
        "train.loss": "distillation",
        "train.n_ways": 4,
    }
    result = prepare.run(params_for(tmp_path, **overrides), tmp_path)
    stats = result["stats"]
    lines = (kd / "train.jsonl").read_text().splitlines()
    assert (
        stats["ids_resolved"]
        == stats["ids_total"]
        == sum(1 + len(json.loads(x)["document_ids"]) for x in lines)
    )
    assert stats["train_kind"] == "kd"
    trained = train.run(params_for(tmp_path, **overrides), tmp_path)
    assert trained["steps"] == 2
    assert (tmp_path / "models" / "colbert" / "model.safetensors").is_file()
    assert not (tmp_path / "models" / "colbert-checkpoints").exists()


@pytest.mark.slow
def test_beir_source_mines_hard_negatives_and_trains(tmp_path, shared_data):
    overrides = {
        "prepare.source": "beir",
        "prepare.beir.folder": str(shared_data / "scifact"),
        "prepare.beir.max_train_queries": 12,
        "prepare.beir.mining_corpus": 300,
        "prepare.beir.negatives_per_query": 2,
    }
    result = prepare.run(params_for(tmp_path, **overrides), tmp_path)
    dataset = load_from_disk(str(tmp_path / "data" / "prepared" / "train" / "dataset"))
    assert dataset.column_names == ["query", "positive", "negative_1", "negative_2"]
    assert len(set(dataset["query"])) == 12
    for row in dataset:
        assert row["positive"] not in (row["negative_1"], row["negative_2"])
    assert result["stats"]["benchmark"] == "NanoSciFact"
    trained = train.run(params_for(tmp_path, **overrides), tmp_path)
    assert trained["steps"] == 2 and trained["train_loss"] > 0
    # the model carries its per-step training curve (the quality report plots it)
    curve = json.loads((tmp_path / "models" / "colbert" / "training_loss.json").read_text())
    assert [point["step"] for point in curve] == [1, 2] and all(point["loss"] > 0 for point in curve)


@pytest.mark.slow
def test_beir_train_query_worded_like_a_test_query_is_held_out(tmp_path):
    # SciFact has such pairs: two ids, one claim text, one in each split.
    folder = tmp_path / "beir"
    (folder / "qrels").mkdir(parents=True)
    topics = ["tides", "comets", "ferns", "opera", "glue", "yeast"]
    corpus = [{"_id": f"d{i}", "title": "", "text": f"A note about {t}."} for i, t in enumerate(topics)]
    queries = [{"_id": f"q{i}", "text": f"what about {t}?"} for i, t in enumerate(topics)]
    queries.append({"_id": "q-copy", "text": "what about tides?"})  # q0's text under another id
    (folder / "corpus.jsonl").write_text("".join(json.dumps(r) + "\n" for r in corpus))
    (folder / "queries.jsonl").write_text("".join(json.dumps(r) + "\n" for r in queries))
    header = "query-id\tcorpus-id\tscore\n"
    (folder / "qrels" / "train.tsv").write_text(header + "q-copy\td0\t1\nq1\td1\t1\nq2\td2\t1\nq3\td3\t1\n")
    (folder / "qrels" / "test.tsv").write_text(header + "q0\td0\t1\nq4\td4\t1\n")
    overrides = {"prepare.source": "beir", "prepare.beir.folder": str(folder), "prepare.eval_documents": 10}
    result = prepare.run(params_for(tmp_path, **overrides), tmp_path)
    dataset = load_from_disk(str(tmp_path / "data" / "prepared" / "train" / "dataset"))
    assert sorted(set(dataset["query"])) == ["what about comets?", "what about ferns?", "what about opera?"]
    assert result["stats"]["train_queries_removed_as_eval"] == 1


@pytest.mark.slow
def test_beir_positives_per_query_are_capped_by_a_seeded_sample(tmp_path):
    folder = tmp_path / "beir"
    (folder / "qrels").mkdir(parents=True)
    corpus = [{"_id": f"d{i}", "title": "", "text": f"Note {i} about tides and comets."} for i in range(12)]
    queries = [{"_id": q, "text": f"what about {q}?"} for q in ("qa", "qb", "qc", "qt")]
    (folder / "corpus.jsonl").write_text("".join(json.dumps(r) + "\n" for r in corpus))
    (folder / "queries.jsonl").write_text("".join(json.dumps(r) + "\n" for r in queries))
    judged = {"qa": range(0, 6), "qb": range(6, 7), "qc": range(7, 11)}  # 6, 1 and 4 positives
    rows = [f"{q}\td{i}\t1\n" for q, docs in judged.items() for i in docs]
    (folder / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(rows))
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nqt\td11\t1\n")
    texts = {r["_id"]: r["text"] for r in corpus}

    def positives(seed: int) -> dict[str, list[str]]:
        overrides = {
            "prepare.source": "beir",
            "prepare.beir.folder": str(folder),
            "prepare.beir.max_positives_per_query": 2,
            "prepare.eval_documents": 10,
            "prepare.seed": seed,
        }
        prepare.run(params_for(tmp_path, **overrides), tmp_path)
        dataset = load_from_disk(str(tmp_path / "data" / "prepared" / "train" / "dataset"))
        kept: dict[str, list[str]] = {}
        for row in dataset:
            kept.setdefault(row["query"].split()[-1].rstrip("?"), []).append(row["positive"])
        return kept

    first = positives(seed=42)
    # At most two per query, each one of that query's own judged documents; a query with one keeps it.
    assert {q: len(p) for q, p in first.items()} == {"qa": 2, "qb": 1, "qc": 2}
    for query, docs in judged.items():
        assert set(first[query]) <= {texts[f"d{i}"] for i in docs}
    assert positives(seed=42) == first  # the same seed, the same sample
    # Another seed draws again (over 10 seeds, a draw of 2 of 6 and 2 of 4 cannot stay put by chance).
    assert any(positives(seed=s) != first for s in range(43, 53))


def test_train_resumes_only_from_checkpoints_of_the_same_params(tmp_path):
    folder = tmp_path / "colbert-checkpoints"
    assert train._checkpoint_to_resume(folder, "abc") is None  # nothing to resume
    for step in (5, 10, 50):
        (folder / f"checkpoint-{step}").mkdir(parents=True)
    (folder / "params.sha").write_text("abc")
    # The newest checkpoint by step number (not by name: "checkpoint-5" sorts after "checkpoint-10").
    assert train._checkpoint_to_resume(folder, "abc") == str(folder / "checkpoint-50")
    # Checkpoints of other params are stale: removed, and training starts fresh.
    assert train._checkpoint_to_resume(folder, "other") is None
    assert not folder.exists()


def test_precision_auto_is_bf16_on_a_bf16_native_cpu_else_fp32_and_explicit_flags_win(monkeypatch):
    from pipeline.models import precision

    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)
    assert training.precision_flags("auto", "cpu") == {"fp16": False, "bf16": True}
    assert training.precision_flags("fp32", "cpu") == {"fp16": False, "bf16": False}
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)
    assert training.precision_flags("auto", "cpu") == {"fp16": False, "bf16": False}
    assert training.precision_flags("bf16", "cpu") == {"fp16": False, "bf16": True}
    assert training.precision_flags("fp16") == {"fp16": True, "bf16": False}
