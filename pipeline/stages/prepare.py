"""``prepare``: turn the configured source into a training set and a held-out Nano benchmark.

Outputs (under ``prepare.output``, default ``data/prepared``):

- ``train/``: ``dataset/`` (Arrow) with ``query, positive, negative_1..n`` columns, or for ``kd`` the
  ``query_id, document_ids, scores`` rows plus ``queries/`` and ``documents/`` tables, and ``format.json``;
- ``eval/``: a Nano benchmark (sentence-transformers' NanoBEIR layout, see :mod:`pipeline.data.nano`);
- ``stats.json``: counts (rows, dropped rows, duplicates, resolved ids, benchmark size).

No evaluation query ever reaches training: overlapping queries are removed from training and the split is
checked before anything is written.

Example:
    $ colbert-pipeline prepare --set prepare.source=beir --set prepare.beir.folder=../shared/data/scifact
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from pipeline.data.nano import build_nano_benchmark
from pipeline.data.readers import DataFormatError
from pipeline.data.sources import SOURCES, Prepared, check_no_leak, dedupe
from pipeline.ops import tracking
from pipeline.project.config import Params
from pipeline.project.io import atomic_directory, atomic_write_json
from pipeline.project.layout import Layout

logger = logging.getLogger(__name__)


def run(params: Params, project: Path) -> dict[str, Any]:
    """Read the configured source, validate it, and write the training set, the benchmark and stats."""
    config = params.prepare
    layout = Layout(params, project)
    output = layout.prepared
    with tracking.stage_run("prepare", params, project) as mlflow_run:
        prepared = SOURCES[config.source](params, project)
        rows, duplicates = dedupe(prepared.rows)
        if not rows:
            raise DataFormatError(f"source {config.source!r}: the training split is empty")
        if not prepared.benchmark.queries:
            raise DataFormatError(f"source {config.source!r}: the evaluation split is empty")
        prepared.rows = rows
        check_no_leak(prepared)
        name = "sample" if config.source == "sample" else prepared.benchmark.name
        stats = _write(prepared, output, params, name)
        stats.update(prepared.stats, source=config.source)
        stats["duplicates_dropped"] = stats.get("duplicates_dropped", 0) + duplicates
        atomic_write_json(layout.prepare_stats, stats)
        _log(stats)
    logger.info(
        "prepared %d training rows and a %d-query benchmark", stats["train_rows"], stats["eval_queries"]
    )
    return {"output": str(output), "stats": stats, "mlflow_run_id": mlflow_run.info.run_id}


def _write(prepared: Prepared, output: Path, params: Params, name: str) -> dict[str, Any]:
    from datasets import Dataset

    from pipeline.project.io import atomic_write_json as write_json

    with atomic_directory(output / "train") as train_dir:
        Dataset.from_list(prepared.rows).save_to_disk(str(train_dir / "dataset"))
        for table, texts in prepared.tables.items():
            key = "query_id" if table == "queries" else "document_id"
            Dataset.from_dict({key: list(texts), "text": list(texts.values())}).save_to_disk(
                str(train_dir / table)
            )
        write_json(train_dir / "format.json", {"kind": prepared.kind, "columns": sorted(prepared.rows[0])})
    with atomic_directory(output / "eval") as eval_dir:
        info = build_nano_benchmark(
            prepared.benchmark,
            eval_dir,
            n_queries=params.prepare.eval_queries,
            n_documents=params.prepare.eval_documents,
            seed=params.prepare.seed,
            name=name,
        )
    return {
        "train_rows": len(prepared.rows),
        "train_kind": prepared.kind,
        "benchmark": info.split_name,
        "eval_queries": info.n_queries,
        "eval_documents": info.n_documents,
    }


def _log(stats: dict[str, Any]) -> None:
    import mlflow

    tracking.log_numbers(stats)
    mlflow.set_tags({"benchmark": str(stats["benchmark"]), "source": str(stats["source"])})
