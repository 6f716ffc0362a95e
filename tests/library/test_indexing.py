"""index_corpus (chunked, all-or-nothing), exact MaxSim search and recall."""

from __future__ import annotations

import doctest

import numpy as np
import pytest
import torch

from pipeline import indexes
from pipeline.indexes import indexing
from pipeline.indexes.indexing import exact_search, index_corpus, recall_at_k
from pipeline.scores import colbert_scores

TOPICS = ["enzymes", "volcanoes", "sonnets", "tariffs", "glaciers", "neurons"]
TEXTS = [f"note {i} about {TOPICS[i % 6]} and {TOPICS[(i * 5) % 6]}, item {i * 11 % 17}" for i in range(30)]
IDS = [f"t{i}" for i in range(30)]


class ExplodingModel:
    """Fails the test if anything gets encoded: validation must happen first."""

    def encode(self, *args, **kwargs):
        raise AssertionError("encode was called before the input was validated")


def exact_voyager(folder, name: str) -> indexes.Voyager:
    # Every document a candidate: a Voyager index that returns exact MaxSim results.
    return indexes.Voyager(index_folder=folder, index_name=name, k_token=100_000, show_progress=False)


@pytest.fixture(scope="module")
def encoded(colbert_model):
    return colbert_model.encode(TEXTS, is_query=False), colbert_model.encode(TEXTS[:6], is_query=True)


def test_index_corpus_in_chunks_equals_one_shot(colbert_model, encoded, tmp_path):
    documents, queries = encoded
    index = exact_voyager(tmp_path, "chunked")
    stats = index_corpus(colbert_model, TEXTS, IDS, index, chunk_size=7, batch_size=4, show_progress=False)
    assert stats["documents"] == 30 and stats["chunks"] == 5
    assert stats["tokens"] == index.num_tokens == sum(len(d) for d in documents)
    assert stats["seconds"] > 0
    assert index.documents_ids == IDS
    # One committed version for the whole corpus, not one per chunk.
    assert [p.name for p in index.path.iterdir() if p.name.startswith("v")] == [index.stats()["version"]]
    expected = exact_search(queries, documents, IDS, k=5)
    results = index.search(queries, k=5)
    assert [[h["id"] for h in row] for row in results] == [[h["id"] for h in row] for row in expected]
    for row, reference in zip(results, expected, strict=True):
        assert [h["score"] for h in row] == pytest.approx([h["score"] for h in reference], rel=1e-4)


def test_index_corpus_accepts_generators_and_adds_to_an_existing_index(colbert_model, tmp_path):
    index = exact_voyager(tmp_path, "gen")
    index_corpus(colbert_model, TEXTS[:10], IDS[:10], index, chunk_size=4, show_progress=False)
    stats = index_corpus(
        colbert_model, (t for t in TEXTS[10:]), iter(IDS[10:]), index, chunk_size=8, show_progress=False
    )
    assert stats["documents"] == 20 and stats["chunks"] == 3
    assert index.documents_ids == IDS


def test_a_failure_mid_corpus_leaves_the_previous_index(colbert_model, tmp_path):
    index = exact_voyager(tmp_path, "partial")
    index_corpus(colbert_model, TEXTS[:5], IDS[:5], index, show_progress=False)
    version = index.stats()["version"]

    def texts():
        yield from TEXTS[5:15]
        raise OSError("disk went away")

    with pytest.raises(OSError, match="disk went away"):
        index_corpus(colbert_model, texts(), iter(IDS[5:]), index, chunk_size=4, show_progress=False)
    assert index.documents_ids == IDS[:5]
    reopened = exact_voyager(tmp_path, "partial")
    assert reopened.documents_ids == IDS[:5] and reopened.stats()["version"] == version


def test_bad_input_fails_before_encoding(tmp_path):
    index = exact_voyager(tmp_path, "bad")
    model = ExplodingModel()
    with pytest.raises(ValueError, match="documents has 3 texts but ids has 2 ids"):
        index_corpus(model, TEXTS[:3], IDS[:2], index)
    with pytest.raises(ValueError, match="documents is empty"):
        index_corpus(model, [], [], index)
    with pytest.raises(indexes.DuplicateDocumentIdError, match="more than once"):
        index_corpus(model, TEXTS[:2], ["a", "a"], index)
    with pytest.raises(ValueError, match="chunk_size"):
        index_corpus(model, TEXTS[:2], IDS[:2], index, chunk_size=0)
    with pytest.raises(ValueError, match="single string"):
        index_corpus(model, "one text", IDS[:1], index)
    assert index.num_documents == 0


def test_already_indexed_ids_and_non_text_documents_are_rejected(colbert_model, tmp_path):
    index = exact_voyager(tmp_path, "dups")
    index_corpus(colbert_model, TEXTS[:3], IDS[:3], index, show_progress=False)
    with pytest.raises(indexes.DuplicateDocumentIdError, match="ids\\[1\\] = 't2'"):
        index_corpus(ExplodingModel(), TEXTS[3:5], ["t9", "t2"], index)
    with pytest.raises(ValueError, match="documents\\[1\\] is int"):
        index_corpus(colbert_model, ["fine", 5], ["x", "y"], index, show_progress=False)
    with pytest.raises(ValueError, match="zip"):
        index_corpus(colbert_model, iter(TEXTS[:3]), iter(["p", "q"]), index, show_progress=False)
    assert index.documents_ids == IDS[:3]


def test_exact_search_matches_colbert_scores_and_is_chunk_independent():
    rng = np.random.default_rng(0)
    documents = [rng.standard_normal((int(rng.integers(3, 9)), 8)).astype(np.float32) for _ in range(40)]
    queries = [rng.standard_normal((5, 8)).astype(np.float32) for _ in range(4)]
    ids = list(range(100, 140))
    scores = colbert_scores(queries, documents)
    top = torch.topk(scores, 6, dim=1)
    small = exact_search(queries, documents, ids, k=6, documents_batch_size=7)
    assert small == exact_search(queries, documents, ids, k=6, documents_batch_size=1000)
    for row, indices, values in zip(small, top.indices, top.values, strict=True):
        assert [hit["id"] for hit in row] == [ids[i] for i in indices.tolist()]
        assert [hit["score"] for hit in row] == pytest.approx(values.tolist())
    with pytest.raises(ValueError, match="documents_embeddings has 40 items, expected 39"):
        exact_search(queries, documents, ids[:39])


def test_recall_at_k():
    reference = [[{"id": "a"}, {"id": "b"}], [{"id": 1}, {"id": 2}]]
    assert recall_at_k(reference, reference, k=2) == 1.0
    assert recall_at_k([[{"id": "a"}, {"id": "x"}], [{"id": "1"}, {"id": 2}]], reference, k=2) == 0.5
    assert recall_at_k([[{"id": "b"}], [{"id": 2}]], reference, k=1) == 0.0
    with pytest.raises(ValueError, match="results has 1 queries but reference has 2"):
        recall_at_k(reference[:1], reference)


def test_docstring_example_runs():
    failures, _ = doctest.testmod(indexing)
    assert failures == 0
