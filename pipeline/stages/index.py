"""``index``: encode a corpus with the fine-tuned model and build its PLAID index.

The corpus is the prepared benchmark's (default) or ``index.corpus`` (a BEIR folder or a corpus JSONL with
``_id``/``title``/``text``). Documents are encoded and added in chunks of ``index.chunk_size``, so peak
memory does not grow with the corpus. The index is built beside ``indexes/<name>`` and swapped in at the
end: a crash leaves the previous index in place. Writes ``metrics/index.json``.

Example:
    $ colbert-pipeline index --set index.corpus=../shared/data/scifact --set index.name=scifact
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from pipeline.config import Params
from pipeline.data.corpus import corpus_for
from pipeline.io import atomic_write_json
from pipeline.layout import Layout
from pipeline.ops import tracking

logger = logging.getLogger(__name__)


def run(params: Params, project: Path) -> dict[str, Any]:
    """Encode the corpus with ``train.output`` and build ``<index.folder>/<index.name>``."""
    from pipeline import indexes, models
    from pipeline.indexing import index_corpus

    config = params.index
    layout = Layout(params, project)
    model_path = layout.model
    ids, texts, source = corpus_for(params, project)
    folder = layout.index_folder
    with tracking.stage_run("index", params, project, tags={"corpus": source}) as mlflow_run:
        model = models.ColBERT(model_name_or_path=str(model_path), device=config.device)
        index = indexes.PLAID(
            index_folder=str(folder),
            index_name=config.name,
            override=True,
            nbits=config.nbits,
            kmeans_niters=config.kmeans_niters,
            seed=config.seed,
            device=config.device,
        )
        started = time.perf_counter()
        stats = index_corpus(
            model, texts, ids, index, chunk_size=config.chunk_size, batch_size=config.batch_size
        )
        seconds = time.perf_counter() - started
        summary = {
            "documents": int(stats["documents"]),
            "tokens": int(stats["tokens"]),
            "build_seconds": round(seconds, 2),
            "bytes": int(index.disk_bytes),
            "corpus": source,
            "model": str(model_path),
        }
        atomic_write_json(layout.index_metrics, summary)
        import mlflow

        mlflow.log_metrics({k: float(v) for k, v in summary.items() if isinstance(v, int | float)})
    logger.info(
        "indexed %d documents (%d tokens) in %.1f s", summary["documents"], summary["tokens"], seconds
    )
    return {"index": str(layout.index), **summary, "mlflow_run_id": mlflow_run.info.run_id}
