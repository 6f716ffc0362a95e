"""Search settings that reach a recall target in the least time, and the full-precision embeddings they use.

One cohesive module: the tuner, with the settings it chooses, the trials it times and the file it writes.

PLAID's 4-bit residuals reorder close candidates, so its recall@10 against exact MaxSim stops short of 0.95
whatever its probes (about 0.91 on SciFact). Two ways past that plateau need the documents' full-precision
token embeddings: re-score PLAID's top candidates exactly (MaxSim over a short list), or skip PLAID and score
every document exactly, which on a small corpus is also the fastest of all. :func:`tune` measures, on probe
queries, which of these and which PLAID settings (``n_ivf_probe``, ``n_full_scores``, re-scoring depth, query
batch size) reach a recall@10 target against exact MaxSim in the least time; :func:`write_settings` stores
the choice beside the index, and :class:`pipeline.indexes.PLAID` searches with it unless told otherwise.

Two entries sit in the index folder beside its version folders (so their names never change between builds):

- ``search.json``: the chosen :class:`SearchSettings`, what was measured, and the index version they were
  measured on (a later write to the index makes them stale: they are then ignored, with a warning);
- ``embeddings/``: an :class:`EmbeddingStore`, the documents' token embeddings in float16, in slot order.

Example (the store's own example is in :mod:`pipeline.indexes.embedding_store`):
    >>> [SearchSettings(mode="exact").needs_store, SearchSettings(rerank=32).needs_store]
    [True, True]
    >>> SearchSettings().needs_store  # plain PLAID reads only its own compressed index
    False
    >>> SearchSettings(n_ivf_probe=0)
    Traceback (most recent call last):
    ValueError: n_ivf_probe must be a positive integer, got 0
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from pipeline.indexes.embedding_store import (  # noqa: F401  (part of this module's API: the store it tunes over)
    STORE_FOLDER,
    EmbeddingStore,
    EmbeddingStoreWriter,
    Hits,
    open_store,
)
from pipeline.project.io import atomic_write_json

logger = logging.getLogger(__name__)

#: The tuned settings' file inside an index folder, beside its versions.
SEARCH_SETTINGS_FILE = "search.json"

SETTINGS_FORMAT = 1

#: ``(queries, depth, n_ivf_probe, n_full_scores, allowed) -> top-depth (slot, score) per query``.
CandidateSearch = Callable[
    [list[np.ndarray], int, int, int, list[np.ndarray | None]], list[list[tuple[int, float]]]
]


@dataclasses.dataclass(frozen=True)
class SearchSettings:
    """How to search a PLAID index.

    Attributes:
        mode: ``"plaid"`` (IVF probing, then optional exact re-scoring) or ``"exact"`` (MaxSim over every
            document from the full-precision store; no PLAID at all).
        n_ivf_probe: Centroids probed per query token.
        n_full_scores: Candidates PLAID scores with its decompressed embeddings.
        rerank: PLAID's top ``rerank`` candidates are re-scored with full-precision embeddings (0: none,
            PLAID's own scores are final).
        batch_size: Queries per search call.
    """

    mode: Literal["plaid", "exact"] = "plaid"
    n_ivf_probe: int = 8
    n_full_scores: int = 8192
    rerank: int = 0
    batch_size: int = 64

    def __post_init__(self) -> None:
        if self.mode not in ("plaid", "exact"):
            raise ValueError(f"mode must be 'plaid' or 'exact', got {self.mode!r}")
        for name in ("n_ivf_probe", "n_full_scores", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if isinstance(self.rerank, bool) or not isinstance(self.rerank, int) or self.rerank < 0:
            raise ValueError(f"rerank must be a non-negative integer, got {self.rerank!r}")

    @property
    def needs_store(self) -> bool:
        """Whether searching with these settings reads the full-precision embeddings."""
        return self.mode == "exact" or self.rerank > 0

    def describe(self) -> str:
        if self.mode == "exact":
            return f"exact MaxSim over every document (batch {self.batch_size})"
        rerank = f", exact re-scoring of the top {self.rerank}" if self.rerank else ""
        return (
            f"PLAID n_ivf_probe={self.n_ivf_probe} n_full_scores={self.n_full_scores}{rerank} "
            f"(batch {self.batch_size})"
        )


# ---------------------------------------------------------------------------------------------- searching
def search_slots(
    settings: SearchSettings,
    store: EmbeddingStore | None,
    candidates: CandidateSearch,
    queries: list[np.ndarray],
    k: int,
    allowed: list[np.ndarray | None],
) -> Hits:
    """Top-``k`` ``(slot, score)`` per query under ``settings`` (``candidates`` is the PLAID search)."""
    if settings.needs_store and store is None:
        raise ValueError(f"{settings.describe()} needs the full-precision embedding store")
    if settings.mode == "exact":
        return store.search(queries, k, allowed)  # type: ignore[union-attr]
    depth = max(k, settings.rerank)
    hits = candidates(queries, depth, settings.n_ivf_probe, max(settings.n_full_scores, depth), allowed)
    if not settings.rerank:
        return [row[:k] for row in hits]
    return store.rescore(queries, [[slot for slot, _ in row] for row in hits], k)  # type: ignore[union-attr]


def _fractions(results: Hits, reference: Hits, k: int) -> list[float]:
    """Per query: the fraction of its reference top-``k`` slots found in its top ``k`` results."""
    fractions = []
    for found, expected in zip(results, reference, strict=True):
        wanted = {slot for slot, _ in expected[:k]}
        if wanted:
            fractions.append(len(wanted & {slot for slot, _ in found[:k]}) / len(wanted))
    return fractions


def recall(results: Hits, reference: Hits, k: int = 10) -> float:
    """Mean fraction of each query's reference top-``k`` slots found in its top ``k`` results."""
    return _mean(_fractions(results, reference, k))


def _mean(fractions: list[float]) -> float:
    return sum(fractions) / len(fractions) if fractions else 1.0


def _bound(fractions: list[float], standard_errors: float) -> float:
    if len(fractions) < 2:
        return _mean(fractions)
    return float(np.mean(fractions) - standard_errors * np.std(fractions, ddof=1) / math.sqrt(len(fractions)))


def recall_bound(results: Hits, reference: Hits, k: int = 10, standard_errors: float = 1.645) -> float:
    """The mean recall less ``standard_errors`` standard errors of it (over the queries): a lower bound.

    The tuner measures recall on a sample of queries; a setting whose mean just reaches the target there
    falls short on other queries about half the time (on SciFact: 0.950 on 100 probe queries, 0.933 on the
    300 test queries). 1.645 standard errors is a one-sided 95% bound.

    Example:
        >>> hits = [[(1, 1.0), (2, 0.5)], [(3, 1.0), (4, 0.5)]]
        >>> recall_bound(hits, hits, k=2)  # every query exact: no spread, the bound is the mean
        1.0
        >>> round(recall_bound([[(1, 1.0), (9, 0.5)], [(3, 1.0), (4, 0.5)]], hits, k=2), 3)  # 0.5 and 1
        0.339
    """
    return _bound(_fractions(results, reference, k), standard_errors)


def _rounded(value: float) -> float | None:
    """``value`` to 4 places for the JSON files; ``None`` for NaN (a bound not computed): JSON has no NaN."""
    return None if math.isnan(value) else round(value, 4)


# ---------------------------------------------------------------------------------------------- tuning
@dataclasses.dataclass(frozen=True)
class Trial:
    """One measured setting: recall@k against exact MaxSim and seconds for all the probe queries."""

    settings: SearchSettings
    recall: float
    seconds: float
    recall_bound: float = math.nan  #: :func:`recall_bound`: what the target is held against

    def as_dict(self, n_queries: int) -> dict[str, Any]:
        return {
            **dataclasses.asdict(self.settings),
            "recall": round(self.recall, 4),
            "recall_bound": _rounded(self.recall_bound),
            "qps": round(n_queries / self.seconds, 2) if self.seconds > 0 else None,
        }


@dataclasses.dataclass(frozen=True)
class TuningResult:
    """What :func:`tune` chose and the evidence: every trial, the exact baseline, the probe-set size."""

    settings: SearchSettings
    recall: float
    qps: float
    target: float
    reached: bool
    exact_qps: float
    queries: int
    k: int
    trials: list[Trial]
    recall_bound: float = math.nan  #: the bound the target was held against (:func:`recall_bound`)

    def summary(self) -> dict[str, Any]:
        """The JSON-ready record for ``search.json`` and ``metrics/index.json``."""
        return {
            "settings": dataclasses.asdict(self.settings),
            "description": self.settings.describe(),
            f"recall@{self.k}": round(self.recall, 4),
            f"recall@{self.k}_bound": _rounded(self.recall_bound),
            "qps": round(self.qps, 2),
            "target": self.target,
            "reached": self.reached,
            "exact_qps": round(self.exact_qps, 2),
            "probe_queries": self.queries,
            "threads": torch.get_num_threads(),
            "trials": [t.as_dict(self.queries) for t in self.trials],
        }


def _timed(function: Callable[[], Any], timer: Callable[[], float]) -> tuple[Any, float]:
    started = timer()
    value = function()
    return value, max(timer() - started, 1e-9)


def _batched(function: Callable[[list[np.ndarray]], Hits], queries: list[np.ndarray], size: int) -> Hits:
    hits: Hits = []
    for start in range(0, len(queries), size):
        hits.extend(function(queries[start : start + size]))
    return hits


def tune(
    store: EmbeddingStore,
    queries: Sequence[np.ndarray],
    candidates: CandidateSearch | None,
    *,
    target: float = 0.95,
    k: int = 10,
    probes: Sequence[int] = (1, 2, 4, 8, 16),
    full_scores: Sequence[int] = (64, 128, 256, 512, 1024, 2048, 4096),
    reranks: Sequence[int] = (0, 16, 32, 64, 128),
    batch_sizes: Sequence[int] = (1, 16, 64),
    consider_exact: bool = True,
    finalists: int = 3,
    slack: float = 1.25,
    standard_errors: float = 1.645,
    timer: Callable[[], float] = time.perf_counter,
) -> TuningResult:
    """The fastest search settings whose recall@``k`` against exact MaxSim reaches ``target`` on ``queries``.

    "Reaches" is held against a lower bound of the recall (:func:`recall_bound`: the mean less
    ``standard_errors`` of its standard errors), so that it also holds on queries the tuner did not see.

    The reference is exact MaxSim over every document of ``store`` (float16 embeddings, float32 math). For
    each ``n_ivf_probe``, ``n_full_scores`` grows until some re-scoring depth reaches the target (more
    would only cost more), recall stops growing, or PLAID alone is slower than the fastest setting already
    reaching the target (see the comments in the loop); one PLAID search at the deepest depth serves every
    depth (PLAID's order does not depend on ``top_k``). Exact search over every document (recall 1 by
    definition) competes on time unless ``consider_exact`` is false, and is the fallback when no PLAID
    setting reaches the target. The ``finalists`` fastest candidates are timed once more (noise on a busy
    machine), then the query batch size of the winner.

    Args:
        store: The index's full-precision embeddings (slot order).
        queries: Probe query embeddings, ``(tokens, dim)`` each.
        candidates: The PLAID search (``None``: only exact search is considered).
        target: Recall@``k`` to reach, in (0, 1].
        slack: A PLAID search this many times slower than the fastest setting reaching the target ends
            the search of its row (timings on a busy machine are noisy; 1.25 keeps near-ties in play).
        standard_errors: How far below the mean probe recall the bound held against ``target`` lies (0: the
            mean itself).
    """
    if not 0 < target <= 1:
        raise ValueError(f"target must be in (0, 1], got {target!r}")
    if not queries:
        raise ValueError("tune needs at least one probe query")
    if candidates is None and not consider_exact:
        raise ValueError("nothing to tune: no PLAID search given and exact search not considered")
    queries = list(queries)
    n = len(queries)
    reference, exact_seconds = _timed(lambda: store.exact_topk(queries, k), timer)
    exact = SearchSettings(mode="exact")
    trials: list[Trial] = [Trial(exact, 1.0, exact_seconds, 1.0)] if consider_exact else []

    def trial(settings: SearchSettings, results: Hits, seconds: float) -> Trial:
        fractions = _fractions(results, reference, k)  # once: the mean and its bound both come from them
        return Trial(settings, _mean(fractions), seconds, _bound(fractions, standard_errors))

    no_filter: list[np.ndarray | None] = [None] * n
    depths = sorted({r for r in reranks if r == 0 or r >= k})
    # PLAID's cost grows with n_ivf_probe and n_full_scores, so the grid is walked cheapest first and cut
    # short: a setting that reaches the target ends its probe's row (more full scores only cost more);
    # a row stops when doubling n_full_scores gains no recall (the probed centroids bound the candidates);
    # and once PLAID alone is slower than the fastest setting that already reaches the target (exact
    # search included), the rest of the row, or when it is the row's first setting every later row, can
    # only be slower.
    fastest = min((t.seconds for t in trials if t.recall_bound >= target), default=math.inf)
    for probe in probes if candidates is not None else ():
        previous = -1.0
        first_in_row = True
        stop_all = False
        for n_full in sorted(full_scores):
            usable = [r for r in depths if r <= n_full]
            if n_full < k or not usable:
                continue
            depth = max(k, *usable)
            hits, plaid_seconds = _timed(
                lambda probe=probe, n_full=n_full, depth=depth: candidates(  # type: ignore[misc]
                    queries, depth, probe, n_full, no_filter
                ),
                timer,
            )
            if plaid_seconds > slack * fastest:
                stop_all = first_in_row
                break
            first_in_row = False
            measured = []
            for rerank in usable:
                settings = SearchSettings(n_ivf_probe=probe, n_full_scores=n_full, rerank=rerank)
                if rerank == 0:
                    results, seconds = [row[:k] for row in hits], plaid_seconds
                else:
                    results, extra = _timed(
                        lambda rerank=rerank, hits=hits: store.rescore(
                            queries, [[s for s, _ in row[:rerank]] for row in hits], k
                        ),
                        timer,
                    )
                    seconds = plaid_seconds + extra
                measured.append(trial(settings, results, seconds))
            trials.extend(measured)
            best = max(t.recall_bound for t in measured)
            logger.info("tuning: probe %d, n_full_scores %d: recall@%d bound %.3f", probe, n_full, k, best)
            fastest = min([fastest, *(t.seconds for t in measured if t.recall_bound >= target)])
            if best >= target or best <= previous + 1e-9:
                break
            previous = best
        if stop_all:
            break

    def run(settings: SearchSettings, batch: int) -> tuple[Hits, float]:
        return _timed(
            lambda: _batched(
                lambda chunk: search_slots(settings, store, candidates, chunk, k, [None] * len(chunk)),  # type: ignore[arg-type]
                queries,
                batch,
            ),
            timer,
        )

    passing = sorted((t for t in trials if t.recall_bound >= target), key=lambda t: t.seconds)
    reached_target = bool(passing)
    if not passing:  # only possible without exact search: report the best recall, marked as not reached
        passing = sorted(trials, key=lambda t: (-t.recall_bound, t.seconds))[:1]
    retimed = []
    for finalist in passing[:finalists]:
        results, seconds = run(finalist.settings, finalist.settings.batch_size)
        retimed.append(trial(finalist.settings, results, min(seconds, finalist.seconds)))
    best = min(retimed, key=lambda t: t.seconds)
    for batch in batch_sizes:
        if batch == best.settings.batch_size:
            continue
        settings = dataclasses.replace(best.settings, batch_size=batch)
        results, seconds = run(settings, batch)
        if seconds < best.seconds:
            best = trial(settings, results, seconds)
    logger.info(
        "tuned search: %s, recall@%d %.3f at %.1f QPS (exact MaxSim %.1f QPS)",
        best.settings.describe(),
        k,
        best.recall,
        n / best.seconds,
        n / exact_seconds,
    )
    return TuningResult(
        settings=best.settings,
        recall=best.recall,
        qps=n / best.seconds,
        target=target,
        reached=reached_target and best.recall_bound >= target,
        recall_bound=best.recall_bound,
        exact_qps=n / exact_seconds,
        queries=n,
        k=k,
        trials=trials,
    )


# ---------------------------------------------------------------------------------------------- on disk
def write_settings(index_path: str | os.PathLike[str], index_version: str, result: TuningResult) -> Path:
    """Store ``result`` as ``<index_path>/search.json`` (atomically), for that index version."""
    path = Path(index_path) / SEARCH_SETTINGS_FILE
    atomic_write_json(path, {"format": SETTINGS_FORMAT, "index_version": index_version, **result.summary()})
    return path


def read_settings(index_path: str | os.PathLike[str], index_version: str | None) -> SearchSettings | None:
    """The stored settings of ``index_path`` if they were measured on ``index_version``; else ``None``.

    A missing file is ``None`` silently; stale or unreadable settings are ``None`` with a warning.
    """
    path = Path(index_path) / SEARCH_SETTINGS_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("format") != SETTINGS_FORMAT:
            raise ValueError(f"unsupported format {data.get('format')!r}")
        settings = SearchSettings(**data["settings"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
        logger.warning("%s: unreadable search settings, searching with defaults (%s)", path, error)
        return None
    if data.get("index_version") != index_version:
        logger.warning(
            "%s: tuned on index version %s, but %s is live: searching with defaults (rerun the index stage)",
            path,
            data.get("index_version"),
            index_version,
        )
        return None
    return settings


def queries_from_documents(texts: Sequence[str], n: int, seed: int = 42, words: int = 12) -> list[str]:
    """``n`` probe queries when a corpus comes without any: the first ``words`` words of random documents.

    Example:
        >>> queries_from_documents(["a b c d", "e f"], 5, words=2)
        ['a b', 'e f']
    """
    import random

    chosen = random.Random(seed).sample(range(len(texts)), min(n, len(texts)))
    queries = [" ".join(texts[i].split()[:words]) for i in chosen]
    return [q for q in queries if q]


def describe_qps(result: TuningResult) -> str:
    """One line for logs and the CLI summary."""
    ratio = result.qps / result.exact_qps if result.exact_qps else math.nan
    return (
        f"{result.settings.describe()}: recall@{result.k} {result.recall:.3f} (target {result.target}), "
        f"{result.qps:.1f} QPS, {ratio:.2f}x exact MaxSim"
    )
