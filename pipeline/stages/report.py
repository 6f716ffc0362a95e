"""``report``: the quality report from every scored system (``reports/quality.md`` and ``reports/plots/``).

Reads what ``colbert-pipeline quality`` (and ``python -m bench.quality``) left under
``<quality.output>/runs/``, writes the Markdown table and the PNG plots (nDCG@10 per dataset and system,
recall@k curves, training loss) and logs them all to the stage's MLflow run.

Example:
    $ colbert-pipeline report && open reports/quality.md
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.ops import tracking
from pipeline.project.config import Params
from pipeline.project.layout import Layout
from pipeline.project.report import write_report


def run(params: Params, project: Path) -> dict[str, Any]:
    """Write ``<quality.output>/quality.md`` and its plots, and log them to MLflow."""
    output = Layout(params, project).quality_output
    if not (output / "runs").is_dir():
        raise FileNotFoundError(f"{output / 'runs'}: no results yet (run `colbert-pipeline quality` first)")
    with tracking.stage_run("report", params, project) as mlflow_run:
        written = write_report(output)
        import mlflow

        mlflow.log_artifact(written["markdown"])
        for plot in written["plots"]:
            mlflow.log_artifact(plot, artifact_path="plots")
    return {**written, "mlflow_run_id": mlflow_run.info.run_id}
