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
import math
from pathlib import Path
from typing import Any

from pipeline import tracking
from pipeline.config import Params, resolve_path
from pipeline.io import atomic_save_figure, atomic_write_json, read_json
from pipeline.registry import metric_key

logger = logging.getLogger(__name__)

METRICS_DIR = "metrics"
PRIMARY = "NanoBEIR_mean_MaxSim_ndcg@10"


def evaluate_model(model_path: str, benchmark: Path, params: Params) -> dict[str, float]:
    """All NanoBEIR-style metrics of one model on the local benchmark folder."""
    from pipeline import evaluation, models

    if not benchmark.is_dir():
        raise FileNotFoundError(f"{benchmark}: no benchmark (run the prepare stage first)")
    model = models.ColBERT(model_name_or_path=model_path, device=params.evaluate.device)
    evaluator = evaluation.NanoBEIREvaluator(
        dataset_id=str(benchmark), batch_size=params.evaluate.batch_size, show_progress_bar=True
    )
    metrics = {key: float(value) for key, value in evaluator(model).items()}
    bad = [key for key, value in metrics.items() if not math.isfinite(value)]
    if bad or PRIMARY not in metrics:
        raise ValueError(
            f"evaluation of {model_path} gave no finite {bad or PRIMARY}: refusing to write metrics"
        )
    return metrics


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
    benchmark = resolve_path(params.prepare.output, project) / "eval"
    model_path = resolve_path(params.train.output, project)
    metrics_dir = project / METRICS_DIR
    baseline = read_json(metrics_dir / "baseline.json")
    with tracking.stage_run("evaluate", params, project) as mlflow_run:
        metrics = evaluate_model(str(model_path), benchmark, params)
        rows = comparison_rows(baseline, metrics)
        atomic_write_json(metrics_dir / "eval.json", metrics)
        atomic_write_json(metrics_dir / "comparison.json", rows)
        plot_comparison(rows, metrics_dir / "comparison.png")
        import mlflow

        mlflow.log_metrics({metric_key(k): v for k, v in metrics.items()})
        mlflow.log_metrics({f"base_{metric_key(k)}": v for k, v in baseline.items()})
        mlflow.log_artifact(str(metrics_dir / "comparison.png"))
    delta = metrics[PRIMARY] - baseline.get(PRIMARY, float("nan"))
    logger.info(
        "%s: base %.4f -> fine-tuned %.4f", PRIMARY, baseline.get(PRIMARY, float("nan")), metrics[PRIMARY]
    )
    return {
        "metrics": str(metrics_dir / "eval.json"),
        PRIMARY: metrics[PRIMARY],
        f"base_{PRIMARY}": baseline.get(PRIMARY),
        "delta": delta,
        "mlflow_run_id": mlflow_run.info.run_id,
    }
