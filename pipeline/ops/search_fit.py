"""Search settings that fit how a served version is asked: one query at a time, or a batch.

The index stage's tuner ranks search settings by batched throughput, measured where and when the index was
built (FACTS.md: at 5,000 documents it picks exact MaxSim, and one query then takes the brute-force time).
A server asks one query at a time at concurrency 1, and batches of concurrent requests when it batches. So
when a version is warmed up, on the machine that serves it, the stored (tuned) settings and exact MaxSim are
timed for one query and for a batch (best of ``repeats``), and each size is searched with the faster.

Exact MaxSim is a candidate only where the index kept its full-precision embeddings (the tuned settings
re-score with them): its recall is 1.0, never below the tuned settings', so the choice trades no quality for
speed. An index searched with plain PLAID, or already exactly, is left as it is.

Example (measured on bench/.cache/serve's 1,000 SciFact documents, a loaded 2-core machine: the tuned PLAID
settings 576 ms per query alone, exact MaxSim 79 ms; ``python -m bench.serve`` records it):
    >>> fit = SearchFit(single="exact", batch="tuned", timings_ms={})
    >>> fit.settings_for(1), fit.settings_for(16)
    ('exact', 'tuned')
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

logger = logging.getLogger(__name__)

#: Queries the warm-up times searches with (their content barely matters: the cost is the index's).
FIT_QUERIES = (
    "what is late interaction retrieval?",
    "how do vaccines train the immune system",
    "effects of sleep deprivation on memory",
    "which animals live in the arctic",
)


@dataclasses.dataclass(frozen=True)
class SearchFit:
    """The settings one query and a batch are searched with, and the per-query times that chose them."""

    single: Any
    batch: Any
    timings_ms: dict[str, float]

    def settings_for(self, queries: int) -> Any:
        return self.single if queries <= 1 else self.batch

    def describe(self) -> dict[str, Any]:
        def name(settings: Any) -> str:
            return settings.describe() if hasattr(settings, "describe") else str(settings)

        return {"single": name(self.single), "batch": name(self.batch), "ms_per_query": self.timings_ms}


def fit_search(
    retriever: Any,
    embeddings: Sequence[Any],
    batch: int,
    repeats: int = 2,
    k: int = 10,
    timer: Callable[[], float] = time.perf_counter,
) -> SearchFit | None:
    """Time the index's tuned settings against exact MaxSim for 1 and ``batch`` queries; ``None`` when the
    index has no such choice (no tuned settings needing its stored embeddings, or already exact).

    ``embeddings``: encoded queries (cycled to fill a batch). The index is left with its tuned settings.
    """
    index = retriever.index
    tuned = getattr(index, "search_settings", None)
    if tuned is None or tuned.mode == "exact" or getattr(index, "_embeddings", None) is None:
        return None
    candidates = {"tuned": tuned, "exact": dataclasses.replace(tuned, mode="exact")}
    timings: dict[str, float] = {}
    chosen: dict[str, Any] = {}
    sizes = {"single": 1, "batch": batch} if batch > 1 else {"single": 1}
    try:
        for label, size in sizes.items():
            queries = [embeddings[i % len(embeddings)] for i in range(size)]
            for name, settings in candidates.items():
                index.search_settings = settings
                best = float("inf")
                for _ in range(repeats):
                    started = timer()
                    retriever.retrieve(queries, k=k, show_progress=False)
                    best = min(best, timer() - started)
                timings[f"{label}_{name}"] = round(best * 1000 / size, 2)
            faster = "exact" if timings[f"{label}_exact"] < timings[f"{label}_tuned"] else "tuned"
            chosen[label] = candidates[faster]
    finally:
        index.search_settings = tuned
    fit = SearchFit(single=chosen["single"], batch=chosen.get("batch", chosen["single"]), timings_ms=timings)
    logger.info("search settings fitted where this serves: %s", fit.describe())
    return fit
