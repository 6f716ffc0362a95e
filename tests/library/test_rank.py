"""MaxSim reranking against a brute-force computation, and its input errors."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from pipeline import rank
from pipeline.scores import as_tensors, colbert_scores, colbert_scores_pairwise


def brute_force_maxsim(query: np.ndarray, document: np.ndarray) -> float:
    return float(sum(max(float(q @ d) for d in document) for q in query))


def random_embeddings(rng: np.random.Generator, tokens: int, dim: int = 16) -> np.ndarray:
    matrix = rng.normal(size=(tokens, dim)).astype(np.float32)
    return matrix / np.linalg.norm(matrix, axis=1, keepdims=True)


def test_rerank_order_and_scores_match_brute_force():
    rng = np.random.default_rng(0)
    queries = [random_embeddings(rng, 6), random_embeddings(rng, 4)]
    documents = [
        [random_embeddings(rng, n) for n in (3, 9, 5, 1)],
        [random_embeddings(rng, n) for n in (7, 2)],
    ]
    ids = [["a", "b", "c", "d"], [10, 20]]
    ranked = rank.rerank(documents_ids=ids, queries_embeddings=queries, documents_embeddings=documents)
    for query, candidates, candidate_ids, result in zip(queries, documents, ids, ranked, strict=True):
        expected = sorted(
            (
                (brute_force_maxsim(query, doc), doc_id)
                for doc, doc_id in zip(candidates, candidate_ids, strict=True)
            ),
            reverse=True,
        )
        assert [r["id"] for r in result] == [doc_id for _, doc_id in expected]
        np.testing.assert_allclose([r["score"] for r in result], [s for s, _ in expected], rtol=1e-5)


def test_rerank_with_the_model_puts_the_matching_document_first(colbert_model):
    queries = ["the cat sat on the mat", "quarterly revenue of the company"]
    documents = [
        ["stock markets fell sharply", "a cat sat on a mat"],
        ["the company revenue grew this quarter"],
    ]
    q = colbert_model.encode(queries, is_query=True)
    d = colbert_model.encode(documents, is_query=False)
    ranked = rank.rerank(documents_ids=[[1, 2], [3]], queries_embeddings=q, documents_embeddings=d)
    assert ranked[0][0]["id"] == 2
    assert ranked[1] == [{"id": 3, "score": pytest.approx(brute_force_maxsim(q[1], d[1][0]), rel=1e-5)}]


def test_scores_all_pairs_and_pairwise_agree():
    rng = np.random.default_rng(1)
    queries = [random_embeddings(rng, 3), random_embeddings(rng, 5)]
    documents = [random_embeddings(rng, 4), random_embeddings(rng, 2)]
    matrix = colbert_scores(queries, documents)
    assert matrix.shape == (2, 2)
    for i, query in enumerate(queries):
        for j, document in enumerate(documents):
            assert matrix[i, j].item() == pytest.approx(brute_force_maxsim(query, document), rel=1e-5)
    torch.testing.assert_close(colbert_scores_pairwise(queries, documents), torch.diagonal(matrix))


def test_mismatched_ids_and_embeddings_name_the_argument_and_index():
    rng = np.random.default_rng(2)
    q = [random_embeddings(rng, 3)]
    with pytest.raises(ValueError, match=r"documents_ids\[0\] has 2 ids but documents_embeddings\[0\] has 1"):
        rank.rerank(
            documents_ids=[[1, 2]], queries_embeddings=q, documents_embeddings=[[random_embeddings(rng, 2)]]
        )
    with pytest.raises(ValueError, match="one entry per query"):
        rank.rerank(
            documents_ids=[[1], [2]], queries_embeddings=q, documents_embeddings=[[random_embeddings(rng, 2)]]
        )


def test_empty_query_and_wrong_dimension_are_errors():
    rng = np.random.default_rng(3)
    doc = [[random_embeddings(rng, 2)]]
    with pytest.raises(ValueError, match=r"queries_embeddings\[0\] is empty"):
        rank.rerank(
            documents_ids=[[1]], queries_embeddings=[np.zeros((0, 16), np.float32)], documents_embeddings=doc
        )
    with pytest.raises(ValueError, match=r"documents_embeddings\[0\]\[1\] has dimension 8, expected 16"):
        rank.rerank(
            documents_ids=[[1, 2]],
            queries_embeddings=[random_embeddings(rng, 3)],
            documents_embeddings=[[random_embeddings(rng, 2), random_embeddings(rng, 2, dim=8)]],
        )


def test_read_only_arrays_are_scored_without_a_warning_and_left_untouched():
    # A memory-mapped embeddings store hands out read-only arrays; torch warns when it wraps one.
    rng = np.random.default_rng(4)
    query, document = random_embeddings(rng, 3), random_embeddings(rng, 5)
    frozen = [array.copy() for array in (query, document)]
    for array in frozen:
        array.flags.writeable = False
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tensors = as_tensors(frozen, argument="documents_embeddings")
        score = colbert_scores([frozen[0]], [frozen[1]])
    assert [t.dtype for t in tensors] == [torch.float32, torch.float32]
    assert score.item() == pytest.approx(brute_force_maxsim(query, document), rel=1e-5)
    tensors[0].add_(1.0)  # the tensors are copies: the caller's arrays stay as they were
    np.testing.assert_array_equal(frozen[0], query)
