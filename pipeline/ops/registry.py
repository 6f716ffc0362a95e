"""The model registry's MLflow side: create a version, alias it ``challenger``, move ``champion`` when it
wins.

The quality rule is pure and lives in :mod:`pipeline.ops.promotion`, the gate's other criteria (the index's
recall, single-query latency against the champion) in :mod:`pipeline.ops.gate`; this module reads the
current champion, applies them, and writes (the version with all its tags in one call, then the aliases).
The evaluation and index metrics are logged against the version's LoggedModel (``model_id``), so MLflow's
model page shows them, each with the dataset it was measured on.

**Registration is all-or-nothing.** The server is checked (bounded retry) and every input is read before
anything is written; if setting the aliases fails, the version is deleted again. Re-running on the same model,
index, benchmark and metrics reuses the version it registered before (an Airflow retry does not pile up
versions). Aliases only, never the deprecated stages.

Example (a throwaway SQLite store; ``log_model`` would log the served pyfunc):
    >>> import tempfile
    >>> from pipeline.project.config import Params
    >>> project = Path(tempfile.mkdtemp())
    >>> status(Params(), project)["champion"] is None
    True
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from pipeline.ops import gate, tracking
from pipeline.ops.index_lineage import check_index_matches_model, link_index_run
from pipeline.ops.promotion import (
    BENCHMARK_TAG,
    CHALLENGER,
    CHAMPION,
    CORPUS_UPDATE,
    EVAL_METRICS_TAG,
    IDENTITY_TAG,
    KIND_TAG,
    METRIC_NAME_TAG,
    METRIC_VALUE_TAG,
    Decision,
    Reevaluate,
    corpus_update_of,
    decide,
    describe_version,
    reeval_tag,
    registration_key,
    tag_float,
)
from pipeline.project.config import Params
from pipeline.project.errors import InfrastructureError
from pipeline.project.layout import Layout

logger = logging.getLogger(__name__)


class RegistrationError(InfrastructureError):
    """Registration failed part-way; any version it created has been removed again."""


def _alias(client: Any, name: str, alias: str) -> Any | None:
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException as error:
        if error.error_code in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND", "INVALID_PARAMETER_VALUE"):
            return None
        raise


def reevaluate_with(params: Params, project: Path) -> Reevaluate:
    """A re-evaluator: download a registered version's model and score it on the current benchmark."""

    def run(model_uri: str) -> Mapping[str, float]:
        import mlflow.artifacts

        from pipeline.data.benchmark import evaluate_model
        from pipeline.ops import serving

        benchmark = Layout(params, project).benchmark
        if not benchmark.is_dir():
            raise FileNotFoundError(f"{benchmark}: no benchmark to re-evaluate on")
        with tempfile.TemporaryDirectory(prefix="champion-") as folder:
            local = mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=folder)
            model_dir = serving.packaged_artifact(Path(local), serving.MODEL_ARTIFACT)
            return evaluate_model(
                str(model_dir), benchmark, params.evaluate.batch_size, params.evaluate.device
            )

    return run


# ---------------------------------------------------------------------------------------------- register


def _versions(client: Any, name: str) -> list[Any]:
    from mlflow.exceptions import MlflowException

    try:
        return list(client.search_model_versions(f"name = '{name}'"))
    except MlflowException as error:
        if error.error_code == "RESOURCE_DOES_NOT_EXIST":
            return []
        raise


def _find_registered(client: Any, name: str, key: str) -> Any | None:
    matching = [v for v in _versions(client, name) if (v.tags or {}).get(IDENTITY_TAG) == key]
    return max(matching, key=lambda v: int(v.version)) if matching else None


def _remove_unfinished(client: Any, name: str, challenger: str | None, keep: Any | None) -> None:
    """Delete a version of ours (identity tag) newer than ``challenger`` with no alias, except ``keep``.

    A completed registration ends with ``challenger`` on its version: such a version was left by one that died
    before its aliases (the tracking server killed, so no rollback). ``keep``, the one this run reuses, is
    finished instead.
    """
    for version in _versions(client, name):
        newer = challenger is None or int(version.version) > int(challenger)
        ours = IDENTITY_TAG in (version.tags or {})
        if newer and ours and not version.aliases and (keep is None or version.version != keep.version):
            client.delete_model_version(name, version.version)
            logger.warning("registry: removed %s v%s, left by a failed registration", name, version.version)


#: Numbers logged against the LoggedModel, each group with the dataset it was measured on (or None).
ModelMetrics = list[tuple[Mapping[str, float], Any]]


def register_and_promote(
    params: Params,
    metrics: Mapping[str, float],
    lineage: Mapping[str, str],
    model_dir: Path,
    index_dir: Path,
    reevaluate: Reevaluate | None = None,
    log_model: Callable[[], Any] | None = None,
    gate_inputs: gate.GateInputs | None = None,
    model_metrics: ModelMetrics | None = None,
) -> Decision:
    """Register ``model_dir`` + ``index_dir`` as a new version (inside the active run) and apply the gate.

    ``lineage`` holds the tags for the version (see :func:`pipeline.ops.lineage.lineage_tags`);
    ``lineage.data_eval.md5`` identifies the benchmark. ``log_model`` overrides how the pyfunc is logged
    (tests); it must return mlflow's ``ModelInfo``. ``gate_inputs`` feeds the criteria beside quality (none
    given: they are recorded as not checked). ``model_metrics`` are logged against the new version's
    LoggedModel with their datasets, and the gate's own numbers with them.
    """
    import mlflow
    from mlflow import MlflowClient

    config = params.register
    name, metric = config.model_name, config.metric
    value = float(metrics[metric])
    client = MlflowClient(tracking_uri=mlflow.get_tracking_uri())
    run = mlflow.active_run()
    run_id = run.info.run_id if run else None
    encoded_with = check_index_matches_model(client, params.tracking.experiment, lineage)

    # 1. Decide, before anything is written.
    plan = _plan(client, config, metrics, lineage, reevaluate, gate_inputs or gate.GateInputs())
    numbers = [*(model_metrics or []), (gate.numbers(plan.criteria), None)]

    # 2. Log the served model (upload only: no version exists yet), then create the version with its tags.
    if plan.existing is not None:
        version = plan.existing
        logger.info("registry: %s v%s already holds this model, index and evaluation", name, version.version)
        _log_model_metrics(numbers, model_id=None)  # its LoggedModel has them from its first registration
    else:
        info = (log_model or (lambda: _log_default(params, model_dir, index_dir)))()
        _log_model_metrics(numbers, model_id=getattr(info, "model_id", None))
        tags = _version_tags(plan, metrics, lineage, encoded_with, run_id)
        version = mlflow.register_model(info.model_uri, name, tags=tags)
        logger.info("registry: created %s v%s from %s", name, version.version, info.model_uri)

    # 3. Aliases. A failure here removes the version this call created: no half-registered version.
    plan = _set_aliases(client, plan, str(version.version))
    link_index_run(client, params.tracking.experiment, lineage, name, str(version.version))
    return Decision(
        model_name=name,
        version=str(version.version),
        promoted=plan.promote,
        reason=plan.reason,
        metric=metric,
        value=value,
        margin=config.margin,
        benchmark=plan.benchmark,
        comparison=plan.comparison,
        champion_before=plan.champion_before,
        champion_value=plan.champion_value,
        champion_benchmark=plan.champion_benchmark,
        champion_after=str(version.version) if plan.promote else plan.champion_before,
        model_uri=f"models:/{name}/{version.version}",
        run_id=run_id,
        reused_version=plan.existing is not None,
        lineage=dict(lineage),
        criteria=[criterion.as_dict() for criterion in plan.criteria],
        ndcg_definitions={"gate": gate.NDCG_GATE, "report": gate.NDCG_REPORT},
    )


def _log_model_metrics(groups: ModelMetrics, model_id: str | None) -> None:
    """Log each group to the active run, against ``model_id``'s LoggedModel, with its dataset."""
    import mlflow

    for values, dataset in groups:
        numbers = {
            key.replace("@", "_at_"): float(value)
            for key, value in values.items()
            if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
        }
        if numbers:
            mlflow.log_metrics(numbers, model_id=model_id, dataset=dataset)


@dataclass(frozen=True)
class _Plan:
    """What registering will do, decided before anything is written."""

    name: str
    metric: str
    value: float
    benchmark: str | None
    key: str
    existing: Any
    promote: bool
    comparison: str
    reason: str
    champion_value: float | None
    champion_before: str | None
    challenger_before: str | None
    champion_benchmark: str | None
    criteria: tuple[gate.Criterion, ...] = ()
    index_update: dict[str, Any] = field(default_factory=dict)  #: ``metrics/index.json``'s ``update``


def _plan(
    client: Any,
    config: Any,
    metrics: Mapping[str, float],
    lineage: Mapping[str, str],
    reevaluate: Reevaluate | None,
    inputs: gate.GateInputs,
) -> _Plan:
    name, metric = config.model_name, config.metric
    value = float(metrics[metric])
    benchmark = lineage.get("lineage.data_eval.md5")
    champion = _alias(client, name, CHAMPION)
    challenger = _alias(client, name, CHALLENGER)
    challenger_before = str(challenger.version) if challenger else None
    key = registration_key(lineage, metrics, metric)
    existing = _find_registered(client, name, key)
    _remove_unfinished(client, name, challenger_before, keep=existing)
    base = corpus_update_of(champion, lineage, benchmark) if existing is None else None
    if base is not None:  # the champion's model and evaluation, a new index: nothing to re-evaluate
        champion_value = tag_float(champion.tags or {}, METRIC_VALUE_TAG)
        promote, comparison = True, CORPUS_UPDATE
        reason = (
            f"corpus update of champion v{base}: the same model (md5 {lineage.get('lineage.model.md5')}) and "
            "benchmark with a new index; no retraining or re-evaluation, its evaluation carries over"
        )
    else:
        promote, comparison, reason, champion_value = decide(
            value, metric, config.margin, benchmark, champion, existing, reevaluate
        )
    criteria = gate.criteria(
        config,
        inputs,
        gate.quality_criterion(promote, comparison, reason, value, champion_value, config.margin),
        champion,
    )
    promote, reason = gate.verdict(criteria)
    if comparison == "re_evaluated" and champion_value is not None and benchmark:
        tag = reeval_tag(benchmark, metric)
        if (champion.tags or {}).get(tag) is None:
            client.set_model_version_tag(name, champion.version, tag, str(champion_value))
    return _Plan(
        name=name,
        metric=metric,
        value=value,
        benchmark=benchmark,
        key=key,
        existing=existing,
        promote=promote,
        comparison=comparison,
        reason=reason,
        champion_value=champion_value,
        champion_before=str(champion.version) if champion else None,
        challenger_before=challenger_before,
        champion_benchmark=(champion.tags or {}).get(BENCHMARK_TAG) if champion else None,
        criteria=criteria,
        index_update=dict((inputs.index_metrics or {}).get("update") or {}),
    )


def _version_tags(
    plan: _Plan,
    metrics: Mapping[str, float],
    lineage: Mapping[str, str],
    encoded_with: str | None,
    run_id: str | None,
) -> dict[str, str]:
    tags = {
        **{k: str(v) for k, v in lineage.items() if not k.startswith("mlflow.")},
        BENCHMARK_TAG: plan.benchmark or "unknown",
        METRIC_NAME_TAG: plan.metric,
        METRIC_VALUE_TAG: repr(plan.value),
        EVAL_METRICS_TAG: json.dumps(dict(sorted(metrics.items())))[:90_000],
        IDENTITY_TAG: plan.key,
        "promotion.decision": "promoted" if plan.promote else "not promoted",
        "promotion.reason": plan.reason[:5000],
        "promotion.champion_before": plan.champion_before or "none",
        "promotion.criteria": json.dumps([c.as_dict() for c in plan.criteria], default=str)[:5000],
        "gate.ndcg": f"gate: {gate.NDCG_GATE}; report: {gate.NDCG_REPORT}"[:5000],
    }
    tags.update(_kind_tags(plan))
    for criterion in plan.criteria:
        passed = "not checked" if criterion.passed is None else str(criterion.passed).lower()
        tags[f"gate.{criterion.name}.passed"] = passed
        for attribute in ("value", "threshold"):
            if getattr(criterion, attribute) is not None:
                tags[f"gate.{criterion.name}.{attribute}"] = repr(getattr(criterion, attribute))
    if encoded_with:
        tags["lineage.index.encoded_with_model.md5"] = encoded_with
    if run_id:
        tags["mlflow_run_id"] = run_id
    return tags


def _kind_tags(plan: _Plan) -> dict[str, str]:
    """What kind of registration this is (``model``, or ``corpus_update`` of the champion: no retraining,
    no re-evaluation) and how its index was made (``index.update.*``: incremental or rebuilt, the counts)."""
    tags = {KIND_TAG: plan.comparison if plan.comparison == CORPUS_UPDATE else "model"}
    if plan.comparison == CORPUS_UPDATE:
        tags.update(
            {
                "corpus_update.base_version": plan.champion_before or "none",
                "corpus_update.retrained": "false",
                "corpus_update.reevaluated": "false",
            }
        )
    for key, value in plan.index_update.items():
        if value is not None:
            tags[f"index.update.{key}"] = str(value)[:5000]
    return tags


def _set_aliases(client: Any, plan: _Plan, version: str) -> _Plan:
    """Challenger always, champion when promoted (and still better: :func:`settle_champion`); on failure a
    version this call created is removed. Returns the plan as it ended."""
    try:
        client.set_registered_model_alias(plan.name, CHALLENGER, version)
        if plan.promote:
            plan = settle_champion(client, plan, version)
        return plan
    except Exception as error:
        reused = plan.existing is not None
        if not reused:
            before = {CHAMPION: plan.champion_before, CHALLENGER: plan.challenger_before}
            _rollback(client, plan.name, version, before)
        raise RegistrationError(
            f"registering {plan.name}: setting aliases on v{version} failed ({error}); "
            + ("the version was removed again" if not reused else "the existing version was left as it was")
        ) from error


def settle_champion(client: Any, plan: _Plan, version: str, rounds: int = 3) -> _Plan:
    """Move ``champion`` to ``version``, then re-check it: two runs that finish together must not race.

    Another registration that moved the alias since this one planned (or right after this one moved it)
    keeps it when its metric on the same benchmark is at least this version's; otherwise the alias is
    moved (back) here and read again. So the better version ends as champion whichever wrote last, and a
    superseded decision says so (on the version's tags and in the returned plan).
    """
    for _ in range(rounds):
        current = _alias(client, plan.name, CHAMPION)
        moved = current is not None and str(current.version) not in {version, plan.champion_before or ""}
        if moved:
            tags = current.tags or {}
            other = tag_float(tags, METRIC_VALUE_TAG)
            comparable = tags.get(BENCHMARK_TAG) == (plan.benchmark or "unknown") and (
                tags.get(METRIC_NAME_TAG) == plan.metric
            )
            if other is None or not comparable or other >= plan.value:
                reason = (
                    f"superseded: v{current.version} became champion meanwhile ({plan.metric}={other} on "
                    f"{'the same' if comparable else 'another'} benchmark; this version: {plan.value})"
                )
                logger.warning("registry: %s v%s %s", plan.name, version, reason)
                client.set_model_version_tag(plan.name, version, "promotion.decision", "not promoted")
                client.set_model_version_tag(plan.name, version, "promotion.reason", reason[:5000])
                return replace(plan, promote=False, reason=reason, champion_before=str(current.version))
        elif current is not None and str(current.version) == version:
            return plan
        client.set_registered_model_alias(plan.name, CHAMPION, version)
    return plan


def _log_default(params: Params, model_dir: Path, index_dir: Path) -> Any:
    from pipeline.ops import serving

    # The texts the served model answers with travel inside the index folder (the index stage wrote them).
    return serving.log_search_model(
        model_dir, index_dir, k=params.register.k, precision=params.index.precision
    )


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

    See the module example: ``status(...)["champion"]`` is ``None`` before the first registration, else a dict
    with ``version``, ``metric``, ``value``, ``benchmark``, ``hashes`` ... (:func:`describe_version`).
    """
    from mlflow import MlflowClient

    uri = tracking.configure(params, project, experiment=False)
    client = MlflowClient(tracking_uri=uri)
    name = params.register.model_name
    result: dict[str, Any] = {"tracking_uri": uri, "model_name": name}
    for alias in (CHAMPION, CHALLENGER):
        from mlflow.exceptions import MlflowException

        try:
            version = client.get_model_version_by_alias(name, alias)
        except MlflowException:
            result[alias] = None
            continue
        result[alias] = describe_version(version)
    return result
