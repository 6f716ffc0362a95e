"""Build a Nano-sized retrieval benchmark from any BEIR folder, offline.

The public NanoBEIR sets (50 queries, a few thousand documents each) live on the Hugging Face Hub; this
module makes the same kind of benchmark from a local BEIR folder: ``n_queries`` judged queries drawn with
``seed``, every document judged for them, TF-IDF hard negatives (documents that share vocabulary with the
queries, so the benchmark is not trivially easy) and random documents up to ``n_documents``. It is written
in the layout of the ``sentence-transformers/NanoBEIR-en`` dataset (:mod:`pipeline.data.nano_files`, whose
readers are importable from here too).

Example:
    >>> from pipeline.data.beir import BeirData
    >>> data = BeirData(
    ...     corpus={f"d{i}": f"document number {i}" for i in range(20)},
    ...     queries={"q1": "number 3", "q2": "number 7"},
    ...     qrels={"q1": {"d3": 1}, "q2": {"d7": 1}},
    ...     name="toy",
    ... )
    >>> import tempfile
    >>> folder = tempfile.mkdtemp()
    >>> info = build_nano_benchmark(data, folder, n_queries=2, n_documents=10, seed=0)
    >>> info.split_name, info.n_queries, info.n_documents
    ('NanoToy', 2, 10)
    >>> sorted(load_nano_benchmark(folder, "toy").qrels)
    ['q1', 'q2']
"""

from __future__ import annotations

import logging
import os
import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pipeline.data.beir import BeirData, BeirFormatError, load_beir
from pipeline.data.nano_files import (
    list_nano_benchmarks,
    load_nano_benchmark,
    nano_split_name,
    write_benchmark,
    write_meta,
)

logger = logging.getLogger(__name__)

__all__ = [
    "NanoBenchmark",
    "build_nano_benchmark",
    "list_nano_benchmarks",
    "load_nano_benchmark",
    "nano_split_name",
]


@dataclass(frozen=True)
class NanoBenchmark:
    """What :func:`build_nano_benchmark` wrote."""

    folder: str
    name: str
    split_name: str
    n_queries: int
    n_documents: int
    n_relevant: int
    n_hard_negatives: int
    source: str | None
    source_split: str
    seed: int


def _hard_negative_ranking(
    data: BeirData, query_ids: list[str], doc_ids: list[str], depth: int
) -> list[list[str]]:
    """Per query, the ``depth`` documents with the highest TF-IDF cosine to it (judged ones included)."""
    import numpy as np
    from sklearn.feature_extraction.text import TfidfVectorizer

    # A lexical retriever is what BM25-mined NanoBEIR negatives approximate: close in wording, mostly
    # not relevant. sublinear_tf keeps long documents from dominating.
    vectorizer = TfidfVectorizer(sublinear_tf=True, stop_words="english", dtype=np.float32)
    doc_matrix = vectorizer.fit_transform([data.corpus[d] for d in doc_ids])
    query_matrix = vectorizer.transform([data.queries[q] for q in query_ids])
    scores = (query_matrix @ doc_matrix.T).toarray()
    depth = min(depth, len(doc_ids))
    rankings = []
    for row in scores:
        # Ties broken by corpus position (a stable sort) so the result is the same on every machine.
        order = np.argsort(-row, kind="stable")[:depth]
        rankings.append([doc_ids[i] for i in order if row[i] > 0])
    return rankings


def build_nano_benchmark(
    source: str | os.PathLike[str] | BeirData,
    output_folder: str | os.PathLike[str],
    split: str = "test",
    n_queries: int = 50,
    n_documents: int = 5000,
    seed: int = 0,
    name: str | None = None,
    *,
    hard_negative_ratio: float = 0.5,
    hard_negatives_depth: int = 100,
    on_missing: str = "error",
) -> NanoBenchmark:
    """Sample a Nano benchmark from a BEIR folder (or loaded :class:`BeirData`) and save it.

    Args:
        source: A BEIR folder (``corpus.jsonl[.gz]``, ``queries.jsonl[.gz]``, ``qrels/<split>.tsv[.gz]``)
            or data already read with :func:`pipeline.data.beir.load_beir`.
        output_folder: Where the benchmark is written (created; other benchmarks in it are kept).
        split: The qrels split to sample queries from (when ``source`` is a folder).
        n_queries: How many queries with at least one relevant document to keep (all, if fewer exist).
        n_documents: Target corpus size. Every document judged for the kept queries is included even
            when that exceeds it; the rest is filled with hard negatives, then random documents.
        seed: The same seed and source give the same benchmark.
        name: Short name (``scifact``, ``nq-utd`` ...); the source's name by default. Known NanoBEIR
            names keep sentence-transformers' spelling (``NanoSciFact``), so metric keys match the Hub sets.
        hard_negative_ratio: Share of the filler documents taken from the TF-IDF ranking of the queries.
        hard_negatives_depth: How deep to read each query's TF-IDF ranking.
        on_missing: Passed to :func:`load_beir` when ``source`` is a folder.

    Returns:
        A :class:`NanoBenchmark` describing what was written.
    """
    _check_sizes(n_queries, n_documents, hard_negative_ratio)
    data = source if isinstance(source, BeirData) else load_beir(source, split, on_missing=on_missing)  # type: ignore[arg-type]
    benchmark_name = name or data.name
    split_name = nano_split_name(benchmark_name)

    rng = random.Random(seed)
    query_ids = _sample_queries(data, rng, n_queries, split)
    # Every judged document of the kept queries (score-0 ones too: they are the hardest negatives).
    judged = {doc for qid in query_ids for doc in data.qrels[qid]}
    corpus_ids, n_hard = _sample_corpus(
        data,
        query_ids,
        judged,
        rng,
        n_documents=n_documents,
        hard_negative_ratio=hard_negative_ratio,
        hard_negatives_depth=hard_negatives_depth,
    )

    folder = Path(output_folder)
    write_benchmark(folder, split_name, data, query_ids, corpus_ids)
    info = NanoBenchmark(
        folder=str(folder),
        name=benchmark_name,
        split_name=split_name,
        n_queries=len(query_ids),
        n_documents=len(corpus_ids),
        n_relevant=len(judged),
        n_hard_negatives=n_hard,
        source=data.source,
        source_split=data.split,
        seed=seed,
    )
    write_meta(folder, split_name, _portable_meta(info))
    logger.info(
        "Wrote %s to %s: %d queries, %d documents (%d judged, %d hard negatives)",
        split_name,
        folder,
        info.n_queries,
        info.n_documents,
        info.n_relevant,
        n_hard,
    )
    return info


def _portable_meta(info: NanoBenchmark) -> dict[str, Any]:
    """What the meta file records: ``info`` without its folder, the source by its folder's name only."""
    # The meta file is inside a DVC-hashed output: nothing machine-specific goes in (no absolute paths),
    # so the same data built in two workspaces hashes the same.
    meta = {key: value for key, value in asdict(info).items() if key != "folder"}
    meta["source"] = Path(info.source).name if info.source else None
    return meta


def _check_sizes(n_queries: int, n_documents: int, hard_negative_ratio: float) -> None:
    if n_queries < 1:
        raise ValueError(f"n_queries must be >= 1, got {n_queries}")
    if n_documents < 1:
        raise ValueError(f"n_documents must be >= 1, got {n_documents}")
    if not 0.0 <= hard_negative_ratio <= 1.0:
        raise ValueError(f"hard_negative_ratio must be in [0, 1], got {hard_negative_ratio}")


def _sample_queries(data: BeirData, rng: random.Random, n_queries: int, split: str) -> list[str]:
    """Up to ``n_queries`` queries with at least one relevant document, sorted."""
    relevant = data.relevant_docs()
    candidates = sorted(qid for qid in relevant if qid in data.queries)
    if not candidates:
        raise BeirFormatError(
            f"{data.source or data.name}: no query has a relevant document in split {split!r}"
        )
    return sorted(rng.sample(candidates, min(n_queries, len(candidates))))


def _sample_corpus(
    data: BeirData,
    query_ids: list[str],
    judged: set[str],
    rng: random.Random,
    *,
    n_documents: int,
    hard_negative_ratio: float,
    hard_negatives_depth: int,
) -> tuple[list[str], int]:
    """The benchmark's document ids in source order, and how many of them are hard negatives."""
    doc_order = list(data.corpus)  # the source order, which fixes the output for a seed
    chosen = set(judged)
    if len(chosen) > n_documents:
        logger.warning(
            "%d judged documents exceed n_documents=%d; keeping them all", len(chosen), n_documents
        )
    budget = max(n_documents - len(chosen), 0)
    n_hard = 0
    hard_budget = round(budget * hard_negative_ratio)
    if hard_budget:
        rankings = _hard_negative_ranking(data, query_ids, doc_order, hard_negatives_depth)
        n_hard = _add_round_robin(chosen, rankings, hard_budget)
    remaining = [doc for doc in doc_order if doc not in chosen]
    fill = n_documents - len(chosen)
    if fill > 0:
        chosen.update(rng.sample(remaining, min(fill, len(remaining))))
    return [doc for doc in doc_order if doc in chosen], n_hard


def _add_round_robin(chosen: set[str], rankings: list[list[str]], budget: int) -> int:
    """Add up to ``budget`` new documents to ``chosen``, taking each query's next best in turn; how many."""
    # Round-robin over the queries' rankings so every query gets its closest confounders.
    added = 0
    for rank in range(max((len(r) for r in rankings), default=0)):
        for ranking in rankings:
            if added >= budget:
                break
            if rank < len(ranking) and ranking[rank] not in chosen:
                chosen.add(ranking[rank])
                added += 1
        if added >= budget:
            break
    return added
