"""The promotion gate on what users get: quality, the index's recall, and single-query latency.

A challenger becomes ``champion`` only when every criterion passes:

1. **quality**: ``register.metric`` beats the champion's by more than ``register.margin`` on the same
   benchmark (:func:`pipeline.ops.promotion.decide`). With the default metric that is :data:`NDCG_GATE`,
   exact MaxSim over the Nano benchmark with binary relevance, not the quality report's graded nDCG
   (:data:`NDCG_REPORT`); the two differ on graded sets such as NFCorpus.
2. **index_recall**: the challenger's index, searched with the settings stored beside it, reaches
   ``index.recall_target`` recall@10 against exact MaxSim on its probe queries (``metrics/index.json``,
   written by the index stage on this index version). Users are answered through the index, not by exact
   MaxSim: a model whose index loses the documents exact search finds serves worse than its nDCG says.
3. **latency**: the challenger's single-query p95, encoding and searching through its index as the served
   model does, is at most ``register.max_latency_ratio`` times the champion's. Both are loaded in this
   process and asked the same benchmark queries one at a time, interleaved (challenger then champion on one
   query, champion first on the next), ``register.latency_repeats`` times; the criterion compares the
   medians of each pass's p95. The two therefore share the machine's load at every moment, and one noisy
   pass does not decide. A refusal needs the challenger over the bound in most passes too (a slower model is
   over it in every one), and a measurement over the bound is repeated once before refusing, deciding on
   both rounds' passes: on a machine shared with other work (load average 3-8 on 2 cores) the same model
   timed against itself gave ratios from 0.58 to 1.25 in one round, and 1.59 over two rounds once, with
   per-pass p95s from 34 to 632 ms.

Criteria are checked in that order; latency, the costly one (it loads the champion), only when the others
passed and there is a champion to compare with. Every criterion, checked or not, is in the decision record
(``metrics/registry.json``) and on the model version's tags, with its values.

Example:
    >>> index = {"search": {"recall@10": 0.93, "probe_queries": 50}, "index_version": "v1"}
    >>> recall_criterion(index, target=0.95).as_dict()["passed"]
    False
    >>> verdict([Criterion("quality", True, 0.6, 0.5, "beats"), recall_criterion(index, 0.95)])[0]
    False
"""

from __future__ import annotations

import dataclasses
import logging
import math
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pipeline.ops.promotion import PRECISION, EvaluationError
from pipeline.project.io import read_json

logger = logging.getLogger(__name__)

#: The two nDCG@10 numbers the project shows, and which one the gate uses (``register.metric``'s default).
NDCG_GATE = (
    "nDCG@10 of sentence-transformers' NanoBEIR evaluator (the evaluate stage, the gate's default "
    "register.metric): exact MaxSim over the Nano benchmark's corpus, binary relevance (a relevant "
    "document counts 1 whatever its qrels grade)"
)
NDCG_REPORT = (
    "nDCG@10 of pytrec_eval (trec_eval's ndcg_cut_10; the quality report): graded relevance (the qrels "
    "grade is the gain), over every judged query of the full test set, through PLAID and exact MaxSim"
)

#: Measures ``(challenger p95s, champion p95s)`` in ms, one per pass, for a champion's model URI.
MeasureLatency = Callable[[str], tuple[list[float], list[float]]]


@dataclasses.dataclass(frozen=True)
class Criterion:
    """One promotion criterion: passed (None: not checked), its value, what it was held against, and why."""

    name: str
    passed: bool | None
    value: float | None
    threshold: float | None
    detail: str
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def verdict(criteria: Sequence[Criterion]) -> tuple[bool, str]:
    """Promote iff no criterion failed (unchecked ones do not block); the reason names each.

    Example:
        >>> quality = Criterion("quality", True, 0.6, 0.5, "beats")
        >>> verdict([quality, Criterion("latency", False, 2.0, 1.2, "slow")])
        (False, 'refused by latency: slow | passed quality: beats')
    """
    failed = [c for c in criteria if c.passed is False]
    passed = [c for c in criteria if c.passed]
    parts = [f"refused by {c.name}: {c.detail}" for c in failed] + [
        f"passed {c.name}: {c.detail}" for c in passed
    ]
    parts += [f"{c.name} not checked: {c.detail}" for c in criteria if c.passed is None]
    return not failed, " | ".join(parts)


def quality_criterion(
    promote: bool, comparison: str, reason: str, value: float, champion_value: float | None, margin: float
) -> Criterion:
    """The quality rule's outcome (:func:`pipeline.ops.promotion.decide`) as a criterion."""
    threshold = None if champion_value is None else round(champion_value + margin, PRECISION)
    return Criterion("quality", promote, value, threshold, reason, {"comparison": comparison})


def read_index_metrics(path: Path, index_version: str | None) -> dict[str, Any]:
    """``metrics/index.json``, checked: it must hold the tuned search's recall, measured on this index.

    ``index_version`` is the registered index's live version (its ``CURRENT``); numbers measured on another
    build of the index are refused, naming both. A file from before versions were recorded is accepted.
    """
    try:
        data = read_json(path)
    except FileNotFoundError:
        raise EvaluationError(
            f"{path}: not found: the index has no measured search (run the index stage); nothing registered"
        ) from None
    except ValueError as error:
        raise EvaluationError(str(error)) from None
    search = data.get("search") if isinstance(data, dict) else None
    if not isinstance(search, dict) or not isinstance(search.get("recall@10"), int | float):
        raise EvaluationError(
            f"{path}: no search.recall@10: re-run the index stage (it tunes and measures search)"
        )
    recorded = data.get("index_version")
    if recorded is None:
        logger.warning("%s: no index_version; cannot check it was measured on the registered index", path)
    elif index_version is not None and recorded != index_version:
        raise EvaluationError(
            f"{path}: measured on index version {recorded}, but the index to register is {index_version}: "
            "re-run the index stage (dvc repro index) before registering"
        )
    return data


def recall_criterion(index_metrics: dict[str, Any], target: float) -> Criterion:
    """The index's tuned recall@10 against exact MaxSim must reach ``index.recall_target``."""
    search = index_metrics["search"]
    recall = float(search["recall@10"])
    passed = round(recall, PRECISION) >= round(target, PRECISION)
    probes = search.get("probe_queries", "?")
    source = search.get("probe_source", "probe queries")
    detail = (
        f"index recall@10 vs exact MaxSim {recall:.4f} {'>=' if passed else '<'} index.recall_target "
        f"{target:.4f} on {probes} probe queries ({source}), settings {search.get('description', '?')}"
    )
    extra = {
        key: search.get(key) for key in ("recall@10_bound", "qps", "exact_qps", "p95_ms", "probe_queries")
    }
    return Criterion("index_recall", passed, recall, target, detail, extra)


#: Share of side-by-side passes in which the challenger must be over the bound for a refusal.
CONSISTENT_SHARE = 0.75


def latency_criterion(
    challenger: Sequence[float], champion: Sequence[float], max_ratio: float, champion_version: str
) -> Criterion:
    """Challenger p95 / champion p95 (medians over passes) must be at most ``max_ratio``, or else the
    challenger must not be over it consistently.

    A refusal needs both: the ratio of the medians over the bound, and the challenger over the bound in at
    least :data:`CONSISTENT_SHARE` of the passes, each pass comparing the two measured side by side. A slower
    model is over it in (nearly) every pass; on a loaded machine a model timed against itself was over it in
    about half (per-pass p95s from 34 to 632 ms), which is noise, not a slower model: recorded, not refused.

    Example:
        >>> latency_criterion([130.0, 125.0, 128.0], [100.0, 100.0, 100.0], 1.2, "1").passed
        False
        >>> noisy = latency_criterion([400.0, 60.0, 130.0, 90.0], [100.0, 90.0, 100.0, 95.0], 1.2, "1")
        >>> noisy.passed, noisy.extra["passes_over_bound"]
        (True, 2)
    """
    mine, theirs = statistics.median(challenger), statistics.median(champion)
    ratio = mine / theirs if theirs > 0 else math.inf
    bound = round(max_ratio, PRECISION)
    over = sum(
        1 for c, h in zip(challenger, champion, strict=True) if h <= 0 or round(c / h, PRECISION) > bound
    )
    consistent = over >= CONSISTENT_SHARE * len(challenger)
    within = round(ratio, PRECISION) <= bound
    passed = within or not consistent
    detail = (
        f"single-query p95 {mine:.1f} ms vs champion v{champion_version} {theirs:.1f} ms: ratio {ratio:.3f} "
        f"{'<=' if within else '>'} register.max_latency_ratio {max_ratio:.3f} (median of {len(challenger)} "
        f"interleaved passes, same queries, one process; over the bound in {over} of them)"
    )
    if not within and not consistent:
        detail += f": not consistently slower (a refusal needs {CONSISTENT_SHARE:.0%} of passes), noise"
    extra = {
        "challenger_p95_ms": round(mine, 3),
        "champion_p95_ms": round(theirs, 3),
        "passes_over_bound": over,
        "challenger_pass_p95_ms": [round(v, 3) for v in challenger],
        "champion_pass_p95_ms": [round(v, 3) for v in champion],
    }
    return Criterion("latency", passed, round(ratio, 4), max_ratio, detail, extra)


def not_checked(name: str, why: str, threshold: float | None = None) -> Criterion:
    return Criterion(name, None, None, threshold, why)


def interleaved_p95(
    challenger: Callable[[str], Any], champion: Callable[[str], Any], queries: Sequence[str], repeats: int
) -> tuple[list[float], list[float]]:
    """Each pass's p95 (ms) of one query at a time, for both, the two alternating on every query.

    The order flips from query to query (challenger first, then champion first), so neither always runs
    on a cache the other just warmed. One untimed query each first: the first call pays for lazy setup.

    Example:
        >>> mine, theirs = interleaved_p95(lambda q: None, lambda q: time.sleep(0.002), ["a", "b"], repeats=3)
        >>> len(mine), all(t > m for m, t in zip(mine, theirs))
        (3, True)
    """
    from pipeline.ops.canary import percentile

    if not queries:
        raise ValueError("no queries to time")
    challenger(queries[0])
    champion(queries[0])
    passes: tuple[list[float], list[float]] = ([], [])
    for _ in range(repeats):
        times: tuple[list[float], list[float]] = ([], [])
        for position, query in enumerate(queries):
            order = (0, 1) if position % 2 == 0 else (1, 0)
            for which in order:
                ask = challenger if which == 0 else champion
                started = time.perf_counter()
                ask(query)
                times[which].append((time.perf_counter() - started) * 1000.0)
        for which in (0, 1):
            passes[which].append(percentile(times[which], 95))
    return passes


@dataclasses.dataclass(frozen=True)
class GateInputs:
    """What the gate needs beside the quality metric: the index's measured search and a latency probe."""

    index_metrics: Mapping[str, Any] | None = None
    recall_target: float = 0.95
    measure_latency: MeasureLatency | None = None


def criteria(
    config: Any, inputs: GateInputs, quality: Criterion, champion: Any | None
) -> tuple[Criterion, ...]:
    """Quality, then the index's recall, then latency (measured only when it can still decide)."""
    target = inputs.recall_target
    if inputs.index_metrics is None:
        recall = not_checked("index_recall", "no index metrics given", target)
    else:
        recall = recall_criterion(dict(inputs.index_metrics), target)
    refused = quality.passed is False or recall.passed is False
    return quality, recall, _latency(config, inputs, champion, refused=refused)


def _latency(config: Any, inputs: GateInputs, champion: Any | None, refused: bool) -> Criterion:
    ratio = config.max_latency_ratio
    if ratio is None:
        return not_checked("latency", "register.max_latency_ratio is null (off)")
    if champion is None:
        return not_checked("latency", "no champion to compare with", ratio)
    if refused:
        return not_checked("latency", "not measured: an earlier criterion refused the challenger", ratio)
    if inputs.measure_latency is None:
        return not_checked("latency", "no latency measurement given", ratio)
    uri = f"models:/{champion.name}/{champion.version}"
    try:
        mine, theirs = inputs.measure_latency(uri)
        criterion = latency_criterion(mine, theirs, ratio, str(champion.version))
        if criterion.passed is False:
            # Over the bound: measured once more before refusing, and decided on all passes. A slower model
            # stays over it; a burst of load on a shared machine (seen: same model, ratio 1.25) does not.
            logger.info("registry: %s; measuring again before refusing", criterion.detail)
            more_mine, more_theirs = inputs.measure_latency(uri)
            criterion = latency_criterion(
                mine + more_mine, theirs + more_theirs, ratio, str(champion.version)
            )
    except ChampionUnavailable as error:  # a champion that cannot answer cannot set the bar
        logger.warning("registry: could not time champion v%s: %s", champion.version, error)
        return not_checked("latency", f"champion v{champion.version} could not be loaded ({error})", ratio)
    return criterion


def numbers(checked: Sequence[Criterion]) -> dict[str, float]:
    """The gate's measured values as metrics (``gate_index_recall``, ``gate_latency_ratio`` ...)."""
    numbers: dict[str, float] = {}
    for criterion in checked:
        if criterion.value is not None and criterion.name != "quality":
            numbers[f"gate_{criterion.name}"] = float(criterion.value)
        for key in ("challenger_p95_ms", "champion_p95_ms"):
            if isinstance(criterion.extra.get(key), int | float):
                numbers[f"gate_{key}"] = float(criterion.extra[key])
    return numbers


class ChampionUnavailable(RuntimeError):
    """The champion could not be loaded to be timed (it cannot answer either): latency is not compared."""


def latency_queries(benchmark: Path, n: int) -> list[str]:
    """The first ``n`` benchmark queries by id: the same ones for every challenger and champion."""
    from pipeline.data.benchmark import load_prepared_benchmarks

    queries: list[str] = []
    for data in load_prepared_benchmarks(benchmark).values():
        queries += [data.queries[qid] for qid in sorted(data.queries)]
    return queries[:n]


def measure_latency_with(
    model_dir: Path, index_dir: Path, benchmark: Path, config: Any, precision: str
) -> MeasureLatency:
    """A latency measurement for the gate: the challenger (from its folders) against a registered champion.

    Both are :class:`pipeline.ops.serving.ColBERTSearchModel`, the served pyfunc: the challenger built from
    the model and index folders as they will be packaged, the champion downloaded from the registry. They
    answer ``config.latency_queries`` benchmark queries, ``config.latency_repeats`` passes
    (:func:`interleaved_p95`).
    """

    def measure(champion_uri: str) -> tuple[list[float], list[float]]:
        import tempfile
        from types import SimpleNamespace

        import mlflow.pyfunc
        import pandas as pd

        from pipeline.ops import serving

        queries = latency_queries(benchmark, config.latency_queries)
        challenger = serving.ColBERTSearchModel()
        artifacts = {serving.MODEL_ARTIFACT: str(model_dir), serving.INDEX_ARTIFACT: str(index_dir)}
        challenger.load_context(
            SimpleNamespace(artifacts=artifacts, model_config={"k": config.k, "precision": precision})
        )
        with tempfile.TemporaryDirectory(prefix="champion-latency-") as scratch:
            try:
                champion = mlflow.pyfunc.load_model(champion_uri, dst_path=scratch).unwrap_python_model()
            except Exception as error:  # a champion that cannot load: nothing to compare with
                raise ChampionUnavailable(f"{champion_uri}: {type(error).__name__}: {error}") from error

            def ask(model: Any) -> Callable[[str], Any]:
                return lambda query: model.predict(None, pd.DataFrame({"query": [query]}))

            return interleaved_p95(ask(challenger), ask(champion), queries, config.latency_repeats)

    return measure
