"""XTR training scores with PyLate 1.6's constructor and normalisation (``pipeline.scores`` re-exports them).

XTR (Lee et al., 2023) trains a late-interaction model so that a token-level index alone can rank
documents: in training, each query token keeps only its ``k`` best matches among *all* the batch's document
tokens (as an index lookup would), and a document is scored from those retrieved matches only.

PyLate 1.6 defines the score exactly (and its own tests check it), so code written against PyLate
depends on these details, which this module reproduces:

- ``XTRScores(k=256, document_chunk_size=None)``; called with queries ``(Q, q_tokens, dim)`` and documents
  ``(D, N, d_tokens, dim)``, it returns ``(Q, D * N)`` scores, query-major (``scores[i, j * N + n]`` is query
  ``i`` against the ``n``-th document of group ``j``);
- a query token's contribution to a document is its best *retrieved* similarity with that document's
  tokens, or 0 when none of them is among its top ``k``; masked document tokens are never retrieved and
  masked query tokens contribute 0;
- the sum over query tokens is divided by ``Z``, the number of query tokens whose contribution is positive
  (at least 1e-3, so a document nothing retrieved scores 0, not NaN).

sentence-transformers ships XTR scores too, but under another constructor (``top_k``, ``chunk_elements``)
and with another ``Z``, so PyLate's calls and numbers would not carry over; this is why they are not used.

Example:
    >>> import torch
    >>> queries = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])             # one query, two tokens
    >>> documents = torch.tensor([[[[1.0, 0.0]], [[0.0, 0.5]]]])        # one group of two one-token documents
    >>> XTRScores(k=1)(queries, documents).tolist()                     # each token retrieves one document
    [[1.0, 0.5]]
    >>> XTRKDScores(k=2)(queries, documents).shape                      # each query's own N documents
    torch.Size([1, 2])
"""

from __future__ import annotations

from typing import Any

import torch

from pipeline.utils import convert_to_tensor

__all__ = ["XTRKDScores", "XTRScores", "xtr_kd_scores", "xtr_scores"]

#: The floor of ``Z``: a document that no query token retrieved scores 0 instead of 0 / 0.
Z_FLOOR = 1e-3


class XTRScores:
    """XTR contrastive scores over in-batch documents with a global per-query-token top-``k``.

    Args:
        k: Document tokens each query token keeps, over all ``D * N * d_tokens`` tokens of the batch
            (PyLate's default 256). Larger than the number of document tokens: every token is kept.
        document_chunk_size: Score this many documents at a time before the global top-``k`` (bounds the
            similarity intermediate's peak at large batches; the result is the same). ``None``: all at once.
    """

    def __init__(self, k: int = 256, document_chunk_size: int | None = None) -> None:
        if k < 1:
            raise ValueError(f"XTRScores: k must be a positive integer, got {k}")
        if document_chunk_size is not None and document_chunk_size < 1:
            raise ValueError(
                f"XTRScores: document_chunk_size must be positive or None, got {document_chunk_size}"
            )
        self.k = int(k)
        self.document_chunk_size = document_chunk_size

    def get_config_dict(self) -> dict[str, Any]:
        """The settings, for loss configs and model cards."""
        return {"k": self.k, "document_chunk_size": self.document_chunk_size}

    def compile(self, *args: Any, **kwargs: Any) -> None:
        """Compile the scoring kernel with ``torch.compile`` (PyLate's method; arguments go to it)."""
        self._score = torch.compile(self._score, *args, **kwargs)  # type: ignore[method-assign]

    def __call__(
        self,
        queries_embeddings: Any,
        documents_embeddings: Any,
        queries_mask: torch.Tensor | None = None,
        documents_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``(Q, D * N)`` XTR scores of every query against every document of the batch."""
        queries = convert_to_tensor(queries_embeddings)
        documents = convert_to_tensor(documents_embeddings)
        if queries.ndim != 3:
            raise ValueError(f"queries_embeddings must be (Q, q_tokens, dim), got {tuple(queries.shape)}")
        if documents.ndim != 4:
            raise ValueError(
                f"documents_embeddings must be (D, N, d_tokens, dim), got {tuple(documents.shape)}"
            )
        if queries.shape[-1] != documents.shape[-1]:
            raise ValueError(
                f"queries have dimension {queries.shape[-1]} but documents have {documents.shape[-1]}"
            )
        return self._score(queries, documents, queries_mask, documents_mask)

    def _similarities(self, queries: torch.Tensor, documents: torch.Tensor, mask: torch.Tensor | None):
        """``(Q, q_tokens, n_docs, d_tokens)`` similarities; masked document tokens at the dtype's minimum."""
        similarities = torch.einsum("qsh,dth->qsdt", queries, documents)
        if mask is not None:
            hidden = ~mask.bool().to(similarities.device)[None, None]
            similarities = similarities.masked_fill(hidden, torch.finfo(similarities.dtype).min)
        return similarities

    def _score(
        self,
        queries: torch.Tensor,
        documents: torch.Tensor,
        queries_mask: torch.Tensor | None,
        documents_mask: torch.Tensor | None,
    ) -> torch.Tensor:
        n_queries, q_tokens, _ = queries.shape
        groups, n_ways, d_tokens, dim = documents.shape
        flat = documents.reshape(groups * n_ways, d_tokens, dim)
        flat_mask = documents_mask.reshape(groups * n_ways, d_tokens) if documents_mask is not None else None
        step = self.document_chunk_size or len(flat)
        parts = []
        for start in range(0, len(flat), step):
            chunk_mask = None if flat_mask is None else flat_mask[start : start + step]
            parts.append(self._similarities(queries, flat[start : start + step], chunk_mask))
        similarities = torch.cat(parts, dim=2) if len(parts) > 1 else parts[0]
        pool = similarities.reshape(n_queries, q_tokens, -1)  # every document token of the batch
        keep = min(self.k, pool.shape[-1])
        chosen = pool.topk(keep, dim=-1, sorted=False).indices
        retrieved = torch.zeros_like(pool, dtype=torch.bool).scatter_(-1, chosen, True)
        # Not-retrieved tokens count as 0, so a query token's best retrieved match only wins when positive.
        best = (pool * retrieved).reshape(n_queries, q_tokens, groups * n_ways, d_tokens).amax(dim=-1)
        if queries_mask is not None:
            best = best * queries_mask.to(best)[..., None]
        z = (best > 0).sum(dim=1).to(best.dtype).clamp(min=Z_FLOOR)
        return (best.sum(dim=1) / z).float()


class XTRKDScores(XTRScores):
    """:class:`XTRScores` for distillation: each query's scores against its own ``N`` documents, ``(Q, N)``.

    The top-``k`` still runs over the whole batch's document tokens, as in PyLate: the other queries'
    documents compete for a query token's ``k`` slots even though their scores are not returned.
    """

    def __call__(
        self,
        queries_embeddings: Any,
        documents_embeddings: Any,
        queries_mask: torch.Tensor | None = None,
        documents_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        documents = convert_to_tensor(documents_embeddings)
        queries = convert_to_tensor(queries_embeddings)
        if documents.ndim == 4 and queries.ndim == 3 and len(queries) != len(documents):
            raise ValueError(
                f"XTRKDScores needs one document group per query: {len(queries)} queries, "
                f"{len(documents)} groups"
            )
        scores = super().__call__(queries, documents, queries_mask, documents_mask)
        n_ways = documents.shape[1]
        own = torch.arange(len(scores), device=scores.device)[:, None] * n_ways
        return scores.gather(1, own + torch.arange(n_ways, device=scores.device))


#: PyLate's ready-made instances (``k=256``), usable wherever a score function is expected.
xtr_scores = XTRScores()
xtr_kd_scores = XTRKDScores()
