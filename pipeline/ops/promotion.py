"""The promotion rule and the registry's records, as pure functions: no MLflow calls, no files written.

**The rule.** A new model version becomes ``champion`` when there is no champion yet, or when its
``register.metric`` beats the champion's **on the same benchmark** by more than ``register.margin``. Values
are compared at :data:`PRECISION` (rounded to 6 decimals) so that float noise never decides: ``0.1 + 0.2``
does not beat ``0.3``, and a tie never promotes. "The same benchmark" is the DVC md5 of the held-out benchmark
(``benchmark.md5`` on every version); a champion measured on another one is re-evaluated (the caller passes
how) or, failing that, kept ("not comparable").

Example:
    >>> compare(0.1 + 0.2, 0.3, 0.0)[0], compare(0.62, 0.60, 0.01)[0]
    (False, True)
    >>> decision = Decision(promoted=True, version="3", reason="first")
    >>> Decision.from_dict(decision.as_dict()) == decision
    True
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from pipeline.ops.lineage import params_hash
from pipeline.project.errors import InputError
from pipeline.project.io import read_json

logger = logging.getLogger(__name__)

CHAMPION = "champion"
CHALLENGER = "challenger"

#: Model version tag keys.
BENCHMARK_TAG = "benchmark.md5"
METRIC_NAME_TAG = "metric.name"
METRIC_VALUE_TAG = "metric.value"
EVAL_METRICS_TAG = "eval.metrics"
IDENTITY_TAG = "registration.key"
REEVAL_PREFIX = "reeval."

#: Metric values are compared rounded to this many decimals (1e-6): float noise never promotes.
PRECISION = 6

Reevaluate = Callable[[str], Mapping[str, float]]


class EvaluationError(InputError):
    """The evaluation to register is missing, malformed or failed (names the file and key)."""


@dataclasses.dataclass(frozen=True)
class Decision:
    """What the register stage decided: ``metrics/registry.json``, read back by the orchestrator."""

    promoted: bool
    version: str | None
    reason: str
    model_name: str = ""
    metric: str = ""
    value: float | None = None
    margin: float = 0.0
    benchmark: str | None = None
    comparison: str = ""  # first_version | same_benchmark | re_evaluated | not_comparable | corpus_update
    champion_before: str | None = None
    champion_value: float | None = None
    champion_benchmark: str | None = None
    champion_after: str | None = None
    model_uri: str = ""
    run_id: str | None = None
    reused_version: bool = False
    lineage: dict[str, str] = dataclasses.field(default_factory=dict)
    #: Every gate criterion (quality, index_recall, latency): passed (None: not checked), value, threshold.
    criteria: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    #: Which nDCG the gate used and how it differs from the report's (``pipeline.ops.gate``).
    ndcg_definitions: dict[str, str] = dataclasses.field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "decision") -> Decision:
        """Check and read a decision; a missing or mistyped key is an :class:`InputError` naming it."""
        if not isinstance(data, Mapping):
            raise InputError(f"{source}: expected a JSON object, got {type(data).__name__}")
        for key in ("promoted", "reason"):
            if key not in data:
                raise InputError(f"{source}: missing key {key!r}")
        if not isinstance(data["promoted"], bool):
            raise InputError(f"{source}: promoted: expected true or false, got {data['promoted']!r}")
        known = {field.name for field in dataclasses.fields(cls)}
        values = {key: value for key, value in data.items() if key in known}
        values["version"] = None if data.get("version") is None else str(data["version"])
        values["reason"] = str(data["reason"])
        return cls(**values)

    @classmethod
    def read(cls, path: Path) -> Decision:
        """Read ``metrics/registry.json`` (written by the register stage)."""
        return cls.from_dict(read_json(path), source=str(path))


#: Keys of ``metrics/eval.json`` / ``metrics/baseline.json`` that tie a score to what was scored.
SCORED_KEYS = {"model_md5": "lineage.model.md5", "benchmark_md5": "lineage.data_eval.md5"}


def check_scored_artifacts(
    path: Path, lineage: Mapping[str, str], keys: tuple[str, ...] = tuple(SCORED_KEYS)
) -> None:
    """Refuse metrics that were not measured on the artifacts at hand (their md5s differ, or are missing).

    ``lineage`` holds the md5s of what is being registered (``lineage.model.md5``, ``lineage.data_eval.md5``).

    Example:
        >>> import tempfile, json
        >>> path = Path(tempfile.mkdtemp()) / "eval.json"
        >>> _ = path.write_text(json.dumps({"ndcg": 0.5, "model_md5": "old.dir", "benchmark_md5": "b.dir"}))
        >>> check_scored_artifacts(path, {"lineage.model.md5": "old.dir", "lineage.data_eval.md5": "b.dir"})
        >>> check_scored_artifacts(path, {"lineage.model.md5": "new.dir", "lineage.data_eval.md5": "b.dir"})
        Traceback (most recent call last):
        pipeline.ops.promotion.EvaluationError: ...eval.json: model_md5 is old.dir, but the model here is ...
    """
    data = read_json(path)
    for key in keys:
        expected = lineage.get(SCORED_KEYS[key])
        if expected is None:
            continue  # nothing to compare with (the artifact is absent; its own check says so)
        recorded = data.get(key) if isinstance(data, dict) else None
        if recorded is None:
            raise EvaluationError(
                f"{path}: no {key}: these metrics do not say what they scored; "
                "re-run the stage that writes them"
            )
        if recorded != expected:
            what = "model" if key == "model_md5" else "benchmark"
            raise EvaluationError(
                f"{path}: {key} is {recorded}, but the {what} here is {expected}: the metrics belong to "
                f"another {what}; re-run evaluate (dvc repro evaluate) before registering"
            )


def compare(value: float, champion_value: float, margin: float) -> tuple[bool, str]:
    """The promotion rule on comparable numbers: promote iff ``round(value - champion, 6) > margin``.

    Example:
        >>> compare(0.62, 0.60, 0.01)
        (True, 'beats the champion by 0.0200 > margin 0.0100')
        >>> compare(0.60, 0.60, 0.0)
        (False, 'does not beat the champion by more than margin 0.0000 (0.6000 vs 0.6000)')
        >>> compare(0.1 + 0.2, 0.3, 0.0)[0]  # 5.6e-17 apart: a tie at 1e-6
        False
    """
    delta = round(round(value, PRECISION) - round(champion_value, PRECISION), PRECISION)
    if delta > round(margin, PRECISION):
        return True, f"beats the champion by {delta:.4f} > margin {margin:.4f}"
    return (
        False,
        f"does not beat the champion by more than margin {margin:.4f} ({value:.4f} vs {champion_value:.4f})",
    )


def registration_key(lineage: Mapping[str, str], metrics: Mapping[str, float], metric: str) -> str:
    """What identifies "the same registration": model, index, benchmark and evaluation.

    Example:
        >>> lineage = {"lineage.model.md5": "m", "lineage.index.md5": "i", "lineage.data_eval.md5": "b"}
        >>> key = registration_key(lineage, {"ndcg": 0.5}, "ndcg")
        >>> key == registration_key(lineage, {"ndcg": 0.5}, "ndcg")
        True
        >>> key == registration_key(lineage, {"ndcg": 0.6}, "ndcg")
        False
    """
    parts = {
        "model": lineage.get("lineage.model.md5"),
        "index": lineage.get("lineage.index.md5"),
        "benchmark": lineage.get("lineage.data_eval.md5"),
        "metric": metric,
        "metrics": dict(sorted(metrics.items())),
    }
    return params_hash(parts)


def decide(
    value: float,
    metric: str,
    margin: float,
    benchmark: str | None,
    champion: Any | None,
    existing: Any | None,
    reevaluate: Reevaluate | None,
) -> tuple[bool, str, str, float | None]:
    """``(promote, comparison, reason, champion_value)`` for a new value against the current champion.

    ``champion`` and ``existing`` (the version that already holds this registration, if any) are MLflow model
    versions or anything with ``name``, ``version`` and ``tags``.

    Example:
        >>> from types import SimpleNamespace
        >>> champion = SimpleNamespace(name="m", version="1", tags={
        ...     BENCHMARK_TAG: "b", METRIC_NAME_TAG: "ndcg", METRIC_VALUE_TAG: "0.5"})
        >>> decide(0.5, "ndcg", 0.0, "b", champion, None, None)[:2]
        (False, 'same_benchmark')
        >>> decide(0.6, "ndcg", 0.0, "b", champion, None, None)[0]
        True
        >>> decide(0.9, "ndcg", 0.0, "other", champion, None, None)[:2]
        (False, 'not_comparable')
    """
    if champion is None:
        return True, "first_version", "no champion yet: the first version becomes champion", None
    if existing is not None and str(existing.version) == str(champion.version):
        reason = f"this model, index and evaluation are already champion v{champion.version}"
        return False, "same_benchmark", reason, value
    champion_value, comparison, note = champion_value_on(champion, metric, benchmark, reevaluate)
    if champion_value is None:
        return False, comparison, f"not comparable: {note}; keeping champion v{champion.version}", None
    promote, why = compare(value, champion_value, margin)
    reason = f"{metric} {value:.4f} vs champion v{champion.version} {champion_value:.4f}: {why}"
    return promote, comparison, reason + (f" ({note})" if note else ""), champion_value


#: ``registration.kind`` of a version whose model is the champion's, with another index (a corpus update).
CORPUS_UPDATE = "corpus_update"
KIND_TAG = "registration.kind"


def corpus_update_of(champion: Any | None, lineage: Mapping[str, str], benchmark: str | None) -> str | None:
    """The champion's version when registering ``lineage`` is a corpus update of it, else ``None``.

    A corpus update holds the champion's model (the same ``lineage.model.md5``), evaluated on the same
    benchmark, with another index: the model and its evaluation are the champion's, so there is no quality to
    compare; only the index changed.

    Example:
        >>> from types import SimpleNamespace
        >>> champion = SimpleNamespace(version="3", tags={
        ...     "lineage.model.md5": "m.dir", "lineage.index.md5": "i1.dir", BENCHMARK_TAG: "b.dir"})
        >>> new = {"lineage.model.md5": "m.dir", "lineage.index.md5": "i2.dir"}
        >>> corpus_update_of(champion, new, "b.dir"), corpus_update_of(champion, new, "other.dir")
        ('3', None)
        >>> corpus_update_of(champion, {**new, "lineage.model.md5": "retrained.dir"}, "b.dir") is None
        True
    """
    if champion is None or benchmark is None:
        return None
    tags = dict(champion.tags or {})
    model = lineage.get("lineage.model.md5")
    same_model = model is not None and tags.get("lineage.model.md5") == model
    new_index = tags.get("lineage.index.md5") != lineage.get("lineage.index.md5")
    if same_model and new_index and tags.get(BENCHMARK_TAG) == benchmark:
        return str(champion.version)
    return None


def read_eval_metrics(path: Path, metric: str) -> dict[str, float]:
    """The flat metrics in ``path``; errors name the file and the key (missing, not a number, not finite).

    Example:
        >>> import tempfile, json
        >>> path = Path(tempfile.mkdtemp()) / "eval.json"
        >>> _ = path.write_text(json.dumps({"ndcg": 0.5}))
        >>> read_eval_metrics(path, "ndcg")
        {'ndcg': 0.5}
        >>> read_eval_metrics(path, "recall")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        pipeline.ops.promotion.EvaluationError: ...eval.json: no key 'recall' (register.metric); keys: ndcg
    """
    path = Path(path)
    try:
        data = read_json(path)
    except FileNotFoundError:
        raise EvaluationError(
            f"{path}: not found: the model has no evaluation (run the evaluate stage); nothing registered"
        ) from None
    except ValueError as error:
        raise EvaluationError(str(error)) from None
    if not isinstance(data, dict):
        raise EvaluationError(f"{path}: expected a JSON object of metrics, got {type(data).__name__}")
    if metric not in data:
        raise EvaluationError(
            f"{path}: no key {metric!r} (register.metric); keys: {', '.join(sorted(data)) or '(none)'}"
        )
    metrics: dict[str, float] = {}
    for key, value in data.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            if key == metric:
                raise EvaluationError(f"{path}: {key}: expected a number, got {value!r}")
            continue
        metrics[key] = float(value)
    if not math.isfinite(metrics[metric]):
        raise EvaluationError(
            f"{path}: {metric}: {metrics[metric]} is not a finite number (failed evaluation)"
        )
    return metrics


def metric_key(metric: str) -> str:
    # Tag keys allow letters, digits and _ - . / : and spaces; metric names use '@' (ndcg@10).
    return metric.replace("@", "_at_")


def reeval_tag(benchmark: str, metric: str) -> str:
    """The champion tag caching its re-evaluation on ``benchmark``."""
    return f"{REEVAL_PREFIX}{benchmark}.{metric_key(metric)}"


def tag_float(tags: Mapping[str, str], key: str) -> float | None:
    try:
        value = float(tags[key])
    except (KeyError, TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def champion_value_on(
    champion: Any, metric: str, benchmark: str | None, reevaluate: Reevaluate | None
) -> tuple[float | None, str, str]:
    """The champion's ``metric`` on ``benchmark``: ``(value, comparison, note)``.

    ``comparison`` is ``same_benchmark`` (its own evaluation), ``re_evaluated`` (a cached or fresh
    re-evaluation on ``benchmark``) or ``not_comparable`` (value None; the note says why).
    """
    tags = dict(champion.tags or {})
    champion_benchmark = tags.get(BENCHMARK_TAG)
    own = tag_float(tags, METRIC_VALUE_TAG) if tags.get(METRIC_NAME_TAG) == metric else None
    if benchmark is not None and champion_benchmark == benchmark and own is not None:
        return own, "same_benchmark", ""
    cached = tag_float(tags, reeval_tag(benchmark, metric)) if benchmark else None
    if cached is not None:
        return cached, "re_evaluated", f"champion re-evaluated earlier on benchmark {benchmark}"
    why = (
        f"champion v{champion.version} has no {metric!r} on record"
        if own is None
        else f"champion v{champion.version} was measured on benchmark {champion_benchmark}, not {benchmark}"
    )
    if benchmark is None:
        return None, "not_comparable", f"{why}; the current benchmark is unknown"
    if reevaluate is None:
        return None, "not_comparable", f"{why}; re-evaluation is off"
    logger.info("registry: %s: re-evaluating it on the current benchmark", why)
    try:
        metrics = reevaluate(f"models:/{champion.name}/{champion.version}")
        value = float(metrics[metric])
    except Exception as error:  # any failure here must mean "keep the champion", with the reason
        logger.warning("registry: re-evaluating champion v%s failed: %s", champion.version, error)
        return None, "not_comparable", f"{why}; re-evaluating it failed ({type(error).__name__}: {error})"
    if not math.isfinite(value):
        return None, "not_comparable", f"{why}; its re-evaluation gave {value}"
    return value, "re_evaluated", f"{why}; re-evaluated on {benchmark}"


def describe_version(version: Any) -> dict[str, Any]:
    """Version, metric, benchmark, lineage hashes and decision of one model version, from its tags."""
    tags = dict(version.tags or {})
    try:
        metrics = json.loads(tags.get(EVAL_METRICS_TAG, "{}"))
    except json.JSONDecodeError:
        metrics = {}
    return {
        "version": str(version.version),
        "uri": f"models:/{version.name}/{version.version}",
        "aliases": list(getattr(version, "aliases", []) or []),
        "metric": tags.get(METRIC_NAME_TAG),
        "value": tag_float(tags, METRIC_VALUE_TAG),
        "metrics": metrics,
        "benchmark": tags.get(BENCHMARK_TAG),
        "hashes": {
            k.removeprefix("lineage.").removesuffix(".md5"): v
            for k, v in tags.items()
            if k.startswith("lineage.")
        },
        "git_commit": tags.get("git_commit"),
        "params_hash": tags.get("params_hash"),
        "run_id": version.run_id,
        "decision": tags.get("promotion.reason"),
    }
