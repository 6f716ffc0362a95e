"""``register``: put the fine-tuned model and its index in the MLflow registry and apply the promotion rule.

Reads ``metrics/eval.json`` (``register.metric`` must be there and finite, else nothing is registered),
``train.output`` (the model) and ``<index.folder>/<index.name>`` (the index built with it); logs them as one
pyfunc (:mod:`pipeline.ops.serving`) in a ``register`` run; creates a model version of ``register.model_name``
tagged with its lineage and benchmark; sets alias ``challenger``; moves ``champion`` to it when it wins
(:mod:`pipeline.ops.registry`). Writes the decision to ``metrics/registry.json``. Run by ``dvc repro`` or by
hand, it also records the run (:func:`pipeline.ops.versioning.record_registered_version`: outputs pushed, a
``refs/colbert-runs/local__<time>`` ref) so that every registered version can be reproduced.

Example:
    $ colbert-pipeline register && cat metrics/registry.json
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from pipeline.ops import lineage, promotion, registry, tracking, versioning
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
    with tracking.stage_run("register", params, project) as mlflow_run:
        import mlflow

        version_tags = {
            key: value
            for key, value in mlflow_run.data.tags.items()
            if key in ("git_commit", "git_dirty", "params_hash", "register_params_hash")
            or key.startswith(lineage.LINEAGE_PREFIX)
        }
        # The score must be this model's, on this benchmark: refuse a metrics/eval.json left by another model.
        promotion.check_scored_artifacts(layout.eval_metrics, version_tags)
        tracking.log_numbers(metrics, prefix="eval_")
        decision = registry.register_and_promote(
            params,
            metrics=metrics,
            lineage=version_tags,
            model_dir=model_dir,
            index_dir=index_dir,
            reevaluate=registry.reevaluate_with(params, project),
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
