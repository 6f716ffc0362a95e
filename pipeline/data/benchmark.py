"""Score a model on the prepared held-out benchmark: the numbers ``baseline``, ``evaluate`` and the registry's
re-evaluation of a champion all compare.

Example (the packaged MiniLM as an untrained ColBERT, on a tiny Nano benchmark):
    >>> import tempfile
    >>> from pathlib import Path
    >>> from pipeline.data.beir import BeirData
    >>> from pipeline.data.nano import build_nano_benchmark
    >>> data = BeirData(name="toy", corpus={"d1": "koalas eat eucalyptus", "d2": "trains run on rails"},
    ...                 queries={"q1": "what do koalas eat?"}, qrels={"q1": {"d1": 1}})
    >>> folder = Path(tempfile.mkdtemp()) / "eval"
    >>> _ = build_nano_benchmark(data, folder, n_queries=1, n_documents=2, seed=0)
    >>> metrics = evaluate_model("sentence-transformers/all-MiniLM-L6-v2", folder, device="cpu")
    >>> 0.0 <= metrics[PRIMARY_METRIC] <= 1.0
    True
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.project.errors import InputError

if TYPE_CHECKING:
    from pipeline.data.beir import BeirData

#: The metric the pipeline reports first and promotes on by default (``register.metric``).
PRIMARY_METRIC = "NanoBEIR_mean_MaxSim_ndcg@10"


def evaluate_model(
    model_path: str, benchmark: Path, batch_size: int = 32, device: str | None = None
) -> dict[str, float]:
    """All NanoBEIR-style metrics of one model on the local benchmark folder (every value finite)."""
    from pipeline import evaluation, models

    if not Path(benchmark).is_dir():
        raise InputError(f"{benchmark}: no benchmark (run the prepare stage first)")
    # float32: promotion compares these metrics across runs and machines (bf16 would depend on the CPU).
    model = models.ColBERT(model_name_or_path=model_path, device=device, encode_precision="fp32")
    evaluator = evaluation.NanoBEIREvaluator(
        dataset_id=str(benchmark), batch_size=batch_size, show_progress_bar=True
    )
    metrics = {key: float(value) for key, value in evaluator(model).items()}
    bad = [key for key, value in metrics.items() if not math.isfinite(value)]
    if bad or PRIMARY_METRIC not in metrics:
        raise ValueError(
            f"evaluation of {model_path} gave no finite {bad or PRIMARY_METRIC}: refusing to write metrics"
        )
    return metrics


def load_prepared_benchmarks(folder: Path) -> dict[str, BeirData]:
    """Every benchmark the prepare stage wrote to ``folder``, by name, in name order.

    The one place the stages, the registry and the canary read the prepared benchmark from.

    Raises:
        InputError: ``folder`` holds no benchmark (the prepare stage has not run).
    """
    from pipeline.data.nano import list_nano_benchmarks, load_nano_benchmark

    names = list_nano_benchmarks(folder) if Path(folder).is_dir() else []
    if not names:
        raise InputError(f"{folder}: no prepared benchmark (run the prepare stage first)")
    return {name: load_nano_benchmark(folder, name) for name in names}
