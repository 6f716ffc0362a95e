"""``baseline``: the base model's metrics on the held-out benchmark (``metrics/baseline.json``).

Its own stage so that DVC caches it: it re-runs only when ``train.base_model`` or the benchmark changes,
not on every fine-tuning run.

Example:
    $ colbert-pipeline baseline && cat metrics/baseline.json
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline import tracking
from pipeline.config import Params, resolve_path
from pipeline.io import atomic_write_json
from pipeline.registry import metric_key
from pipeline.stages.evaluate import METRICS_DIR, PRIMARY, evaluate_model


def run(params: Params, project: Path) -> dict[str, Any]:
    """Evaluate ``train.base_model`` (as an untrained ColBERT if it is a plain encoder)."""
    import torch

    benchmark = resolve_path(params.prepare.output, project) / "eval"
    # A plain encoder gets a random projection: seed it so the baseline is reproducible.
    torch.manual_seed(params.train.seed)
    with tracking.stage_run(
        "baseline", params, project, tags={"base_model": params.train.base_model}
    ) as run_:
        metrics = evaluate_model(params.train.base_model, benchmark, params)
        atomic_write_json(project / METRICS_DIR / "baseline.json", metrics)
        import mlflow

        mlflow.log_metrics({metric_key(k): v for k, v in metrics.items()})
    return {
        "metrics": str(project / METRICS_DIR / "baseline.json"),
        PRIMARY: metrics[PRIMARY],
        "mlflow_run_id": run_.info.run_id,
    }
