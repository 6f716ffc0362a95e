"""``evaluate``: NanoBEIR-style metrics of the fine-tuned model on the held-out benchmark.

Writes ``metrics/eval.json`` (flat keys such as ``NanoSample_MaxSim_ndcg@10`` and
``NanoBEIR_mean_MaxSim_ndcg@10``), ``metrics/comparison.json`` (base vs fine-tuned per benchmark, the data
behind ``dvc plots show``) and ``metrics/comparison.png``. The base model's metrics come from the ``baseline``
stage (``metrics/baseline.json``), which DVC re-runs only when the base model or the benchmark changes.

Example:
    $ colbert-pipeline evaluate && cat metrics/eval.json
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from pipeline.data.benchmark import PRIMARY_METRIC as PRIMARY
from pipeline.data.benchmark import evaluate_model
from pipeline.ops import tracking
from pipeline.ops.promotion import SCORED_KEYS, check_scored_artifacts
from pipeline.project.config import Params
from pipeline.project.io import atomic_save_figure, atomic_write_json, read_json
from pipeline.project.layout import Layout

logger = logging.getLogger(__name__)


def comparison_rows(base: dict[str, float], tuned: dict[str, float]) -> list[dict[str, Any]]:
    """One row per (benchmark, system) with its nDCG@10: the data of the comparison plot."""
    rows = []
    for key in sorted(tuned):
        if key.endswith("_MaxSim_ndcg@10"):
            dataset = key.removesuffix("_MaxSim_ndcg@10")
            rows.append({"dataset": dataset, "system": "base", "ndcg@10": base.get(key, float("nan"))})
            rows.append({"dataset": dataset, "system": "fine-tuned", "ndcg@10": tuned[key]})
    return rows


def plot_comparison(rows: list[dict[str, Any]], path: Path) -> None:
    """Grouped bars of nDCG@10 per benchmark, base vs fine-tuned, written atomically as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = sorted({row["dataset"] for row in rows})
    systems = ["base", "fine-tuned"]
    values = {(row["dataset"], row["system"]): row["ndcg@10"] for row in rows}
    figure, axes = plt.subplots(figsize=(1.6 + 1.4 * len(datasets), 3.2))
    width = 0.38
    for offset, system in enumerate(systems):
        xs = [i + (offset - 0.5) * width for i in range(len(datasets))]
        bars = axes.bar(xs, [values.get((d, system), 0.0) for d in datasets], width, label=system)
        axes.bar_label(bars, fmt="%.3f", fontsize=8)
    axes.set_xticks(range(len(datasets)), datasets)
    axes.set_ylabel("nDCG@10")
    axes.set_ylim(0, 1.05)
    axes.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=2, frameon=False)
    axes.set_title("Base vs fine-tuned ColBERT")
    atomic_save_figure(figure, path)


def run(params: Params, project: Path) -> dict[str, Any]:
    """Evaluate ``train.output`` on ``<prepare.output>/eval`` and compare with the baseline."""
    layout = Layout(params, project)
    model_path = layout.model
    baseline = read_json(layout.baseline_metrics)
    with tracking.stage_run("evaluate", params, project) as mlflow_run:
        scored = {key: mlflow_run.data.tags.get(tag) for key, tag in SCORED_KEYS.items()}
        # The baseline must have been measured on this benchmark, or the comparison means nothing.
        check_scored_artifacts(layout.baseline_metrics, mlflow_run.data.tags, keys=("benchmark_md5",))
        metrics = evaluate_model(
            str(model_path), layout.benchmark, params.evaluate.batch_size, params.evaluate.device
        )
        baseline = {k: v for k, v in baseline.items() if isinstance(v, int | float)}
        rows = comparison_rows(baseline, metrics)
        # The md5s of the model and benchmark scored travel with the scores: register refuses others.
        atomic_write_json(layout.eval_metrics, {**metrics, **scored})
        atomic_write_json(layout.comparison_json, rows)
        plot_comparison(rows, layout.comparison_png)
        import mlflow

        tracking.log_numbers(metrics)
        tracking.log_numbers(baseline, prefix="base_")
        mlflow.log_artifact(str(layout.comparison_png))
    delta = metrics[PRIMARY] - baseline.get(PRIMARY, float("nan"))
    logger.info(
        "%s: base %.4f -> fine-tuned %.4f", PRIMARY, baseline.get(PRIMARY, float("nan")), metrics[PRIMARY]
    )
    return {
        "metrics": str(layout.eval_metrics),
        PRIMARY: metrics[PRIMARY],
        f"base_{PRIMARY}": baseline.get(PRIMARY),
        "delta": delta,
        "mlflow_run_id": mlflow_run.info.run_id,
    }
