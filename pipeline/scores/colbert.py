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

import warnings
from collections.abc import Callable
from enum import Enum
from typing import Any

import torch
from sentence_transformers.multi_vector_encoder.scoring import colbert_kd_scores as _st_colbert_kd_scores
from sentence_transformers.util.similarity import maxsim, maxsim_pairwise

from pipeline.scores.inputs import EmbeddingsLike, as_tensors
from pipeline.utils import convert_to_tensor

__all__ = [
    "ColBERTScores",
    "SimilarityFunction",
    "colbert_kd_scores",
    "colbert_scores",
    "colbert_scores_pairwise",
]


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
    queries_mask: torch.Tensor | None = None,
    documents_mask: torch.Tensor | None = None,
    backend: str | None = None,
    *,
    device: str | torch.device | None = None,
) -> torch.Tensor:
    """All-pairs MaxSim: a ``(n_queries, n_documents)`` tensor of scores.

    PyLate's signature. Without masks the inputs may be ragged (a list of ``(tokens, dim)`` arrays) and
    each query token takes its best *real* document token. With ``queries_mask`` / ``documents_mask``
    (padded 3-D inputs, as a training batch has them) masked positions score 0, exactly as PyLate computes
    it. ``backend`` is PyLate's kernel choice: ``"flash"`` / ``"lik"`` are not shipped here (a warning says
    so) and the torch path runs.
    """
    _check_backend(backend)
    if queries_mask is not None or documents_mask is not None:
        return _masked_scores(queries_embeddings, documents_embeddings, queries_mask, documents_mask)
    queries, documents = _queries_and_documents(queries_embeddings, documents_embeddings)
    return maxsim(queries, documents, device=device).cpu()


def colbert_scores_pairwise(
    queries_embeddings: EmbeddingsLike,
    documents_embeddings: EmbeddingsLike,
    backend: str | None = None,
    *,
    device: str | torch.device | None = None,
) -> torch.Tensor:
    """MaxSim of each query with the document at the same position: a ``(n,)`` tensor."""
    _check_backend(backend)
    queries, documents = _queries_and_documents(queries_embeddings, documents_embeddings)
    if len(queries) != len(documents):
        raise ValueError(
            f"queries_embeddings has {len(queries)} items but documents_embeddings has {len(documents)}"
        )
    return maxsim_pairwise(queries, documents, device=device).cpu()


# ---------------------------------------------------------------------------------------------- PyLate's API
BACKENDS = ("auto", "torch", "flash", "lik")


def _check_backend(backend: str | None) -> None:
    """PyLate's ``backend`` argument: the accelerated kernels are not shipped, so torch runs."""
    if backend is None:
        return
    if str(backend).lower() not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}; got {backend!r}")
    if str(backend).lower() in ("flash", "lik"):
        warnings.warn(
            f"scoring backend {backend!r} is not available in pipeline: the torch MaxSim runs instead",
            UserWarning,
            stacklevel=3,
        )


def _masked_scores(
    queries_embeddings: Any,
    documents_embeddings: Any,
    queries_mask: Any,
    documents_mask: Any,
) -> torch.Tensor:
    queries = convert_to_tensor(queries_embeddings).float()
    documents = convert_to_tensor(documents_embeddings).float()
    if queries.ndim != 3 or documents.ndim != 3:
        raise ValueError(
            "with masks, queries_embeddings and documents_embeddings must be padded 3-D tensors, got "
            f"{tuple(queries.shape)} and {tuple(documents.shape)}"
        )
    scores = torch.einsum("ash,bth->abst", queries, documents)
    if queries_mask is not None:
        scores = scores * convert_to_tensor(queries_mask).to(scores).unsqueeze(1).unsqueeze(3)
    if documents_mask is not None:
        scores = scores * convert_to_tensor(documents_mask).to(scores).unsqueeze(0).unsqueeze(2)
    return scores.max(dim=-1).values.sum(dim=-1)


def colbert_kd_scores(
    queries_embeddings: Any,
    documents_embeddings: Any,
    queries_mask: torch.Tensor | None = None,
    documents_mask: torch.Tensor | None = None,
    backend: str | None = None,
) -> torch.Tensor:
    """MaxSim of each query with its own ``n_ways`` candidates: ``(batch, n_ways)`` scores.

    PyLate's signature, on sentence-transformers' ``colbert_kd_scores``. Queries are ``(batch, q_tokens,
    dim)``, documents ``(batch, n_ways, d_tokens, dim)``; masked document tokens never win a max and masked
    query tokens add nothing.
    """
    _check_backend(backend)
    return _st_colbert_kd_scores(
        convert_to_tensor(queries_embeddings),
        convert_to_tensor(documents_embeddings),
        queries_mask=queries_mask,
        documents_mask=documents_mask,
    )


class ColBERTScores:
    """Contrastive MaxSim over stacked candidate groups, PyLate's class.

    Called with ``(Q, q_tokens, dim)`` queries and ``(D, N, d_tokens, dim)`` documents (``N`` candidates per
    group), returns ``(Q, D * N)`` scores in query-major order: ``scores[i, j * N + k]`` is query ``i``
    against the ``k``-th candidate of group ``j`` (with ``Q == D`` the positive of query ``i`` is column
    ``i * N``). One candidate slot is scored at a time, so a single ``(Q, D, q_tokens, d_tokens)``
    intermediate is alive at once.

    Example:
        >>> import torch
        >>> ColBERTScores()(torch.ones(2, 3, 4), torch.ones(2, 5, 6, 4)).shape
        torch.Size([2, 10])
    """

    def __call__(
        self,
        queries_embeddings: Any,
        documents_embeddings: Any,
        queries_mask: torch.Tensor | None = None,
        documents_mask: torch.Tensor | None = None,
        backend: str | None = None,
    ) -> torch.Tensor:
        queries = convert_to_tensor(queries_embeddings)
        documents = convert_to_tensor(documents_embeddings)
        if documents.ndim != 4:
            raise ValueError(
                f"documents_embeddings must be (groups, N, tokens, dim), got {tuple(documents.shape)}"
            )
        groups, n_candidates = documents.shape[:2]
        per_slot = []
        for slot in range(n_candidates):
            slot_mask = documents_mask[:, slot] if documents_mask is not None else None
            if queries_mask is None and slot_mask is None:
                per_slot.append(colbert_scores(queries, documents[:, slot], backend=backend))
            else:
                per_slot.append(_masked_scores(queries, documents[:, slot], queries_mask, slot_mask))
        return torch.stack(per_slot, dim=2).reshape(-1, groups * n_candidates)


class SimilarityFunction(Enum):
    """PyLate's score-function names: only ``MaxSim`` (``SimilarityFunction.MAXSIM``).

    Example:
        >>> SimilarityFunction.possible_values()
        ['MaxSim']
        >>> SimilarityFunction.to_similarity_fn("MaxSim") is colbert_scores
        True
    """

    MAXSIM = "MaxSim"

    @staticmethod
    def to_similarity_fn(similarity_function: str | SimilarityFunction) -> Callable[..., torch.Tensor]:
        """The all-pairs scoring function for a name or member."""
        if SimilarityFunction(similarity_function) is SimilarityFunction.MAXSIM:
            return colbert_scores
        raise ValueError(  # pragma: no cover - the enum has one member
            f"unsupported similarity function {similarity_function!r}: {SimilarityFunction.possible_values()}"
        )

    @staticmethod
    def to_similarity_pairwise_fn(
        similarity_function: str | SimilarityFunction,
    ) -> Callable[..., torch.Tensor]:
        """The pairwise (same-position) scoring function for a name or member."""
        if SimilarityFunction(similarity_function) is SimilarityFunction.MAXSIM:
            return colbert_scores_pairwise
        raise ValueError(  # pragma: no cover - the enum has one member
            f"unsupported similarity function {similarity_function!r}: {SimilarityFunction.possible_values()}"
        )

    @staticmethod
    def possible_values() -> list[str]:
        return [member.value for member in SimilarityFunction]
