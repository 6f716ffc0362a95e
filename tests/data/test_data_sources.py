"""The generated sample and the local readers: determinism, no leaks, errors with file and line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.data.readers import DataFormatError, read_id_texts, read_kd, read_triplets
from pipeline.data.sample import RELATIONS, generate_sample


def test_sample_is_deterministic_for_a_seed_and_differs_across_seeds():
    a = generate_sample(n_train_entities=6, n_eval_entities=3, n_distractors=5, seed=1)
    b = generate_sample(n_train_entities=6, n_eval_entities=3, n_distractors=5, seed=1)
    c = generate_sample(n_train_entities=6, n_eval_entities=3, n_distractors=5, seed=2)
    assert a == b
    assert a.train_triplets != c.train_triplets


def test_sample_shapes_and_held_out_entities_never_reach_training():
    sample = generate_sample(
        n_train_entities=6, n_eval_entities=3, n_distractors=5, negatives_per_query=2, seed=0
    )
    assert len(sample.train_triplets) == 6 * len(RELATIONS) * 2
    assert len(sample.eval_queries) == 3 * len(RELATIONS)
    assert len(sample.corpus) == 3 * len(RELATIONS) * 2 + 5  # a fact and a decoy per question, 5 distractors
    training_text = " ".join(" ".join(t.values()) for t in sample.train_triplets)
    for query in sample.eval_queries.values():
        assert query not in training_text
    for qid, judged in sample.eval_qrels.items():
        [doc] = judged
        # The judged document is about the organisation the question names ("Velmora Labs ...").
        entity = " ".join(sample.corpus[doc].split()[:2])
        assert entity in sample.eval_queries[qid]


def write_jsonl(path: Path, rows: list[object]) -> Path:
    path.write_text("".join((row if isinstance(row, str) else json.dumps(row)) + "\n" for row in rows))
    return path


def test_triplets_reader_accepts_numbered_negatives_and_names_bad_lines(tmp_path):
    good = {"query": "q", "positive": "p", "negative_1": "n1", "negative_2": "n2"}
    rows, dropped = read_triplets(write_jsonl(tmp_path / "ok.jsonl", [good]))
    assert rows == [{"query": "q", "positive": "p", "negative_1": "n1", "negative_2": "n2"}] and dropped == 0
    bad = write_jsonl(tmp_path / "bad.jsonl", [good, {"query": "q2", "negative": "n"}, "{not json"])
    with pytest.raises(DataFormatError, match=r"bad.jsonl:2: field 'positive' is missing"):
        read_triplets(bad)
    no_negative = write_jsonl(tmp_path / "noneg.jsonl", [{"query": "q", "positive": "p", "negatives": []}])
    with pytest.raises(DataFormatError, match=r"noneg.jsonl:1: field 'negatives' must be a non-empty list"):
        read_triplets(no_negative)
    broken = write_jsonl(tmp_path / "broken.jsonl", [good, "{not json"])
    with pytest.raises(DataFormatError, match=r"broken.jsonl:2: not valid JSON"):
        read_triplets(broken)
    rows, dropped = read_triplets(
        write_jsonl(tmp_path / "mixed.jsonl", [good, {"query": "x"}]), on_bad_rows="drop"
    )
    assert len(rows) == 1 and dropped == 1


def test_triplets_reader_reads_csv_with_line_numbers(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("query,positive,negative\nq,p,n\nq2,,n\n")
    with pytest.raises(DataFormatError, match=r"t.csv:3: field 'positive' is missing"):
        read_triplets(path)


def test_kd_reader_checks_lengths_scores_and_ids(tmp_path):
    queries = {"1": "query one"}
    documents = {"a": "doc a", "b": "doc b"}
    ok = {"query_id": 1, "document_ids": ["a", "b"], "scores": [0.9, 0.1]}
    rows, counts = read_kd(write_jsonl(tmp_path / "kd.jsonl", [ok]), queries, documents)
    assert rows[0]["document_ids"] == ["a", "b"] and counts["ids_resolved"] == 3
    cases = [
        (
            {"query_id": 1, "document_ids": ["a", "b"], "scores": [0.9]},
            r"'document_ids' has 2 entries but 'scores' has 1",
        ),
        ({"query_id": 1, "document_ids": ["a"], "scores": [float("nan")]}, r"scores\[0\] is nan"),
        (
            {"query_id": 1, "document_ids": ["a", "zzz"], "scores": [1, 2]},
            r"document id 'zzz' is not in the documents",
        ),
        ({"query_id": 7, "document_ids": ["a"], "scores": [1]}, r"query_id '7' is not in the queries table"),
    ]
    for index, (row, message) in enumerate(cases):
        path = write_jsonl(tmp_path / f"bad{index}.jsonl", [ok, row])
        with pytest.raises(DataFormatError, match=rf"bad{index}.jsonl:2: {message}"):
            read_kd(path, queries, documents)
    rows, counts = read_kd(tmp_path / "bad2.jsonl", queries, documents, on_bad_rows="drop")
    assert len(rows) == 1 and counts["rows_dropped"] == 1


def test_id_tables_reject_duplicates(tmp_path):
    path = write_jsonl(tmp_path / "q.jsonl", [{"query_id": 1, "text": "a"}, {"query_id": 1, "text": "b"}])
    with pytest.raises(DataFormatError, match=r"q.jsonl:2: duplicate query_id '1'"):
        read_id_texts(path, "query_id")
