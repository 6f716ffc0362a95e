"""XTR training scores as PyLate 1.6 computes them (issue 19): checked against a slow loop written here."""

from __future__ import annotations

import copy

import pytest
import torch
from sentence_transformers.base.trainer import BaseTrainer

from pipeline import losses, scores, utils


def reference(queries, documents, k, queries_mask=None, documents_mask=None) -> torch.Tensor:
    """XTR by definition, one query token at a time: the token's k best document tokens over the whole
    batch are its retrieved set; a document gets the token's best retrieved similarity with it (0 when
    none of its tokens was retrieved or the best one is not positive); Z counts the positive ones."""
    n_queries, q_tokens, _ = queries.shape
    flat = documents.reshape(-1, *documents.shape[2:])
    mask = (
        documents_mask.reshape(len(flat), -1).bool()
        if documents_mask is not None
        else torch.ones(flat.shape[:2], dtype=torch.bool)
    )
    out = torch.zeros(n_queries, len(flat))
    for q in range(n_queries):
        per_token = torch.zeros(q_tokens, len(flat))
        for t in range(q_tokens):
            if queries_mask is not None and not queries_mask[q, t]:
                continue
            candidates = [
                (float(queries[q, t] @ flat[d, j]), d, j)
                for d in range(len(flat))
                for j in range(flat.shape[1])
                if mask[d, j]
            ]
            for similarity, d, _ in sorted(candidates, reverse=True)[:k]:
                per_token[t, d] = max(per_token[t, d], similarity)
        z = (per_token > 0).sum(dim=0).clamp(min=1).float()
        out[q] = per_token.sum(dim=0) / z
    return out


@pytest.fixture
def batch():
    generator = torch.Generator().manual_seed(7)
    queries = torch.randn(3, 4, 6, generator=generator)
    documents = torch.randn(3, 2, 5, 6, generator=generator)
    return queries, documents


def test_pylate_constructor_and_defaults() -> None:
    scorer = scores.XTRScores()
    assert (scorer.k, scorer.document_chunk_size) == (256, None)
    assert scores.xtr_scores.k == scores.xtr_kd_scores.k == 256
    assert scores.XTRScores(k=3, document_chunk_size=2).get_config_dict() == {
        "k": 3,
        "document_chunk_size": 2,
    }
    with pytest.raises(ValueError, match="k must be"):
        scores.XTRScores(k=0)


@pytest.mark.parametrize("k", [1, 4, 20, 1000])
def test_scores_equal_the_definition_query_major(batch, k) -> None:
    queries, documents = batch
    got = scores.XTRScores(k=k)(queries, documents)
    assert got.shape == (3, 6)  # query-major: column j * N + n
    torch.testing.assert_close(got, reference(queries, documents, k), rtol=1e-5, atol=1e-5)


def test_masked_tokens_are_never_retrieved_nor_counted(batch) -> None:
    queries, documents = batch
    # The best match of every query token is planted in a masked document token: it must not count.
    documents = documents.clone()
    documents[0, 0, 4] = 50 * queries[0].mean(dim=0)
    documents_mask = torch.ones(3, 2, 5)
    documents_mask[0, 0, 4] = 0
    queries_mask = torch.ones(3, 4)
    queries_mask[:, -1] = 0
    got = scores.XTRScores(k=4)(queries, documents, queries_mask=queries_mask, documents_mask=documents_mask)
    expected = reference(
        queries, documents, 4, queries_mask=queries_mask.bool(), documents_mask=documents_mask
    )
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_z_counts_only_the_query_tokens_that_retrieved_the_document() -> None:
    queries = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]]])  # the third token matches nothing
    documents = torch.tensor([[[[1.0, 0.0], [0.0, 0.5]]]])  # one document, two tokens
    # Token sums 1.0 + 0.5; only two tokens are positive: (1.0 + 0.5) / 2, not / 3.
    assert scores.XTRScores(k=2)(queries, documents).item() == pytest.approx(0.75)
    # A document that no query token retrieved scores 0, not NaN.
    assert scores.XTRScores(k=1)(-queries[:, :2], documents).item() == 0.0


def test_document_chunks_change_memory_not_scores(batch) -> None:
    queries, documents = batch
    queries = queries.clone().requires_grad_(True)
    whole = scores.XTRScores(k=5)(queries, documents)
    chunked = scores.XTRScores(k=5, document_chunk_size=4)(queries, documents)
    torch.testing.assert_close(whole, chunked)
    chunked.sum().backward()  # trainable: gradients flow through the retrieved similarities
    assert queries.grad is not None and queries.grad.abs().sum() > 0


def test_kd_scores_are_each_querys_own_documents(batch) -> None:
    queries, documents = batch
    full = scores.XTRScores(k=5)(queries, documents)
    kd = scores.XTRKDScores(k=5)(queries, documents)
    assert kd.shape == (3, 2)
    for i in range(3):
        torch.testing.assert_close(kd[i], full[i, 2 * i : 2 * i + 2])
    with pytest.raises(ValueError, match="one document group per query"):
        scores.XTRKDScores(k=5)(queries[:2], documents)


def test_bad_shapes_name_the_argument(batch) -> None:
    queries, documents = batch
    with pytest.raises(ValueError, match="documents_embeddings must be"):
        scores.XTRScores()(queries, documents[:, 0])
    with pytest.raises(ValueError, match="dimension"):
        scores.XTRScores()(queries[..., :4], documents)


def test_a_contrastive_loss_trains_on_xtr_scores(colbert_model) -> None:
    """PyLate's recipe, ``losses.Contrastive(model, score_metric=scores.XTRScores(k=...))``: one batch as the
    trainer hands it gives a finite loss with a gradient on the projection."""
    model = copy.deepcopy(colbert_model)  # the session model is shared: train a copy
    rows = [
        {"query": "what is xtr", "positive": "xtr retrieves tokens", "negative": "the weather is mild"},
        {"query": "late interaction", "positive": "colbert scores tokens", "negative": "a recipe for bread"},
    ]
    batch = utils.ColBERTCollator(tokenize_fn=model.tokenize)(rows)
    sentence_features, labels = BaseTrainer.collect_features(None, batch)  # type: ignore[arg-type]
    value = losses.Contrastive(model=model, score_metric=scores.XTRScores(k=16))(sentence_features, labels)
    value.backward()
    assert torch.isfinite(value)
    projection = next(p for n, p in model.named_parameters() if n.endswith("linear.weight"))
    assert projection.grad is not None and projection.grad.abs().sum() > 0


def test_score_xtr_refuses_misaligned_retrieval_naming_the_token() -> None:
    from pipeline import rank

    with pytest.raises(ValueError, match="same number of query tokens: 2 and 1"):
        rank.score_xtr([["a"], ["b"]], [[0.9]], k=2)
    with pytest.raises(ValueError, match="query token 1 has 2 document ids but 1 scores"):
        rank.score_xtr([["a"], ["b", "c"]], [[0.9], [0.5]], k=2)
