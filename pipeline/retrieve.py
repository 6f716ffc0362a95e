"""Retrieve the top documents for a batch of queries from a :mod:`pipeline.indexes` index.

Example:
    >>> import numpy as np, tempfile
    >>> from pipeline import indexes, retrieve
    >>> index = indexes.Voyager(index_folder=tempfile.mkdtemp(), index_name="index", show_progress=False)
    >>> docs = [np.eye(4, dtype="float32")[:2], np.eye(4, dtype="float32")[2:]]
    >>> index.add_documents(documents_ids=["1", "3"], documents_embeddings=docs)
    >>> retriever = retrieve.ColBERT(index=index)
    >>> retriever.retrieve(queries_embeddings=[np.eye(4, dtype="float32")[2:3]], k=10)
    [[{'id': '3', 'score': 1.0}, {'id': '1', 'score': 0.0}]]
"""

from __future__ import annotations

import logging
from typing import Any

from tqdm.auto import tqdm

from pipeline.indexes.base import MultiVectorIndex, as_float_arrays, normalize_subset

logger = logging.getLogger(__name__)


class ColBERT:
    """A retriever over a PLAID or Voyager index.

    Args:
        index: The index to search (``indexes.PLAID`` or ``indexes.Voyager``).
    """

    def __init__(self, index: MultiVectorIndex) -> None:
        if not isinstance(index, MultiVectorIndex):
            raise TypeError(f"index must be a pipeline.indexes index, got {type(index).__name__}")
        self.index = index

    def retrieve(
        self,
        queries_embeddings: Any,
        k: int = 10,
        subset: Any = None,
        batch_size: int | None = None,
        show_progress: bool | None = None,
    ) -> list[list[dict[str, Any]]]:
        """Top-``k`` documents of each query, best first: ``[[{"id": ..., "score": ...}, ...], ...]``.

        Args:
            queries_embeddings: One ``(tokens, dim)`` array per query, as ``model.encode(..., is_query=True)``
                returns them.
            k: Documents per query.
            subset: ``None``, a list of allowed document ids for every query, or one list per query.
            batch_size: Queries searched per index call (``None``: the index's tuned batch size, else 64).
            show_progress: Progress bar over batches (``None``: only when there is more than one batch).
        """
        if batch_size is None:
            batch_size = getattr(self.index, "search_batch_queries", None) or 64
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
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
        for start in tqdm(starts, desc="Retrieving", unit="batch", disable=not show_progress):
            batch_subset = subset[start : start + batch_size] if per_query else subset
            results.extend(self.index(queries[start : start + batch_size], k=k, subset=batch_subset))
        return results
