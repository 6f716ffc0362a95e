"""``register``: put the fine-tuned model and its index in the MLflow registry and apply the promotion rule.

Reads ``metrics/eval.json`` (``register.metric`` must be there and finite, else nothing is registered),
``train.output`` (the model) and ``<index.folder>/<index.name>`` (the index built with it); logs them as one
pyfunc (:mod:`pipeline.ops.serving`) in a ``register`` run; creates a model version of ``register.model_name``
tagged with its lineage and benchmark; sets alias ``challenger``; moves ``champion`` to it when it passes the
gate (:mod:`pipeline.ops.gate`): its ``register.metric`` beats the champion's by the margin, its index reaches
``index.recall_target`` on its probe queries (``metrics/index.json``), and its single-query p95 is at most
``register.max_latency_ratio`` times the champion's. Writes the decision, every criterion with its values, to
``metrics/registry.json``.

The evaluation metrics (``eval_*``, measured on the benchmark) and the index metrics (``index_*``: recall
against exact MaxSim, QPS, single-query latency, measured on the corpus) are logged against the version's
MLflow LoggedModel, each with its dataset, so MLflow's model page shows them.

Run by ``dvc repro`` or by hand, it also records the run
(:func:`pipeline.ops.versioning.record_registered_version`: outputs pushed, a
``refs/colbert-runs/local__<time>`` ref) so that every registered version can be reproduced.

Example:
    $ colbert-pipeline register && cat metrics/registry.json
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from pipeline.ops import gate, lineage, promotion, registry, run_inputs, tracking, versioning
from pipeline.project.config import Params
from pipeline.project.io import atomic_write_json
from pipeline.project.layout import Layout

logger = logging.getLogger(__name__)


def run(params: Params, project: Path) -> dict[str, Any]:
    """Register ``train.output`` and its index, promote per ``register.metric``/``margin``, write why."""
    layout = Layout(params, project)
    model_dir, index_dir = layout.model, layout.index
    # Bad input first, before the server is contacted or anything is uploaded.
    metrics = promotion.read_eval_metrics(layout.eval_metrics, params.register.metric)
    if not model_dir.is_dir():
        raise FileNotFoundError(f"{model_dir}: no trained model (train.output; run the train stage first)")
    if not index_dir.is_dir():
        raise FileNotFoundError(f"{index_dir}: no index (index.folder/index.name; run the index stage first)")
    index_metrics = gate.read_index_metrics(layout.index_metrics, current_index_version(index_dir))
    with tracking.stage_run("register", params, project) as mlflow_run:
        import mlflow

        corpus = run_inputs.corpus_dataset(params, project)
        run_inputs.log_datasets([(corpus, "serving")] if corpus is not None else [])
        benchmark = next(
            (
                record
                for record, _ in run_inputs.lineage_datasets(params, project, mlflow_run.data.tags)
                if record.name == "benchmark"
            ),
            None,
        )
        version_tags = _version_tags(mlflow_run.data.tags)
        # The score must be this model's, on this benchmark: refuse a metrics/eval.json left by another model.
        promotion.check_scored_artifacts(layout.eval_metrics, version_tags)
        decision = registry.register_and_promote(
            params,
            metrics=metrics,
            lineage=version_tags,
            model_dir=model_dir,
            index_dir=index_dir,
            reevaluate=registry.reevaluate_with(params, project),
            gate_inputs=gate.GateInputs(
                index_metrics=index_metrics,
                recall_target=params.index.recall_target,
                measure_latency=gate.measure_latency_with(
                    model_dir, index_dir, layout.benchmark, params.register, params.index.precision
                ),
            ),
            # on the model page, each number beside the data it was measured on
            model_metrics=[
                ({f"eval_{key}": value for key, value in metrics.items()}, benchmark),
                (index_numbers(index_metrics), corpus),
            ],
        )
        mlflow.set_tags(
            {
                "registered_model": f"{decision.model_name}/{decision.version}",
                "promoted": str(decision.promoted).lower(),
            }
        )
    if decision.version:
        # The run's ref and data remote on the version: `colbert-pipeline reproduce` can check it out.
        versioning.record_registered_version(
            project, decision.model_name, decision.version, tracking.tracking_uri(params, project)
        )
    summary = decision.as_dict()
    atomic_write_json(layout.registry_decision, summary)
    logger.info(
        "registry: %s v%s %s (%s)",
        decision.model_name,
        decision.version,
        "promoted to champion" if decision.promoted else "stays challenger",
        decision.reason,
    )
    return {
        "registry": str(layout.registry_decision),
        "model_name": decision.model_name,
        "version": decision.version,
        "promoted": decision.promoted,
        "reason": decision.reason,
        "champion": decision.champion_after,
        "mlflow_run_id": mlflow_run.info.run_id,
    }


def _version_tags(run_tags: dict[str, str]) -> dict[str, str]:
    """The register run's tags a model version carries: its commit, params hashes and lineage."""
    return {
        key: value
        for key, value in run_tags.items()
        if key in ("git_commit", "git_dirty", "params_hash", "register_params_hash")
        or key.startswith(lineage.LINEAGE_PREFIX)
    }


def current_index_version(index_dir: Path) -> str | None:
    """The live version folder of the index (what ``metrics/index.json`` must have been measured on)."""
    from pipeline.indexes.storage import VersionStore

    return VersionStore(index_dir).current()


def index_numbers(index_metrics: dict[str, Any]) -> dict[str, float]:
    """``metrics/index.json`` as model metrics: the tuned search's recall, QPS and latency, and the build.

    Example:
        >>> index_numbers({"documents": 30, "search": {"recall@10": 1.0, "qps": 80.5, "p95_ms": 4.2}})
        {'index_documents': 30.0, 'index_recall_at_10': 1.0, 'index_qps': 80.5, 'index_p95_ms': 4.2}
    """
    numbers: dict[str, float] = {}
    for key in ("documents", "tokens", "build_seconds", "bytes"):
        if isinstance(index_metrics.get(key), int | float):
            numbers[f"index_{key}"] = float(index_metrics[key])
    search = index_metrics.get("search") or {}
    for key in ("recall@10", "recall@10_bound", "qps", "exact_qps", "p50_ms", "p95_ms", "target"):
        value = search.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            numbers[f"index_{key.replace('@', '_at_')}"] = float(value)
    return numbers
