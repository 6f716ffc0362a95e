"""Rerank candidate documents of each query with MaxSim, without an index.

Example:
    >>> import numpy as np
    >>> from pipeline import rank
    >>> q = [np.eye(2, dtype=np.float32)]
    >>> d = [[np.eye(2, dtype=np.float32)[:1], np.eye(2, dtype=np.float32)]]
    >>> rank.rerank(documents_ids=[["a", "b"]], queries_embeddings=q, documents_embeddings=d)
    [[{'id': 'b', 'score': 2.0}, {'id': 'a', 'score': 1.0}]]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypedDict

import torch

from pipeline.scores import as_tensors, colbert_scores

__all__ = ["RerankResult", "rerank", "score_xtr"]


class RerankResult(TypedDict):
    """One ranked document: its ``id`` (as given) and its ``score`` (PyLate's type)."""

    id: int | str
    score: float


def rerank(
    documents_ids: Sequence[Sequence[Any]],
    queries_embeddings: Any,
    documents_embeddings: Sequence[Any],
    device: str | torch.device | None = None,
) -> list[list[RerankResult]]:
    """Sort each query's candidates by MaxSim score, best first.

    Args:
        documents_ids: One list of candidate ids per query.
        queries_embeddings: One ``(tokens, dim)`` array per query.
        documents_embeddings: One list of ``(tokens, dim)`` arrays per query, aligned with ``documents_ids``.
        device: Where to score (``None``: where the embeddings are).

    Returns:
        One list of ``{"id", "score"}`` per query, sorted by decreasing score.
    """
    queries = as_tensors(queries_embeddings, argument="queries_embeddings")
    if not (len(documents_ids) == len(queries) == len(documents_embeddings)):
        raise ValueError(
            "documents_ids, queries_embeddings and documents_embeddings must have one entry per query: got "
            f"{len(documents_ids)}, {len(queries)} and {len(documents_embeddings)}"
        )
    dim = queries[0].shape[1] if queries else None
    results: list[list[RerankResult]] = []
    for index, (query, ids, candidates) in enumerate(
        zip(queries, documents_ids, documents_embeddings, strict=True)
    ):
        if len(ids) != len(candidates):
            raise ValueError(
                f"documents_ids[{index}] has {len(ids)} ids but documents_embeddings[{index}] has "
                f"{len(candidates)} embeddings"
            )
        if len(ids) == 0:
            results.append([])
            continue
        documents = as_tensors(candidates, argument=f"documents_embeddings[{index}]", dim=dim)
        scores = colbert_scores([query], documents, device=device)[0].tolist()
        order = sorted(range(len(ids)), key=lambda i: scores[i], reverse=True)
        results.append([RerankResult(id=ids[i], score=float(scores[i])) for i in order])
    return results


def score_xtr(
    query_doc_ids: Sequence[Sequence[Any]],
    query_scores: Sequence[Sequence[float]],
    k: int,
    device: str = "cpu",
) -> list[RerankResult]:
    """XTR scoring of one query from its token-level retrieval, without the documents' embeddings.

    Args:
        query_doc_ids: For each query token, the ids of the documents owning its retrieved tokens.
        query_scores: For each query token, the similarity of each retrieved token (higher is better).
        k: How many documents to return.
        device: Where to compute.

    A document's score sums, over query tokens, its best retrieved token's similarity; a query token that
    retrieved none of its tokens contributes that query token's lowest retrieved similarity (XTR's
    min imputation). Returns the top ``k`` as :class:`RerankResult`, best first.

    Example:
        >>> [r["id"] for r in score_xtr([["a", "b"], ["b", "c"]], [[0.9, 0.7], [0.9, 0.6]], k=3)]
        ['b', 'a', 'c']
    """
    if len(query_doc_ids) != len(query_scores):
        raise ValueError(
            "query_doc_ids and query_scores must have the same number of query tokens: "
            f"{len(query_doc_ids)} and {len(query_scores)}"
        )
    for token, (ids, values) in enumerate(zip(query_doc_ids, query_scores, strict=True)):
        if len(ids) != len(values):
            raise ValueError(
                "each query token needs matching document IDs and scores lengths: "
                f"query token {token} has {len(ids)} document ids but {len(values)} scores"
            )
    positions: dict[Any, int] = {}
    rows, columns, values = [], [], []
    for token, (ids, token_scores) in enumerate(zip(query_doc_ids, query_scores, strict=True)):
        for document_id, score in zip(ids, token_scores, strict=True):
            rows.append(positions.setdefault(document_id, len(positions)))
            columns.append(token)
            values.append(float(score))
    if not positions:
        return []
    n_tokens = len(query_doc_ids)
    lowest = torch.full((len(positions), n_tokens), float("-inf"), device=device)
    flat = lowest.view(-1)
    index = torch.tensor(rows, device=device) * n_tokens + torch.tensor(columns, device=device)
    flat.scatter_reduce_(0, index, torch.tensor(values, device=device), reduce="amax", include_self=True)
    imputed = torch.tensor([min(s) if len(s) else 0.0 for s in query_scores], device=device)
    per_token = torch.where(torch.isneginf(lowest), imputed.expand_as(lowest), lowest)
    totals = per_token.sum(dim=1)
    top = torch.topk(totals, min(int(k), len(positions)))
    ids = list(positions)
    return [
        RerankResult(id=ids[i], score=float(s))
        for i, s in zip(top.indices.tolist(), top.values.tolist(), strict=True)
    ]
