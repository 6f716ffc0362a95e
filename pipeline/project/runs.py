"""Retrieval runs: what a system returned for each query, written as TREC run files and scored with trec_eval.

A *run* maps each query id to its retrieved documents and scores (``{"q1": {"d3": 11.2, "d7": 9.8}}``).
:func:`evaluate_run` scores it against graded relevance judgements with ``pytrec_eval`` (trec_eval's own
code, as BEIR does): nDCG@10 with linear gains, MRR@10 and recall at every cut-off up to 100. Queries that
a run has no answer for count as zero, so a system cannot look better by skipping hard queries.

Example:
    >>> from pipeline.project.runs import evaluate_run
    >>> qrels = {"q1": {"d1": 1, "d2": 2}}
    >>> run = {"q1": {"d3": 3.0, "d1": 2.0, "d2": 1.0}}
    >>> scores = evaluate_run(run, qrels)
    >>> round(scores["ndcg@10"], 4), scores["mrr@10"], scores["recall@100"]
    (0.6199, 0.5, 1.0)
"""

from __future__ import annotations

import gzip
import math
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

__all__ = [
    "RECALL_CUTOFFS",
    "Run",
    "evaluate_run",
    "hits_to_run",
    "read_trec_run",
    "write_trec_run",
]

#: Query id -> document id -> score.
Run = dict[str, dict[str, float]]

#: Cut-offs of the recall@k curve the report plots (recall@100 is the table's column).
RECALL_CUTOFFS: tuple[int, ...] = (1, 2, 3, 5, 10, 20, 30, 50, 75, 100)


def hits_to_run(query_ids: Iterable[str], hits: Iterable[Iterable[Mapping[str, Any]]]) -> Run:
    """A run from ``retrieve``-style results: one ``[{"id": ..., "score": ...}, ...]`` list per query.

    Example:
        >>> hits_to_run(["q1"], [[{"id": 3, "score": 1.5}]])
        {'q1': {'3': 1.5}}
    """
    run: Run = {}
    for query_id, found in zip(query_ids, hits, strict=True):
        run[str(query_id)] = {str(hit["id"]): float(hit["score"]) for hit in found}
    return run


def _check_qrels(qrels: Mapping[str, Mapping[str, int]]) -> None:
    if not qrels:
        raise ValueError("qrels is empty: nothing to score the run against")
    for query_id, judged in qrels.items():
        for doc_id, grade in judged.items():
            if isinstance(grade, bool) or not isinstance(grade, int):
                raise ValueError(f"qrels[{query_id!r}][{doc_id!r}] = {grade!r} is not an integer grade")


def _check_run(run: Mapping[str, Mapping[str, float]]) -> None:
    for query_id, found in run.items():
        for doc_id, score in found.items():
            if not isinstance(score, int | float) or not math.isfinite(score):
                raise ValueError(f"run[{query_id!r}][{doc_id!r}] = {score!r} is not a finite score")


def _top(found: Mapping[str, float], k: int) -> dict[str, float]:
    # trec_eval breaks score ties by document id; sorting the same way keeps the cut at k consistent.
    ranked = sorted(found.items(), key=lambda item: (-item[1], item[0]))
    return dict(ranked[:k])


def evaluate_run(
    run: Mapping[str, Mapping[str, float]],
    qrels: Mapping[str, Mapping[str, int]],
    ignore_identical_ids: bool = True,
    recall_cutoffs: Iterable[int] = RECALL_CUTOFFS,
) -> dict[str, Any]:
    """Mean nDCG@10, MRR@10 and recall@k of ``run`` over every judged query of ``qrels``.

    Args:
        run: Query id -> document id -> score (higher is better); extra queries are ignored.
        qrels: Query id -> document id -> graded relevance (0 = judged non-relevant). Queries without a
            relevant document are left out, as trec_eval and BEIR do.
        ignore_identical_ids: Drop a retrieved document whose id equals the query's id (BEIR's rule: in
            ArguAna the query argument is itself in the corpus and would trivially rank first).
        recall_cutoffs: The ``k`` of each ``recall@k`` returned under ``"recall_curve"``.

    Returns:
        ``{"ndcg@10", "mrr@10", "recall@100", "recall_curve": {k: recall@k}, "queries": n}``.
    """
    import pytrec_eval

    _check_qrels(qrels)
    _check_run(run)
    cutoffs = sorted({int(k) for k in recall_cutoffs} | {100})
    judged = {
        qid: {doc: int(grade) for doc, grade in docs.items()}
        for qid, docs in qrels.items()
        if any(grade > 0 for grade in docs.values())
    }
    if not judged:
        raise ValueError("qrels has no query with a relevant document (grade > 0)")
    cleaned: Run = {}
    for qid in judged:
        found = {str(doc): float(score) for doc, score in run.get(qid, {}).items()}
        if ignore_identical_ids:
            found.pop(qid, None)
        cleaned[qid] = _top(found, max(cutoffs))
    recall_measure = "recall." + ",".join(str(k) for k in cutoffs)
    full = pytrec_eval.RelevanceEvaluator(judged, {"ndcg_cut.10", recall_measure}).evaluate(cleaned)
    # MRR@10 is trec_eval's reciprocal rank over each query's first ten documents.
    at_ten = {qid: _top(found, 10) for qid, found in cleaned.items()}
    reciprocal = pytrec_eval.RelevanceEvaluator(judged, {"recip_rank"}).evaluate(at_ten)

    def mean(per_query: Mapping[str, Mapping[str, float]], measure: str) -> float:
        # trec_eval leaves out queries with no retrieved document: they score zero here.
        return sum(per_query.get(qid, {}).get(measure, 0.0) for qid in judged) / len(judged)

    curve = {k: mean(full, f"recall_{k}") for k in cutoffs}
    return {
        "ndcg@10": mean(full, "ndcg_cut_10"),
        "mrr@10": mean(reciprocal, "recip_rank"),
        "recall@100": curve[100],
        "recall_curve": curve,
        "queries": len(judged),
    }


def write_trec_run(path: str | os.PathLike[str], run: Mapping[str, Mapping[str, float]], tag: str) -> None:
    """Write ``run`` as a TREC run file (``qid Q0 docid rank score tag``), gzip'd if ``path`` ends in .gz.

    The file is written beside ``path`` and renamed over it, so a reader never sees half a run.
    """
    if not tag or any(c.isspace() for c in tag):
        raise ValueError(f"run tag {tag!r} must be a non-empty word")
    lines = []
    for qid in sorted(run):
        ranked = sorted(run[qid].items(), key=lambda item: (-item[1], item[0]))
        for rank, (doc, score) in enumerate(ranked, start=1):
            if any(c.isspace() for c in f"{qid}{doc}"):
                raise ValueError(f"query {qid!r} / document {doc!r}: TREC run ids cannot contain spaces")
            lines.append(f"{qid} Q0 {doc} {rank} {score:.6f} {tag}\n")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.tmp")
    data = "".join(lines).encode("utf-8")
    temp.write_bytes(gzip.compress(data, mtime=0) if path.suffix == ".gz" else data)
    os.replace(temp, path)


def read_trec_run(path: str | os.PathLike[str]) -> Run:
    """Read a TREC run file (plain or .gz); a malformed line raises ``ValueError`` naming file and line."""
    path = Path(path)
    raw = path.read_bytes()
    text = (gzip.decompress(raw) if path.suffix == ".gz" else raw).decode("utf-8")
    run: Run = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 6:
            raise ValueError(f"{path}:{number}: expected 'qid Q0 docid rank score tag', got {line!r}")
        try:
            score = float(parts[4])
        except ValueError:
            raise ValueError(f"{path}:{number}: score {parts[4]!r} is not a number") from None
        run.setdefault(parts[0], {})[parts[2]] = score
    return run
