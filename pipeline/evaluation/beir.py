"""PyLate's BEIR helpers, offline: local datasets, triples, and ``evaluate`` (nDCG, MRR, recall of runs)."""

from __future__ import annotations

import logging
import math
import os
import random
from pathlib import Path
from typing import Any

from pipeline.data.beir import load_beir as load_beir_folder

logger = logging.getLogger(__name__)


def load_custom_dataset(path: str | os.PathLike[str], split: str = "test") -> tuple[list, dict, dict]:
    """A local BEIR-layout folder as PyLate returns it: ``(documents, queries, qrels)``.

    ``documents`` is a list of ``{"id", "text"}`` (title and text joined), ``queries`` maps query id to
    text for the queries judged in ``split``, ``qrels`` maps query id to ``{document id: grade}``.
    Every record is validated (:func:`pipeline.data.beir.load_beir`); errors name the file and line.
    """
    data = load_beir_folder(path, split)
    documents = [{"id": document_id, "text": text} for document_id, text in data.corpus.items()]
    return documents, dict(data.queries), {qid: dict(docs) for qid, docs in data.qrels.items()}


#: Where PyLate's ``load_beir`` downloads a BEIR set; read here, offline.
BEIR_DOWNLOAD_FOLDER = "evaluation_datasets"


def load_beir(dataset_name: str, split: str = "test") -> tuple[list, dict, dict]:
    """A BEIR set by name, as PyLate returns it: ``(documents, queries, qrels)`` (as load_custom_dataset).

    PyLate downloads ``<dataset_name>.zip`` into ``./evaluation_datasets/``. This project does not
    download: ``dataset_name`` is read from ``./evaluation_datasets/<dataset_name>`` (where a PyLate run
    left it) or is itself a local BEIR folder; otherwise a ``FileNotFoundError`` says where to put it.
    """
    candidates = [Path(BEIR_DOWNLOAD_FOLDER) / str(dataset_name), Path(dataset_name)]
    folder = next((c for c in candidates if c.is_dir()), None)
    if folder is None:
        raise FileNotFoundError(
            f"BEIR set {dataset_name!r} not found in {candidates[0]} or as a folder: pipeline does not "
            "download data; unzip the BEIR set there (or pass a local BEIR folder)"
        )
    return load_custom_dataset(folder, split)


def get_beir_triples(documents: list[dict[str, str]], queries: list[str], qrels: dict) -> list[tuple]:
    """``(query, positive, random document)`` for every judged pair, as PyLate builds BEIR triples.

    ``queries`` holds query texts in the order of ``qrels``' keys (``list(queries.values())`` when both come
    from :func:`load_beir`); the negative is drawn uniformly from ``documents`` (``random``'s global state).
    """
    texts = {document["id"]: document["text"] for document in documents}
    if not texts:
        raise ValueError("documents is empty: no text to draw negatives from")
    pool = list(texts.values())
    triples = []
    for query, judged in zip(queries, qrels.values(), strict=False):
        for document_id in judged:
            if document_id not in texts:
                raise KeyError(f"qrels names document {document_id!r}, which is not in documents")
            triples.append((query, texts[document_id], random.choice(pool)))
    return triples


def evaluate(
    scores: list[list[dict[str, Any]]],
    qrels: dict[str, dict[str, int]],
    queries: list[str],
    metrics: list[str] | None = None,
) -> dict[str, float]:
    """Mean ranking metrics of retrieval results, PyLate's ``evaluate`` (ranx's metric names).

    Args:
        scores: One ranked list of ``{"id", "score"}`` per query (what a retriever returns).
        qrels: Query key -> {document id: grade}; a grade of 0 is judged non-relevant.
        queries: The key of each entry of ``scores`` in ``qrels``. A key given more than once (a
            duplicate query) reuses its first results, as PyLate does.
        metrics: ``ndcg@k``, ``hits@k``, ``recall@k``, ``precision@k``, ``mrr@k``, ``map@k`` (or without
            ``@k``); default ``ndcg@10`` and ``hits@1..5, 10``.

    Returns:
        Metric -> mean over the queries of ``qrels`` (a query with no results scores 0). nDCG uses linear
        gains, as ranx's ``ndcg`` and trec_eval do.
    """
    if len(queries) > len(scores):
        first: dict[str, list[dict[str, Any]]] = {}
        for query, found in zip(queries, scores, strict=False):
            first.setdefault(query, found)
        scores = [first[query] for query in queries if query in first]
    metrics = list(metrics) if metrics else ["ndcg@10", *(f"hits@{k}" for k in (1, 2, 3, 4, 5, 10))]
    parsed = [_parse_metric(metric) for metric in metrics]
    run = {query: found for query, found in zip(queries, scores, strict=False)}
    judged = [query for query, grades in qrels.items() if any(g > 0 for g in grades.values())]
    if not judged:
        raise ValueError("qrels has no query with a relevant document (grade > 0)")
    totals = dict.fromkeys(metrics, 0.0)
    for query in judged:
        ranked = [str(hit["id"]) for hit in sorted(run.get(query, []), key=lambda h: -float(h["score"]))]
        grades = {str(doc): int(g) for doc, g in qrels[query].items()}
        for metric, (kind, cutoff) in zip(metrics, parsed, strict=True):
            totals[metric] += _metric(kind, ranked[:cutoff] if cutoff else ranked, grades, cutoff)
    return {metric: total / len(judged) for metric, total in totals.items()}


_METRICS = ("ndcg", "hits", "recall", "precision", "mrr", "map")


def _parse_metric(metric: str) -> tuple[str, int | None]:
    kind, _, cutoff = str(metric).partition("@")
    if kind not in _METRICS or (cutoff and not cutoff.isdigit()):
        raise ValueError(f"unknown metric {metric!r}: use one of {list(_METRICS)}, optionally with @k")
    return kind, int(cutoff) if cutoff else None


def _metric(kind: str, ranked: list[str], grades: dict[str, int], cutoff: int | None) -> float:
    relevant = {doc for doc, grade in grades.items() if grade > 0}
    hits = [doc in relevant for doc in ranked]
    if kind == "hits":
        return float(any(hits))
    if kind == "recall":
        return sum(hits) / len(relevant)
    if kind == "precision":
        return sum(hits) / (cutoff or max(len(ranked), 1))
    if kind == "mrr":
        return next((1.0 / (rank + 1) for rank, hit in enumerate(hits) if hit), 0.0)
    if kind == "map":
        found, total = 0, 0.0
        for rank, hit in enumerate(hits):
            if hit:
                found += 1
                total += found / (rank + 1)
        return total / len(relevant)
    gains = sorted((g for g in grades.values() if g > 0), reverse=True)[: cutoff or None]
    ideal = sum(g / math.log2(rank + 2) for rank, g in enumerate(gains))
    dcg = sum(max(grades.get(doc, 0), 0) / math.log2(rank + 2) for rank, doc in enumerate(ranked))
    return dcg / ideal if ideal else 0.0
