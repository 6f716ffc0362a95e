"""``register``: put the fine-tuned model and its index in the MLflow registry and apply the promotion rule.

Reads ``metrics/eval.json`` (``register.metric`` must be there and finite, else nothing is registered),
``train.output`` (the model) and ``<index.folder>/<index.name>`` (the index built with it); logs them as one
pyfunc (:mod:`pipeline.serving`) in a ``register`` run; creates a model version of ``register.model_name``
tagged with its lineage and benchmark; sets alias ``challenger``; moves ``champion`` to it when it wins
(:mod:`pipeline.registry`). Writes the decision to ``metrics/registry.json``.

Example:
    $ colbert-pipeline register && cat metrics/registry.json
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from pipeline import registry, tracking
from pipeline.config import Params
from pipeline.io import atomic_write_json

logger = logging.getLogger(__name__)


def run(params: Params, project: Path) -> dict[str, Any]:
    """Register ``train.output`` and its index, promote per ``register.metric``/``margin``, write why."""
    project = Path(project)
    paths = tracking.artifact_paths(params, project)
    model_dir, index_dir = paths["model"], paths["index"]
    # Bad input first, before the server is contacted or anything is uploaded.
    metrics = registry.read_eval_metrics(project / registry.EVAL_FILE, params.register.metric)
    if not model_dir.is_dir():
        raise FileNotFoundError(f"{model_dir}: no trained model (train.output; run the train stage first)")
    if not index_dir.is_dir():
        raise FileNotFoundError(f"{index_dir}: no index (index.folder/index.name; run the index stage first)")
    with tracking.stage_run("register", params, project) as mlflow_run:
        import mlflow

        lineage = {
            key: value
            for key, value in mlflow_run.data.tags.items()
            if key in ("git_commit", "git_dirty", "params_hash", "register_params_hash")
            or key.startswith(tracking.LINEAGE_PREFIX)
        }
        mlflow.log_metrics({f"eval_{registry.metric_key(k)}": v for k, v in metrics.items()})
        decision = registry.register_and_promote(
            params,
            project,
            metrics=metrics,
            lineage=lineage,
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
    summary = decision.as_dict()
    atomic_write_json(project / registry.REGISTRY_FILE, summary)
    logger.info(
        "registry: %s v%s %s (%s)",
        decision.model_name,
        decision.version,
        "promoted to champion" if decision.promoted else "stays challenger",
        decision.reason,
    )
    return {
        "registry": str(project / registry.REGISTRY_FILE),
        "model_name": decision.model_name,
        "version": decision.version,
        "promoted": decision.promoted,
        "reason": decision.reason,
        "champion": decision.champion_after,
        "mlflow_run_id": mlflow_run.info.run_id,
    }
