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
from typing import Any

import torch

from pipeline.scores import as_tensors, colbert_scores


def rerank(
    documents_ids: Sequence[Sequence[Any]],
    queries_embeddings: Any,
    documents_embeddings: Sequence[Any],
    device: str | torch.device | None = None,
) -> list[list[dict[str, Any]]]:
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
    results: list[list[dict[str, Any]]] = []
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
        results.append([{"id": ids[i], "score": float(scores[i])} for i in order])
    return results
