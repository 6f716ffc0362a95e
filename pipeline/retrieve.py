"""Retrieve the top documents for a batch of queries from a :mod:`pipeline.indexes` index.

Example:
    >>> import numpy as np, tempfile
    >>> from pipeline import indexes, retrieve
    >>> index = indexes.Voyager(index_folder=tempfile.mkdtemp(), index_name="index", show_progress=False)
    >>> docs = [np.eye(4, dtype="float32")[:2], np.eye(4, dtype="float32")[2:]]
    >>> index = index.add_documents(documents_ids=["1", "3"], documents_embeddings=docs)
    >>> retriever = retrieve.ColBERT(index=index)
    >>> retriever.retrieve(queries_embeddings=[np.eye(4, dtype="float32")[2:3]], k=10)
    [[{'id': '3', 'score': 1.0}, {'id': '1', 'score': 0.0}]]
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

from tqdm.auto import tqdm

from pipeline.indexes.base import MultiVectorIndex
from pipeline.indexes.checks import as_float_arrays, normalize_subset

logger = logging.getLogger(__name__)


class ColBERT:
    """A retriever over a PLAID, Voyager or ScaNN index.

    Args:
        index: The index to search (``indexes.PLAID``, ``indexes.Voyager``, or ``indexes.ScaNN`` built
            with ``store_embeddings=True``: its candidates are rescored exactly).
    """

    def __init__(self, index: MultiVectorIndex) -> None:
        if not isinstance(index, MultiVectorIndex):
            raise TypeError(f"index must be a pipeline.indexes index, got {type(index).__name__}")
        self.index = index

    def retrieve(
        self,
        queries_embeddings: Any,
        k: int = 10,
        k_token: int | None = None,
        device: str | None = None,
        batch_size: int | None = None,
        subset: Any = None,
        show_progress: bool | None = None,
    ) -> list[list[dict[str, Any]]]:
        """Top-``k`` documents of each query, best first: ``[[{"id": ..., "score": ...}, ...], ...]``.

        PyLate's signature and order of arguments.

        Args:
            queries_embeddings: One ``(tokens, dim)`` array per query, as ``model.encode(..., is_query=True)``
                returns them; a single 2-D array (``model.encode("one query")``) is one query.
            k: Documents per query.
            k_token: Voyager: nearest document tokens fetched per query token for this call (default: the
                index's ``k_token``, raised to ``k`` when smaller, as PyLate does). PLAID ranks end to end
                and ignores it, as in PyLate.
            device: Accepted for PyLate code; scoring runs where the index keeps its embeddings (CPU
                for Voyager, the index's ``device`` for PLAID).
            batch_size: Queries searched per index call (default: the index's tuned batch size, else 64).
            subset: ``None``, a list of allowed document ids for every query, or one list per query.
            show_progress: Progress bar over batches (``None``: only when there is more than one batch).
        """
        if batch_size is None:
            batch_size = getattr(self.index, "search_batch_queries", None) or DEFAULT_BATCH_SIZE
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        if k_token is not None and (isinstance(k_token, bool) or not isinstance(k_token, int) or k_token < 1):
            raise ValueError(f"k_token must be a positive integer, got {k_token!r}")
        # Validate everything up front, so a bad query late in the list fails before any search runs.
        queries = as_float_arrays(
            queries_embeddings, argument="queries_embeddings", dim=self.index.embedding_size
        )
        normalize_subset(subset, len(queries))
        if subset is not None:
            subset = list(subset)
        per_query = bool(subset) and all(isinstance(s, list | tuple | set | frozenset) for s in subset)
        starts = range(0, len(queries), batch_size)
        if show_progress is None:
            show_progress = len(starts) > 1
        results: list[list[dict[str, Any]]] = []
        with _token_depth(self.index, k_token, k):
            for start in tqdm(starts, desc="Retrieving", unit="batch", disable=not show_progress):
                batch_subset = subset[start : start + batch_size] if per_query else subset
                results.extend(
                    self.index.search(queries[start : start + batch_size], k=k, subset=batch_subset)
                )
        return results


#: Queries per index call when ``batch_size`` is not given.
DEFAULT_BATCH_SIZE = 64


@contextlib.contextmanager
def _token_depth(index: MultiVectorIndex, k_token: int | None, k: int) -> Iterator[None]:
    """Give a Voyager index a per-call ``k_token`` (at least ``k``), restored afterwards."""
    current = getattr(index, "k_token", None)
    if current is None or k_token is None:
        yield
        return
    if k > k_token:
        logger.warning("k (%d) is greater than k_token (%d): using k_token = k", k, k_token)
    index.k_token = max(k_token, k)  # type: ignore[attr-defined]
    try:
        yield
    finally:
        index.k_token = current  # type: ignore[attr-defined]


class XTR:
    """PyLate's XTR retriever on a token-level index: :class:`pipeline.indexes.ScaNN` or ``Voyager``.

    Each query token fetches its ``k_token`` nearest document tokens; a document is scored from those
    retrieved tokens only (no document embeddings are read back), with XTR's min imputation for the query
    tokens that missed it (:func:`pipeline.rank.score_xtr`). ScaNN reports dot products, used as they are;
    Voyager reports inner-product *distances* (``1 - dot``), turned back into similarities before scoring,
    so the best match ranks first on both.

    Args:
        index: A ScaNN or Voyager index (PLAID ranks end to end and has no token-level answer).

    Example:
        >>> import numpy as np, tempfile
        >>> from pipeline import indexes, retrieve
        >>> index = indexes.Voyager(index_folder=tempfile.mkdtemp(), index_name="x", show_progress=False)
        >>> eye = np.eye(4, dtype="float32")
        >>> index = index.add_documents(["a", "b"], [eye[:2], eye[2:]])
        >>> [hit["id"] for hit in retrieve.XTR(index=index).retrieve([eye[2:3]], k=2)[0]]
        ['b', 'a']
        >>> scann = indexes.ScaNN(index_name="x", store_embeddings=False)     # PyLate's in-memory ScaNN
        >>> scann = scann.add_documents(["a", "b"], [eye[:2], eye[2:]])
        >>> [hit["id"] for hit in retrieve.XTR(index=scann).retrieve(eye[2:3], k=2)[0]]
        ['b', 'a']
    """

    #: Token-level candidates per query token when ``k_token`` is not given (PyLate's default).
    default_k_token = 10_000
    #: Queries per index call when ``batch_size`` is not given (PyLate's default).
    default_batch_size = 1

    def __init__(self, index: MultiVectorIndex) -> None:
        from pipeline.indexes import ScaNN, Voyager

        if not isinstance(index, ScaNN | Voyager):
            raise TypeError(
                "retrieve.XTR needs a token-level index (indexes.ScaNN or indexes.Voyager), "
                f"got {type(index).__name__}"
            )
        self.index = index
        # Voyager answers with distances (1 - dot), ScaNN with the dot products XTR sums.
        self._distances = isinstance(index, Voyager)

    def retrieve(
        self,
        queries_embeddings: Any,
        k: int = 10,
        k_token: int | None = None,
        device: str | None = None,
        batch_size: int | None = None,
        subset: Any = None,
    ) -> list[list[dict[str, Any]]]:
        """Top-``k`` documents of each query by XTR score, best first (PyLate's signature).

        ``subset`` is not supported on the token path (as in PyLate): it raises ``NotImplementedError``.
        """
        if subset is not None:
            raise NotImplementedError("Subset filtering is not implemented for XTR retrieval (as in PyLate)")
        k_token = self.default_k_token if k_token is None else k_token
        batch_size = self.default_batch_size if batch_size is None else batch_size
        for name, value in {"k": k, "k_token": k_token, "batch_size": batch_size}.items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if k > k_token:
            logger.warning("k (%d) is greater than k_token (%d): using k_token = k", k, k_token)
            k_token = k
        from pipeline.rank import score_xtr

        queries = as_float_arrays(
            queries_embeddings, argument="queries_embeddings", dim=self.index.embedding_size
        )
        starts = range(0, len(queries), batch_size)
        results: list[list[dict[str, Any]]] = []
        bar = tqdm(starts, desc="Retrieving documents (XTR)", unit="batch", disable=len(starts) <= 1)
        for start in bar:
            hits = self.index(queries[start : start + batch_size], k=k_token)
            for ids, scores in zip(hits["documents_ids"], hits["distances"], strict=True):
                if self._distances:
                    scores = [[1.0 - d for d in token] for token in scores]
                results.append(score_xtr(ids, scores, k=k, device=device or "cpu"))
        return results
