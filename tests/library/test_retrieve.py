"""retrieve.ColBERT: batching, per-query subsets, result format, and the seed example."""

from __future__ import annotations

import doctest

import numpy as np
import pytest

from pipeline import indexes, retrieve


def unit_documents(n: int, seed: int, dim: int = 16) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    documents = []
    for _ in range(n):
        array = rng.standard_normal((int(rng.integers(4, 12)), dim)).astype(np.float32)
        documents.append(array / np.linalg.norm(array, axis=1, keepdims=True))
    return documents


@pytest.fixture(scope="module")
def retriever(module_tmp_path):
    # k_token above the token count makes every document a candidate: results are exact and deterministic.
    index = indexes.Voyager(
        index_folder=module_tmp_path,
        index_name="docs",
        k_token=10_000,
        show_progress=False,
    )
    documents = unit_documents(50, seed=0)
    index.add_documents(documents_ids=[f"d{i}" for i in range(50)], documents_embeddings=documents)
    return retrieve.ColBERT(index=index), documents


def test_batches_do_not_change_results(retriever):
    colbert, documents = retriever
    queries = unit_documents(23, seed=1)
    whole = colbert.retrieve(queries_embeddings=queries, k=7, batch_size=100)
    batched = colbert.retrieve(queries_embeddings=queries, k=7, batch_size=4)
    assert batched == whole
    assert len(whole) == 23
    for row in whole:
        assert len(row) == 7
        assert [hit["score"] for hit in row] == sorted((hit["score"] for hit in row), reverse=True)
    # A document used as its own query is its own best match.
    assert [row[0]["id"] for row in colbert.retrieve(documents[:5], k=1)] == [f"d{i}" for i in range(5)]


def test_per_query_subsets_follow_their_query_across_batches(retriever):
    colbert, documents = retriever
    queries = documents[:9]
    subsets = [[f"d{i}", f"d{(i + 1) % 50}", f"d{(i + 2) % 50}"] for i in range(9)]
    results = colbert.retrieve(queries, k=10, subset=subsets, batch_size=2)
    for i, (row, allowed) in enumerate(zip(results, subsets, strict=True)):
        assert {hit["id"] for hit in row} == set(allowed)
        assert row[0]["id"] == f"d{i}"
    shared = colbert.retrieve(queries, k=10, subset=["d40", "d41"], batch_size=2)
    assert all({hit["id"] for hit in row} == {"d40", "d41"} for row in shared)


def test_bad_arguments(retriever):
    colbert, documents = retriever
    with pytest.raises(TypeError, match=r"pipeline\.indexes index"):
        retrieve.ColBERT(index=object())
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="k must be a positive integer"):
            colbert.retrieve(documents[:2], k=bad)
    with pytest.raises(ValueError, match="batch_size"):
        colbert.retrieve(documents[:2], batch_size=0)
    # A bad query late in the list fails before anything is searched.
    with pytest.raises(ValueError, match=r"queries_embeddings\[2\] has dimension 8"):
        colbert.retrieve([*documents[:2], np.ones((3, 8), np.float32)])
    with pytest.raises(ValueError, match="subset has 1 lists but there are 2 queries"):
        colbert.retrieve(documents[:2], subset=[["d1"]])


def test_seed_example(colbert_model, tmp_path):
    """docs/indexes.md's example, with the offline model: one ranked list per query, ids from the index."""
    index = indexes.PLAID(index_folder=str(tmp_path / "pipeline-index"), index_name="index", override=True)
    documents_ids = ["1", "2", "3"]
    documents = [
        "ColBERT keeps one embedding per token and scores with late interaction.",
        "PLAID compresses token vectors with centroids and residuals.",
        "The pipeline trains, evaluates and indexes ColBERT models.",
    ]
    documents_embeddings = colbert_model.encode(documents, batch_size=32, is_query=False)
    index.add_documents(documents_ids=documents_ids, documents_embeddings=documents_embeddings)
    queries_embeddings = colbert_model.encode(
        ["query for document 3", "query for document 1"], batch_size=32, is_query=True
    )
    scores = retrieve.ColBERT(index=index).retrieve(queries_embeddings=queries_embeddings, k=10)
    assert len(scores) == 2
    for row in scores:
        assert sorted(hit["id"] for hit in row) == documents_ids
        assert [hit["score"] for hit in row] == sorted((hit["score"] for hit in row), reverse=True)


def test_docstring_example_runs():
    failures, _ = doctest.testmod(retrieve)
    assert failures == 0
