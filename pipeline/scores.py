"""MaxSim scoring between queries and documents, on sentence-transformers' ``maxsim`` kernels.

Example:
    >>> import torch
    >>> from pipeline.scores import colbert_scores
    >>> q = [torch.eye(2)]                       # one query, two unit token vectors
    >>> d = [torch.eye(2), torch.eye(2)[:1]]     # two documents
    >>> colbert_scores(q, d).tolist()
    [[2.0, 1.0]]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from sentence_transformers.util.similarity import maxsim, maxsim_pairwise

EmbeddingsLike = Sequence[np.ndarray] | Sequence[torch.Tensor] | np.ndarray | torch.Tensor


def as_tensors(embeddings: Any, *, argument: str, dim: int | None = None) -> list[torch.Tensor]:
    """Per-text embeddings as float32 2-D tensors, checking shapes; errors name ``argument`` and the index."""
    if isinstance(embeddings, np.ndarray | torch.Tensor) and embeddings.ndim == 2:
        embeddings = [embeddings]
    tensors: list[torch.Tensor] = []
    for index, item in enumerate(embeddings):
        tensor = torch.as_tensor(np.asarray(item) if not isinstance(item, torch.Tensor) else item)
        if tensor.ndim != 2:
            raise ValueError(
                f"{argument}[{index}] must be a 2-D (tokens, dim) array, got shape {tuple(tensor.shape)}"
            )
        if tensor.shape[0] == 0:
            raise ValueError(f"{argument}[{index}] is empty (0 tokens)")
        if dim is not None and tensor.shape[1] != dim:
            raise ValueError(f"{argument}[{index}] has dimension {tensor.shape[1]}, expected {dim}")
        dim = int(tensor.shape[1])
        tensors.append(tensor.float())
    return tensors


def _queries_and_documents(
    queries_embeddings: EmbeddingsLike, documents_embeddings: EmbeddingsLike
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    queries = as_tensors(queries_embeddings, argument="queries_embeddings")
    if not queries:
        raise ValueError("queries_embeddings is empty")
    documents = as_tensors(documents_embeddings, argument="documents_embeddings", dim=queries[0].shape[1])
    return queries, documents


def colbert_scores(
    queries_embeddings: EmbeddingsLike,
    documents_embeddings: EmbeddingsLike,
    device: str | torch.device | None = None,
) -> torch.Tensor:
    """All-pairs MaxSim: a ``(n_queries, n_documents)`` tensor of scores."""
    queries, documents = _queries_and_documents(queries_embeddings, documents_embeddings)
    return maxsim(queries, documents, device=device).cpu()


def colbert_scores_pairwise(
    queries_embeddings: EmbeddingsLike,
    documents_embeddings: EmbeddingsLike,
    device: str | torch.device | None = None,
) -> torch.Tensor:
    """MaxSim of each query with the document at the same position: a ``(n,)`` tensor."""
    queries, documents = _queries_and_documents(queries_embeddings, documents_embeddings)
    if len(queries) != len(documents):
        raise ValueError(
            f"queries_embeddings has {len(queries)} items but documents_embeddings has {len(documents)}"
        )
    return maxsim_pairwise(queries, documents, device=device).cpu()
