"""The model registry: register a version, alias it ``challenger``, promote it to ``champion`` if better.

**The promotion rule.** A new version becomes ``champion`` when

- there is no champion yet (the first version), or
- its ``register.metric`` (from ``metrics/eval.json``) beats the champion's **on the same benchmark** by more
  than ``register.margin``: ``new > champion + margin`` (with margin 0, a tie keeps the champion).

"The same benchmark" is the DVC md5 of ``data/prepared/eval``, tagged on every version as
``benchmark.md5``. When the champion was measured on another benchmark (the data source or the Nano builder
changed), its number is not comparable: the champion is **re-evaluated** on the current benchmark (its model
is downloaded from the registry and scored by the evaluate stage's code), the result is cached on the
champion as tag ``reeval.<benchmark md5>`` and the rule above applies. If re-evaluation is impossible or
fails, the challenger is **not** promoted and the decision says why ("not comparable"). A missing or failed
evaluation never promotes: it is an error naming ``metrics/eval.json`` or the missing key, raised before
anything is registered.

**Registration is all-or-nothing.** The server is checked (bounded retry) and every input is read before
anything is written; the version is created with all its tags in one call; if setting its aliases then
fails, the version is deleted again. Re-running on the same model, index, benchmark and metrics reuses the
version it registered before (an Airflow retry does not pile up versions). Aliases only, never stages.

Example:
    >>> from pipeline import registry  # doctest: +SKIP
    >>> decision = registry.register_and_promote(params, project, eval_metrics)  # doctest: +SKIP
    >>> decision.promoted, decision.version, decision.reason  # doctest: +SKIP
    (True, '3', 'NanoBEIR_mean_MaxSim_ndcg@10 0.6120 beats champion v2 0.5810 by 0.0310 > margin 0.0')
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from pipeline import tracking
from pipeline.config import Params
from pipeline.io import read_json

logger = logging.getLogger(__name__)

CHAMPION = "champion"
CHALLENGER = "challenger"
EVAL_FILE = "metrics/eval.json"
REGISTRY_FILE = "metrics/registry.json"

#: Model version tag keys.
BENCHMARK_TAG = "benchmark.md5"
METRIC_NAME_TAG = "metric.name"
METRIC_VALUE_TAG = "metric.value"
EVAL_METRICS_TAG = "eval.metrics"
IDENTITY_TAG = "registration.key"
REEVAL_PREFIX = "reeval."

Reevaluate = Callable[[str], Mapping[str, float]]


class EvaluationError(ValueError):
    """The evaluation to register is missing, malformed or failed (names the file and key)."""


class RegistrationError(RuntimeError):
    """Registration failed part-way; any version it created has been removed again."""


@dataclasses.dataclass(frozen=True)
class Decision:
    """What the register stage decided (written to ``metrics/registry.json``)."""

    model_name: str
    version: str
    promoted: bool
    reason: str
    metric: str
    value: float
    margin: float
    benchmark: str | None
    comparison: str  # first_version | same_benchmark | re_evaluated | not_comparable
    champion_before: str | None
    champion_value: float | None
    champion_benchmark: str | None
    champion_after: str | None
    model_uri: str
    run_id: str | None
    reused_version: bool
    lineage: dict[str, str]

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# ---------------------------------------------------------------------------------------------- inputs


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
        pipeline.registry.EvaluationError: ...eval.json: no key 'recall' (register.metric); keys: ndcg
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


def compare(value: float, champion_value: float, margin: float) -> tuple[bool, str]:
    """The promotion rule on comparable numbers: promote iff ``value > champion_value + margin``.

    Example:
        >>> compare(0.62, 0.60, 0.01)
        (True, 'beats the champion by 0.0200 > margin 0.0100')
        >>> compare(0.60, 0.60, 0.0)
        (False, 'does not beat the champion by more than margin 0.0000 (0.6000 vs 0.6000)')
    """
    delta = value - champion_value
    if delta > margin:
        return True, f"beats the champion by {delta:.4f} > margin {margin:.4f}"
    return (
        False,
        f"does not beat the champion by more than margin {margin:.4f} ({value:.4f} vs {champion_value:.4f})",
    )


def metric_key(metric: str) -> str:
    # Tag keys allow letters, digits and _ - . / : and spaces; metric names use '@' (ndcg@10).
    return metric.replace("@", "_at_")


def reeval_tag(benchmark: str, metric: str) -> str:
    """The champion tag caching its re-evaluation on ``benchmark``."""
    return f"{REEVAL_PREFIX}{benchmark}.{metric_key(metric)}"


def registration_key(lineage: Mapping[str, str], metrics: Mapping[str, float], metric: str) -> str:
    """What identifies "the same registration": model, index, benchmark and evaluation."""
    parts = {
        "model": lineage.get("lineage.model.md5"),
        "index": lineage.get("lineage.index.md5"),
        "benchmark": lineage.get("lineage.data_eval.md5"),
        "metric": metric,
        "metrics": dict(sorted(metrics.items())),
    }
    return tracking.params_hash(parts)


# ---------------------------------------------------------------------------------------------- champion


def _alias(client: Any, name: str, alias: str, uri: str, retries: int) -> Any | None:
    from mlflow.exceptions import MlflowException

    def lookup() -> Any | None:
        try:
            return client.get_model_version_by_alias(name, alias)
        except MlflowException as error:
            if error.error_code in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND", "INVALID_PARAMETER_VALUE"):
                return None
            raise

    return tracking.call_with_retries(lookup, f"get alias {alias}", uri, retries)


def _tag_float(tags: Mapping[str, str], key: str) -> float | None:
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
    own = _tag_float(tags, METRIC_VALUE_TAG) if tags.get(METRIC_NAME_TAG) == metric else None
    if benchmark is not None and champion_benchmark == benchmark and own is not None:
        return own, "same_benchmark", ""
    cached = _tag_float(tags, reeval_tag(benchmark, metric)) if benchmark else None
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


def reevaluate_with(params: Params, project: Path) -> Reevaluate:
    """A re-evaluator: download a registered version's model and score it on the current benchmark."""

    def run(model_uri: str) -> Mapping[str, float]:
        import mlflow.artifacts

        from pipeline import serving
        from pipeline.config import resolve_path
        from pipeline.stages.evaluate import evaluate_model

        benchmark = resolve_path(params.prepare.output, project) / "eval"
        if not benchmark.is_dir():
            raise FileNotFoundError(f"{benchmark}: no benchmark to re-evaluate on")
        with tempfile.TemporaryDirectory(prefix="champion-") as folder:
            local = mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=folder)
            model_dir = serving.packaged_artifact(Path(local), serving.MODEL_ARTIFACT)
            return evaluate_model(str(model_dir), benchmark, params)

    return run


# ---------------------------------------------------------------------------------------------- register


def _find_registered(client: Any, name: str, key: str, uri: str, retries: int) -> Any | None:
    from mlflow.exceptions import MlflowException

    def search() -> list[Any]:
        try:
            return list(client.search_model_versions(f"name = '{name}'"))
        except MlflowException as error:
            if error.error_code == "RESOURCE_DOES_NOT_EXIST":
                return []
            raise

    versions = tracking.call_with_retries(search, "search model versions", uri, retries)
    matching = [v for v in versions if (v.tags or {}).get(IDENTITY_TAG) == key]
    return max(matching, key=lambda v: int(v.version)) if matching else None


def _link_index_run(
    client: Any, experiment: str, lineage: Mapping[str, str], name: str, version: str
) -> None:
    """Tag the index stage run that built this index with the model version that serves it (best effort)."""
    index_md5 = lineage.get("lineage.index.md5")
    if not index_md5:
        return
    try:
        exp = client.get_experiment_by_name(experiment)
        if exp is None:
            return
        runs = client.search_runs(
            [exp.experiment_id],
            filter_string=f"tags.stage = 'index' and tags.`lineage.index.md5` = '{index_md5}'",
            max_results=5,
        )
        for run in runs:
            client.set_tag(run.info.run_id, "registered_model_version", f"{name}/{version}")
    except Exception as error:  # lineage links are a convenience: never fail a registration on them
        logger.warning("registry: could not tag the index run with %s/%s: %s", name, version, error)


def check_index_matches_model(client: Any, experiment: str, lineage: Mapping[str, str]) -> str | None:
    """Refuse an index built with another model: the index run's input model md5 must be this model's.

    Returns the md5 of the model that encoded the index when the index run is on record, else None.
    """
    index_md5, model_md5 = lineage.get("lineage.index.md5"), lineage.get("lineage.model.md5")
    if not index_md5 or not model_md5:
        return None
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return None
    runs = client.search_runs(
        [exp.experiment_id],
        filter_string=f"tags.stage = 'index' and tags.`lineage.index.md5` = '{index_md5}'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    if not runs:
        logger.warning("registry: no index run on record for index md5 %s; cannot check its model", index_md5)
        return None
    encoded_with = runs[0].data.tags.get("lineage.model.md5")
    if encoded_with and encoded_with != model_md5:
        raise ValueError(
            f"the index (md5 {index_md5}) was built with model md5 {encoded_with}, but the model to register "
            f"has md5 {model_md5}: re-run the index stage so the served index matches the model"
        )
    return encoded_with


def register_and_promote(
    params: Params,
    project: Path,
    metrics: Mapping[str, float],
    lineage: Mapping[str, str],
    model_dir: Path,
    index_dir: Path,
    reevaluate: Reevaluate | None = None,
    log_model: Callable[[], Any] | None = None,
) -> Decision:
    """Register ``model_dir`` + ``index_dir`` as a new version (inside the active run) and apply the rule.

    ``lineage`` holds the tags for the version (see :func:`pipeline.tracking.lineage_tags`);
    ``lineage.data_eval.md5`` identifies the benchmark. ``log_model`` overrides how the pyfunc is logged
    (tests); it must return mlflow's ``ModelInfo``.
    """
    import mlflow
    from mlflow import MlflowClient

    config = params.register
    name, metric, margin = config.model_name, config.metric, config.margin
    value = float(metrics[metric])
    benchmark = lineage.get("lineage.data_eval.md5")
    uri = mlflow.get_tracking_uri()
    retries = params.tracking.retries
    client = MlflowClient(tracking_uri=uri)
    run = mlflow.active_run()
    run_id = run.info.run_id if run else None

    encoded_with = tracking.call_with_retries(
        lambda: check_index_matches_model(client, params.tracking.experiment, lineage),
        "find the index run",
        uri,
        retries,
    )

    # 1. Decide, before anything is written.
    champion = _alias(client, name, CHAMPION, uri, retries)
    champion_before = str(champion.version) if champion else None
    challenger = _alias(client, name, CHALLENGER, uri, retries)
    challenger_before = str(challenger.version) if challenger else None
    key = registration_key(lineage, metrics, metric)
    existing = _find_registered(client, name, key, uri, retries)
    champion_value: float | None = None
    champion_benchmark = (champion.tags or {}).get(BENCHMARK_TAG) if champion else None
    if champion is None:
        promote, comparison, reason = (
            True,
            "first_version",
            "no champion yet: the first version becomes champion",
        )
    elif existing is not None and str(existing.version) == champion_before:
        promote, comparison = False, "same_benchmark"
        champion_value = value
        reason = f"this model, index and evaluation are already champion v{champion_before}"
    else:
        champion_value, comparison, note = champion_value_on(champion, metric, benchmark, reevaluate)
        if champion_value is None:
            promote = False
            reason = f"not comparable: {note}; keeping champion v{champion_before}"
        else:
            promote, why = compare(value, champion_value, margin)
            reason = f"{metric} {value:.4f} vs champion v{champion_before} {champion_value:.4f}: {why}"
            reason += f" ({note})" if note else ""
        if comparison == "re_evaluated" and champion_value is not None and benchmark:
            tag = reeval_tag(benchmark, metric)
            if (champion.tags or {}).get(tag) is None:
                tracking.call_with_retries(
                    lambda: client.set_model_version_tag(name, champion.version, tag, str(champion_value)),
                    "cache the champion's re-evaluation",
                    uri,
                    retries,
                )

    # 2. Log the served model (upload only: no version exists yet), then create the version with its tags.
    tags = {
        **{k: str(v) for k, v in lineage.items() if not k.startswith("mlflow.")},
        BENCHMARK_TAG: benchmark or "unknown",
        METRIC_NAME_TAG: metric,
        METRIC_VALUE_TAG: repr(value),
        EVAL_METRICS_TAG: json.dumps(dict(sorted(metrics.items())))[:90_000],
        IDENTITY_TAG: key,
        "promotion.decision": "promoted" if promote else "not promoted",
        "promotion.reason": reason[:5000],
        "promotion.champion_before": champion_before or "none",
    }
    if encoded_with:
        tags["lineage.index.encoded_with_model.md5"] = encoded_with
    if run_id:
        tags["mlflow_run_id"] = run_id
    reused = existing is not None
    if existing is not None:
        version = existing
        logger.info("registry: %s v%s already holds this model, index and evaluation", name, version.version)
    else:
        info = (log_model or (lambda: _log_default(params, model_dir, index_dir, project)))()
        version = tracking.call_with_retries(
            lambda: mlflow.register_model(info.model_uri, name, tags=tags),
            "create the model version",
            uri,
            retries,
        )
        logger.info("registry: created %s v%s from %s", name, version.version, info.model_uri)

    # 3. Aliases. A failure here removes the version this call created: no half-registered version.
    try:
        tracking.call_with_retries(
            lambda: client.set_registered_model_alias(name, CHALLENGER, version.version),
            "set alias challenger",
            uri,
            retries,
        )
        if promote:
            tracking.call_with_retries(
                lambda: client.set_registered_model_alias(name, CHAMPION, version.version),
                "set alias champion",
                uri,
                retries,
            )
    except Exception as error:
        if not reused:
            before = {CHAMPION: champion_before, CHALLENGER: challenger_before}
            _rollback(client, name, str(version.version), before)
        raise RegistrationError(
            f"registering {name}: setting aliases on v{version.version} failed ({error}); "
            + ("the version was removed again" if not reused else "the existing version was left as it was")
        ) from error

    _link_index_run(client, params.tracking.experiment, lineage, name, str(version.version))
    champion_after = str(version.version) if promote else champion_before
    return Decision(
        model_name=name,
        version=str(version.version),
        promoted=promote,
        reason=reason,
        metric=metric,
        value=value,
        margin=margin,
        benchmark=benchmark,
        comparison=comparison,
        champion_before=champion_before,
        champion_value=champion_value,
        champion_benchmark=champion_benchmark,
        champion_after=champion_after,
        model_uri=f"models:/{name}/{version.version}",
        run_id=run_id,
        reused_version=reused,
        lineage=dict(lineage),
    )


def _log_default(params: Params, model_dir: Path, index_dir: Path, project: Path | None = None) -> Any:
    from pipeline import serving

    documents = None
    if project is not None:
        # The texts the index was built from, so the served model answers with them (what a RAG user needs).
        from pipeline.stages.index import corpus_for

        try:
            ids, texts, _ = corpus_for(params, project)
            documents = dict(zip(ids, texts, strict=True))
        except (OSError, ValueError) as error:
            logger.warning("registry: serving ids only, the indexed texts are unavailable: %s", error)
    return serving.log_search_model(model_dir, index_dir, k=params.register.k, documents=documents)


def _rollback(client: Any, name: str, version: str, before: Mapping[str, str | None]) -> None:
    # Deleting the version drops the aliases it took over; point them back where they were.
    try:
        held = list(client.get_model_version(name, version).aliases or [])
        client.delete_model_version(name, version)
        for alias in held:
            if before.get(alias) is not None:
                client.set_registered_model_alias(name, alias, before[alias])
        logger.warning("registry: removed %s v%s after a failed registration", name, version)
    except Exception as error:
        logger.error(
            "registry: could not remove %s v%s after a failed registration (%s): delete it by hand "
            "(MlflowClient().delete_model_version(%r, %r)) and check the aliases (before: %s)",
            name,
            version,
            error,
            name,
            version,
            dict(before),
        )


# ---------------------------------------------------------------------------------------------- status


def status(params: Params, project: Path) -> dict[str, Any]:
    """The champion (and challenger) of ``register.model_name``: version, metrics, benchmark and lineage.

    Example:
        >>> status(params, project)["champion"]["version"]  # doctest: +SKIP
        '3'
    """
    from mlflow import MlflowClient

    uri = tracking.configure(params, project, experiment=False)
    client = MlflowClient(tracking_uri=uri)
    name = params.register.model_name
    result: dict[str, Any] = {"tracking_uri": uri, "model_name": name}
    for alias in (CHAMPION, CHALLENGER):
        from mlflow.exceptions import MlflowException

        try:
            version = tracking.call_with_retries(
                lambda alias=alias: client.get_model_version_by_alias(name, alias),
                f"get {alias}",
                uri,
                params.tracking.retries,
            )
        except MlflowException:
            result[alias] = None
            continue
        result[alias] = describe_version(version)
    return result


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
        "value": _tag_float(tags, METRIC_VALUE_TAG),
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
