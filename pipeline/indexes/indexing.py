"""Index a corpus in bounded memory, and measure an index against exact MaxSim search.

:func:`index_corpus` encodes and adds documents one chunk at a time inside one index transaction: only
one chunk of embeddings is ever held in memory, and the index changes on disk only when the whole corpus
is in (a crash half-way leaves the previous index). :func:`exact_search` is the brute-force reference
(every query against every document) and :func:`recall_at_k` compares an index's results with it.

Example:
    >>> import numpy as np
    >>> from pipeline.indexes.indexing import exact_search, recall_at_k
    >>> docs = [np.eye(3, dtype="float32")[:1], np.eye(3, dtype="float32")[1:]]
    >>> reference = exact_search([np.eye(3, dtype="float32")[1:2]], docs, ["a", "b"], k=1)
    >>> reference
    [[{'id': 'b', 'score': 1.0}]]
    >>> recall_at_k(reference, reference, k=1)
    1.0
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from tqdm.auto import tqdm

from pipeline.indexes.base import MultiVectorIndex
from pipeline.indexes.checks import DocumentId, as_float_arrays, check_counts, id_key, validate_ids
from pipeline.indexes.errors import DuplicateDocumentIdError
from pipeline.scores import colbert_scores

logger = logging.getLogger(__name__)


def index_corpus(
    model: Any,
    documents: Iterable[str],
    ids: Iterable[DocumentId],
    index: MultiVectorIndex,
    chunk_size: int = 1000,
    batch_size: int = 32,
    show_progress: bool = True,
    on_chunk: Callable[[list[DocumentId], list[Any]], None] | None = None,
) -> dict[str, float]:
    """Encode ``documents`` with ``model`` and add them to ``index`` under ``ids``, ``chunk_size`` at a time.

    Args:
        model: A :class:`pipeline.models.ColBERT` (anything with ``encode(texts, is_query=False, ...)``).
        documents: Document texts; a list, or any iterable (a generator keeps memory flat end to end).
        ids: One id (str or int) per document, in the same order.
        index: A :mod:`pipeline.indexes` index; documents are added to what it already holds.
        chunk_size: Documents encoded and added per step: one chunk's embeddings are held at a time (the
            index benchmark, docs/benchmarks.md, measures peak RSS for 10x the documents: it grows a little).
        batch_size: Encoder batch size.
        show_progress: Show a progress bar over documents.
        on_chunk: Called with each chunk's ids and embeddings once they are added (the index stage keeps
            a full-precision copy with it, without encoding twice or holding the corpus in memory).

    Returns:
        ``{"documents": added, "tokens": token embeddings added, "seconds": wall time, "chunks": steps}``.

    Lists are checked up front (equal lengths, non-empty, valid and new ids) before anything is encoded.
    """
    check_counts({"chunk_size": chunk_size, "batch_size": batch_size})
    if isinstance(documents, str):
        raise ValueError("documents must be a list of texts, not a single string")
    total: int | None = None
    if isinstance(documents, Sequence) and isinstance(ids, Sequence):
        if len(documents) != len(ids):
            raise ValueError(f"documents has {len(documents)} texts but ids has {len(ids)} ids")
        if len(documents) == 0:
            raise ValueError("documents is empty: nothing to index")
        checked = validate_ids(ids, argument="ids")
        for position, value in enumerate(checked):
            if value in index:
                raise DuplicateDocumentIdError(
                    f"ids[{position}] = {value!r} is already in the index {index.path}"
                )
        total = len(documents)

    started = time.perf_counter()
    added_documents = added_tokens = chunks = 0
    pairs = zip(documents, ids, strict=True)  # a length mismatch in iterables surfaces as ValueError
    with (
        index.transaction(),
        tqdm(
            total=total, desc=f"Indexing into {index.path.name}", unit="doc", disable=not show_progress
        ) as bar,
    ):
        while chunk := list(itertools.islice(pairs, chunk_size)):
            texts = [text for text, _ in chunk]
            for offset, text in enumerate(texts):
                if not isinstance(text, str):
                    raise ValueError(
                        f"documents[{added_documents + offset}] is {type(text).__name__}, not str"
                    )
            embeddings = model.encode(texts, is_query=False, batch_size=batch_size, show_progress_bar=False)
            index.add_documents(documents_ids=[i for _, i in chunk], documents_embeddings=embeddings)
            if on_chunk is not None:
                on_chunk([i for _, i in chunk], embeddings)
            added_documents += len(chunk)
            added_tokens += sum(len(e) for e in embeddings)
            chunks += 1
            bar.update(len(chunk))
            del embeddings  # let the chunk go before the next one is encoded
        if added_documents == 0:
            raise ValueError("documents is empty: nothing to index")
    seconds = time.perf_counter() - started
    logger.info("Indexed %d documents (%d tokens) in %.1f s", added_documents, added_tokens, seconds)
    return {"documents": added_documents, "tokens": added_tokens, "seconds": seconds, "chunks": chunks}


def exact_search(
    queries_embeddings: Any,
    documents_embeddings: Any,
    documents_ids: Sequence[DocumentId],
    k: int = 10,
    documents_batch_size: int = 2048,
    device: str | torch.device | None = None,
) -> list[list[dict[str, Any]]]:
    """Brute-force MaxSim: every query against every document, top ``k`` per query, best first.

    Documents are scored ``documents_batch_size`` at a time and only a running top-``k`` is kept, so
    memory stays bounded for large corpora.
    """
    ids = validate_ids(documents_ids)
    queries = as_float_arrays(queries_embeddings, argument="queries_embeddings", dim=None)
    dim = queries[0].shape[1] if queries else None
    documents = as_float_arrays(
        documents_embeddings, argument="documents_embeddings", dim=dim, expected=len(ids)
    )
    check_counts({"k": k})
    if not queries or not documents:
        return [[] for _ in queries]
    best_scores = torch.full((len(queries), 0), float("-inf"))
    best_index = torch.zeros((len(queries), 0), dtype=torch.long)
    for start in range(0, len(documents), documents_batch_size):
        scores = colbert_scores(queries, documents[start : start + documents_batch_size], device=device)
        merged_scores = torch.cat([best_scores, scores], dim=1)
        merged_index = torch.cat(
            [best_index, torch.arange(start, start + scores.shape[1]).expand(len(queries), -1)], dim=1
        )
        top = torch.topk(merged_scores, min(k, merged_scores.shape[1]), dim=1)
        best_scores, best_index = top.values, torch.gather(merged_index, 1, top.indices)
    return [
        [{"id": ids[i], "score": float(s)} for i, s in zip(row_i.tolist(), row_s.tolist(), strict=True)]
        for row_i, row_s in zip(best_index, best_scores, strict=True)
    ]


def recall_at_k(
    results: Sequence[Sequence[dict[str, Any]]], reference: Sequence[Sequence[dict[str, Any]]], k: int = 10
) -> float:
    """Mean fraction of each query's reference top-``k`` ids that ``results``' top-``k`` also holds."""
    if len(results) != len(reference):
        raise ValueError(f"results has {len(results)} queries but reference has {len(reference)}")
    fractions = []
    for found, expected in zip(results, reference, strict=True):
        wanted = {id_key(hit["id"]) for hit in expected[:k]}
        if wanted:
            fractions.append(len(wanted & {id_key(hit["id"]) for hit in found[:k]}) / len(wanted))
    return sum(fractions) / len(fractions) if fractions else 1.0
