"""``baseline``: the base model's metrics on the held-out benchmark (``metrics/baseline.json``).

Its own stage so that DVC caches it: it re-runs only when ``train.base_model`` or the benchmark changes,
not on every fine-tuning run.

Example:
    $ colbert-pipeline baseline && cat metrics/baseline.json
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.data.benchmark import PRIMARY_METRIC, evaluate_model
from pipeline.ops import tracking
from pipeline.ops.promotion import SCORED_KEYS
from pipeline.project.config import Params
from pipeline.project.io import atomic_write_json
from pipeline.project.layout import Layout


def run(params: Params, project: Path) -> dict[str, Any]:
    """Evaluate ``train.base_model`` (as an untrained ColBERT if it is a plain encoder)."""
    import torch

    layout = Layout(params, project)
    # A plain encoder gets a random projection: seed it so the baseline is reproducible.
    torch.manual_seed(params.train.seed)
    with tracking.stage_run(
        "baseline", params, project, tags={"base_model": params.train.base_model}
    ) as run_:
        metrics = evaluate_model(
            params.train.base_model, layout.benchmark, params.evaluate.batch_size, params.evaluate.device
        )
        benchmark_md5 = run_.data.tags.get(SCORED_KEYS["benchmark_md5"])
        atomic_write_json(layout.baseline_metrics, {**metrics, "benchmark_md5": benchmark_md5})
        tracking.log_numbers(metrics)
    return {
        "metrics": str(layout.baseline_metrics),
        PRIMARY_METRIC: metrics[PRIMARY_METRIC],
        "mlflow_run_id": run_.info.run_id,
    }
