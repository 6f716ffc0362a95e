"""BEIR folder reader and the offline Nano benchmark builder (no model needed)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipeline.data.beir import BeirData, BeirFormatError, load_beir
from pipeline.data.nano import (
    build_nano_benchmark,
    list_nano_benchmarks,
    load_nano_benchmark,
    nano_split_name,
)


def write_beir(
    folder: Path,
    corpus: list[dict],
    queries: list[dict],
    qrels: list[tuple[str, str, int]],
    *,
    gz: bool = False,
    split: str = "test",
) -> Path:
    """A BEIR folder on disk; ``gz`` writes the corpus and queries gzip'd as the shared data does."""
    folder.mkdir(parents=True, exist_ok=True)
    for stem, records in (("corpus", corpus), ("queries", queries)):
        text = "".join(json.dumps(record) + "\n" for record in records)
        if gz:
            with gzip.open(folder / f"{stem}.jsonl.gz", "wt", encoding="utf-8") as handle:
                handle.write(text)
        else:
            (folder / f"{stem}.jsonl").write_text(text, encoding="utf-8")
    (folder / "qrels").mkdir(exist_ok=True)
    lines = ["query-id\tcorpus-id\tscore"] + [f"{q}\t{d}\t{s}" for q, d, s in qrels]
    (folder / "qrels" / f"{split}.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


TOPICS = [
    "volcano",
    "penguin",
    "violin",
    "glacier",
    "saffron",
    "tornado",
    "orchid",
    "comet",
    "falcon",
    "quartz",
]


def toy_beir(folder: Path, *, gz: bool = False) -> Path:
    corpus = [
        {"_id": f"d{i}", "title": f"About {t}", "text": f"The {t} facts number {i}."}
        for i, t in enumerate(TOPICS)
    ]
    corpus += [{"_id": f"x{i}", "title": "", "text": f"Filler document {i} on nothing."} for i in range(30)]
    queries = [{"_id": f"q{i}", "text": f"facts on the {t}"} for i, t in enumerate(TOPICS)]
    queries.append({"_id": "unjudged", "text": "a query without judgements"})
    qrels = [(f"q{i}", f"d{i}", 1) for i in range(len(TOPICS))] + [("q0", "x0", 0)]
    return write_beir(folder, corpus, queries, qrels, gz=gz)


@pytest.mark.parametrize("gz", [False, True])
def test_load_beir_reads_plain_and_gzip_folders(tmp_path: Path, gz: bool) -> None:
    data = load_beir(toy_beir(tmp_path / "toy", gz=gz), split="test")
    assert data.name == "toy" and data.split == "test"
    assert len(data.corpus) == 40
    assert data.corpus["d1"] == "About penguin The penguin facts number 1."
    assert data.corpus["x3"] == "Filler document 3 on nothing."  # an empty title leaves the text alone
    assert "unjudged" not in data.queries  # only this split's judged queries
    assert data.qrels["q0"] == {"d0": 1, "x0": 0}
    assert data.relevant_docs()["q0"] == {"d0"}  # score 0 = judged non-relevant


def test_load_beir_errors_name_file_line_and_field(tmp_path: Path) -> None:
    folder = toy_beir(tmp_path / "bad")
    with (folder / "corpus.jsonl").open("a", encoding="utf-8") as handle:
        handle.write(json.dumps({"_id": "d99", "title": "no text"}) + "\n")
    with pytest.raises(BeirFormatError, match=r"corpus\.jsonl:41: missing field 'text'"):
        load_beir(folder)

    folder = toy_beir(tmp_path / "badjson")
    with (folder / "queries.jsonl").open("a", encoding="utf-8") as handle:
        handle.write("{not json\n")
    with pytest.raises(BeirFormatError, match=r"queries\.jsonl:12: not valid JSON"):
        load_beir(folder)

    folder = toy_beir(tmp_path / "dup")
    with (folder / "corpus.jsonl").open("a", encoding="utf-8") as handle:
        handle.write(json.dumps({"_id": "d0", "text": "again"}) + "\n")
    with pytest.raises(
        BeirFormatError, match=r"corpus\.jsonl:41: duplicate _id 'd0' \(first seen on line 1\)"
    ):
        load_beir(folder)

    folder = toy_beir(tmp_path / "noqrels")
    for path in (folder / "qrels").iterdir():
        path.unlink()
    (folder / "qrels").rmdir()
    with pytest.raises(BeirFormatError, match="no qrels/ folder"):
        load_beir(folder)

    folder = toy_beir(tmp_path / "nosplit")
    with pytest.raises(BeirFormatError, match=r"no dev\.tsv.*splits found: \['test'\]"):
        load_beir(folder, split="dev")

    folder = toy_beir(tmp_path / "badscore")
    with (folder / "qrels" / "test.tsv").open("a", encoding="utf-8") as handle:
        handle.write("q1\td1\thigh\n")
    with pytest.raises(BeirFormatError, match=r"test\.tsv:13: field 'score'"):
        load_beir(folder)


def test_qrels_pointing_at_absent_documents_error_or_are_counted(tmp_path: Path) -> None:
    folder = toy_beir(tmp_path / "absent")
    with (folder / "qrels" / "test.tsv").open("a", encoding="utf-8") as handle:
        handle.write("q1\tghost-doc\t1\nghost-query\td1\t1\n")
    with pytest.raises(BeirFormatError, match=r"test\.tsv:13: corpus-id 'ghost-doc' is not in corpus\.jsonl"):
        load_beir(folder)
    data = load_beir(folder, on_missing="skip")
    assert data.skipped_qrels == 2
    assert data.qrels["q1"] == {"d1": 1}
    assert "ghost-query" not in data.queries


def test_nano_benchmark_keeps_judged_documents_and_is_deterministic(tmp_path: Path) -> None:
    source = toy_beir(tmp_path / "toy")
    first = build_nano_benchmark(source, tmp_path / "nano_a", n_queries=4, n_documents=12, seed=3)
    again = build_nano_benchmark(source, tmp_path / "nano_b", n_queries=4, n_documents=12, seed=3)
    assert again.n_documents == first.n_documents
    other = build_nano_benchmark(source, tmp_path / "nano_c", n_queries=4, n_documents=12, seed=4)

    data = load_nano_benchmark(tmp_path / "nano_a", "toy")
    assert first.split_name == "NanoToy" and first.n_queries == 4 and first.n_documents == 12
    assert len(data.queries) == 4 and len(data.corpus) == 12
    for qid, judged in data.qrels.items():
        assert qid in data.queries
        assert set(judged) <= set(data.corpus)  # every judged document is in the sampled corpus
    # TF-IDF hard negatives: only the topic documents share a word ("facts") with the queries, so the
    # hard negatives are unjudged topic documents, not fillers.
    assert first.n_hard_negatives == 4  # half of the 8 free slots (hard_negative_ratio=0.5)
    judged_docs = {doc for judged in data.qrels.values() for doc in judged}
    unjudged_topics = [d for d in data.corpus if d.startswith("d") and d not in judged_docs]
    assert len(unjudged_topics) >= first.n_hard_negatives

    for subset in ("corpus", "queries", "qrels"):
        table_a = pq.read_table(tmp_path / "nano_a" / subset / "NanoToy.parquet").to_pydict()
        table_b = pq.read_table(tmp_path / "nano_b" / subset / "NanoToy.parquet").to_pydict()
        assert table_a == table_b
    other_queries = load_nano_benchmark(tmp_path / "nano_c", "toy").queries
    assert set(other_queries) != set(data.queries) or other.n_documents != first.n_documents


def test_nano_folder_layout_is_the_hub_layout(tmp_path: Path) -> None:
    """Several benchmarks share a folder; the README's YAML lists each as a split of corpus/queries/qrels."""
    source = load_beir(toy_beir(tmp_path / "toy"))
    build_nano_benchmark(source, tmp_path / "nano", n_queries=3, n_documents=8, name="scifact")
    build_nano_benchmark(source, tmp_path / "nano", n_queries=2, n_documents=6, name="my sample-2")
    assert list_nano_benchmarks(tmp_path / "nano") == ["my sample-2", "scifact"]
    readme = (tmp_path / "nano" / "README.md").read_text(encoding="utf-8")
    for subset in ("corpus", "queries", "qrels"):
        assert f"- config_name: {subset}" in readme
        assert f"path: {subset}/NanoSciFact.parquet" in readme
        assert f"path: {subset}/NanoMySample2.parquet" in readme
    assert not list((tmp_path / "nano").rglob("*.tmp"))  # atomic writes leave no temporaries
    assert nano_split_name("../../etc") == "NanoEtc"  # a name cannot leave the folder


def test_nano_builder_rejects_bad_arguments(tmp_path: Path) -> None:
    data = BeirData(corpus={"d": "text"}, queries={"q": "query"}, qrels={"q": {"d": 0}}, name="none")
    with pytest.raises(ValueError, match="n_queries"):
        build_nano_benchmark(data, tmp_path / "n", n_queries=0)
    with pytest.raises(BeirFormatError, match="no query has a relevant document"):
        build_nano_benchmark(data, tmp_path / "n")
    with pytest.raises(BeirFormatError, match="not found"):
        load_nano_benchmark(tmp_path, "missing")


@pytest.mark.shared_data
def test_nano_from_real_scifact(shared_data: Path, tmp_path: Path) -> None:
    info = build_nano_benchmark(
        shared_data / "scifact", tmp_path / "nano", n_queries=30, n_documents=300, seed=0
    )
    data = load_nano_benchmark(tmp_path / "nano", "scifact")
    full = load_beir(shared_data / "scifact", "test")
    assert info.n_queries == 30 and len(data.corpus) == 300
    assert set(data.queries) <= set(full.queries)
    assert all(data.corpus[d] == full.corpus[d] for d in data.corpus)
    assert all(set(full.qrels[q]) <= set(data.corpus) for q in data.queries)


@pytest.mark.shared_data
def test_real_arguana_has_absent_qrels(shared_data: Path) -> None:
    with pytest.raises(BeirFormatError, match=r"arguana/qrels/test\.tsv:\d+: corpus-id"):
        load_beir(shared_data / "arguana", "test")
    assert load_beir(shared_data / "arguana", "test", on_missing="skip").skipped_qrels == 5
