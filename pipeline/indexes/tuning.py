"""Search settings that reach a recall target in the least time, measured on probe queries.

In this module: the tuner, the trials it times and the file it writes. The settings themselves, and how
an index searches with them, are :mod:`pipeline.indexes.search_settings`.

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
    >>> hits = [[(1, 1.0), (2, 0.5)], [(3, 1.0), (4, 0.5)]]
    >>> recall([[(1, 1.0), (9, 0.5)], [(3, 1.0), (4, 0.5)]], hits, k=2)
    0.75
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.indexes.embedding_store import (  # noqa: F401  (part of this module's API: the store it tunes over)
    STORE_FOLDER,
    EmbeddingStore,
    EmbeddingStoreWriter,
    Hits,
    open_store,
)
from pipeline.indexes.search_settings import (  # noqa: F401  (part of this module's API: what it chooses)
    SEARCH_SETTINGS_FILE,
    SETTINGS_FORMAT,
    CandidateSearch,
    SearchSettings,
    read_settings,
    search_slots,
)
from pipeline.project.io import atomic_write_json

logger = logging.getLogger(__name__)


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


@dataclasses.dataclass(frozen=True)
class _Bench:
    """One tuning run's fixed inputs: what each trial searches, how it is timed, what it is held against."""

    store: EmbeddingStore
    queries: list[np.ndarray]
    candidates: CandidateSearch | None
    reference: Hits  #: exact MaxSim's top ``k`` of every probe query
    k: int
    standard_errors: float
    timer: Callable[[], float]

    def trial(self, settings: SearchSettings, results: Hits, seconds: float) -> Trial:
        fractions = _fractions(results, self.reference, self.k)  # once: the mean and its bound come from them
        return Trial(settings, _mean(fractions), seconds, _bound(fractions, self.standard_errors))

    def plaid(self, probe: int, n_full: int, depth: int) -> tuple[Hits, float]:
        """PLAID's top-``depth`` candidates of every probe query, unfiltered, and the seconds they took."""
        no_filter: list[np.ndarray | None] = [None] * len(self.queries)
        return _timed(
            lambda: self.candidates(self.queries, depth, probe, n_full, no_filter),  # type: ignore[misc]
            self.timer,
        )

    def reranked(
        self, probe: int, n_full: int, depths: list[int], hits: Hits, plaid_seconds: float
    ) -> list[Trial]:
        """A trial per re-scoring depth of one PLAID search (``hits``); depth 0 is PLAID's own order."""
        measured = []
        for rerank in depths:
            settings = SearchSettings(n_ivf_probe=probe, n_full_scores=n_full, rerank=rerank)
            if rerank == 0:
                results, seconds = [row[: self.k] for row in hits], plaid_seconds
            else:
                results, extra = _timed(
                    lambda rerank=rerank: self.store.rescore(
                        self.queries, [[s for s, _ in row[:rerank]] for row in hits], self.k
                    ),
                    self.timer,
                )
                seconds = plaid_seconds + extra
            measured.append(self.trial(settings, results, seconds))
        return measured

    def run(self, settings: SearchSettings, batch: int) -> tuple[Hits, float]:
        """Every probe query searched under ``settings``, ``batch`` queries a call; the seconds it took."""
        return _timed(
            lambda: _batched(
                lambda chunk: search_slots(
                    settings,
                    self.store,
                    self.candidates,  # type: ignore[arg-type]
                    chunk,
                    self.k,
                    [None] * len(chunk),
                ),
                self.queries,
                batch,
            ),
            self.timer,
        )


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
    reaching the target (see :func:`_plaid_row`); one PLAID search at the deepest depth serves every
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
    bench = _Bench(store, queries, candidates, reference, k, standard_errors, timer)
    exact = SearchSettings(mode="exact")
    trials: list[Trial] = [Trial(exact, 1.0, exact_seconds, 1.0)] if consider_exact else []
    if candidates is not None:
        fastest = min((t.seconds for t in trials if t.recall_bound >= target), default=math.inf)
        trials.extend(_plaid_trials(bench, probes, full_scores, reranks, target, slack, fastest))
    best, reached_target = _fastest_passing(bench, trials, target, finalists, batch_sizes)
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


def recheck(
    store: EmbeddingStore,
    queries: Sequence[np.ndarray],
    candidates: CandidateSearch | None,
    settings: SearchSettings,
    *,
    target: float = 0.95,
    k: int = 10,
    standard_errors: float = 1.645,
    timer: Callable[[], float] = time.perf_counter,
) -> TuningResult:
    """Measure stored ``settings`` again on the index as it is now (after an in-place update): recall@``k``
    against exact MaxSim over ``store`` and their speed, as one trial. ``reached`` says whether they still
    reach ``target`` (held against :func:`recall_bound`, as :func:`tune` holds its choice); when they do not,
    the caller tunes afresh.
    """
    if not queries:
        raise ValueError("recheck needs at least one probe query")
    if settings.mode == "plaid" and candidates is None:
        raise ValueError("PLAID settings need the PLAID search to be re-checked")
    queries = list(queries)
    reference, exact_seconds = _timed(lambda: store.exact_topk(queries, k), timer)
    bench = _Bench(store, queries, candidates, reference, k, standard_errors, timer)
    trial = bench.trial(settings, *bench.run(settings, settings.batch_size))
    return TuningResult(
        settings=settings,
        recall=trial.recall,
        qps=len(queries) / trial.seconds,
        target=target,
        reached=trial.recall_bound >= target,
        recall_bound=trial.recall_bound,
        exact_qps=len(queries) / exact_seconds,
        queries=len(queries),
        k=k,
        trials=[trial],
    )


def _plaid_trials(
    bench: _Bench,
    probes: Sequence[int],
    full_scores: Sequence[int],
    reranks: Sequence[int],
    target: float,
    slack: float,
    fastest: float,
) -> list[Trial]:
    """The PLAID settings' trials, row by row (one row per ``n_ivf_probe``), cheapest first.

    ``fastest`` is the time of the fastest setting already reaching ``target`` (exact search's, or infinity).
    """
    depths = sorted({r for r in reranks if r == 0 or r >= bench.k})
    trials: list[Trial] = []
    for probe in probes:
        row, fastest, slower_from_the_start = _plaid_row(
            bench, probe, sorted(full_scores), depths, target, slack, fastest
        )
        trials.extend(row)
        # PLAID's cost grows with n_ivf_probe: a row whose first setting is already too slow means every
        # later row is too.
        if slower_from_the_start:
            break
    return trials


def _plaid_row(
    bench: _Bench,
    probe: int,
    full_scores: list[int],
    depths: list[int],
    target: float,
    slack: float,
    fastest: float,
) -> tuple[list[Trial], float, bool]:
    """One ``n_ivf_probe``'s trials; the fastest time reaching ``target`` after them; whether the row's first
    PLAID search was already too slow.

    PLAID's cost grows with ``n_full_scores``, so the row is walked cheapest first and cut short: a setting
    that reaches the target ends it (more full scores only cost more); so does doubling ``n_full_scores``
    without gaining recall (the probed centroids bound the candidates); and once PLAID alone is slower than
    the fastest setting that already reaches the target (exact search included), the rest of the row can
    only be slower.
    """
    trials: list[Trial] = []
    previous = -1.0
    for n_full in full_scores:
        usable = [r for r in depths if r <= n_full]
        if n_full < bench.k or not usable:
            continue
        hits, plaid_seconds = bench.plaid(probe, n_full, max(bench.k, *usable))
        if plaid_seconds > slack * fastest:
            return trials, fastest, not trials
        measured = bench.reranked(probe, n_full, usable, hits, plaid_seconds)
        trials.extend(measured)
        best = max(t.recall_bound for t in measured)
        logger.info("tuning: probe %d, n_full_scores %d: recall@%d bound %.3f", probe, n_full, bench.k, best)
        fastest = min([fastest, *(t.seconds for t in measured if t.recall_bound >= target)])
        if best >= target or best <= previous + 1e-9:
            break
        previous = best
    return trials, fastest, False


def _fastest_passing(
    bench: _Bench, trials: list[Trial], target: float, finalists: int, batch_sizes: Sequence[int]
) -> tuple[Trial, bool]:
    """The fastest trial reaching ``target`` once its ``finalists`` are timed again and its query batch size
    chosen; and whether any reached it (if none did, the best recall stands in, marked as not reached)."""
    passing = sorted((t for t in trials if t.recall_bound >= target), key=lambda t: t.seconds)
    reached_target = bool(passing)
    if not passing:  # only possible without exact search: report the best recall, marked as not reached
        passing = sorted(trials, key=lambda t: (-t.recall_bound, t.seconds))[:1]
    retimed = []
    for finalist in passing[:finalists]:
        results, seconds = bench.run(finalist.settings, finalist.settings.batch_size)
        retimed.append(bench.trial(finalist.settings, results, min(seconds, finalist.seconds)))
    best = min(retimed, key=lambda t: t.seconds)
    for batch in batch_sizes:
        if batch == best.settings.batch_size:
            continue
        settings = dataclasses.replace(best.settings, batch_size=batch)
        results, seconds = bench.run(settings, batch)
        if seconds < best.seconds:
            best = bench.trial(settings, results, seconds)
    return best, reached_target


# ---------------------------------------------------------------------------------------------- on disk
def write_settings(index_path: str | os.PathLike[str], index_version: str, result: TuningResult) -> Path:
    """Store ``result`` as ``<index_path>/search.json`` (atomically), for that index version."""
    path = Path(index_path) / SEARCH_SETTINGS_FILE
    atomic_write_json(path, {"format": SETTINGS_FORMAT, "index_version": index_version, **result.summary()})
    return path


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
