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
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pipeline import tracking
from pipeline.config import Params, resolve_path
from pipeline.io import atomic_write_json

logger = logging.getLogger(__name__)


def read_corpus(path: Path) -> Iterator[tuple[str, str]]:
    """Stream ``(id, text)`` from a BEIR folder's corpus or a corpus JSONL[.gz] (title prefixed to text)."""
    from pipeline.data.beir import BeirFormatError, find_file, read_jsonl_records

    file = find_file(path, "corpus") if path.is_dir() else path
    if file is None:
        raise BeirFormatError(f"{path}: no corpus.jsonl[.gz] in this folder")
    for number, record in read_jsonl_records(file):
        if "_id" not in record:
            raise BeirFormatError(f"{file}:{number}: missing field '_id'")
        title = record.get("title") or ""
        yield str(record["_id"]), f"{title} {record['text']}".strip()


def corpus_for(params: Params, project: Path) -> tuple[list[str], list[str], str]:
    """The ids, texts and a description of the corpus to index."""
    from pipeline.data.nano import list_nano_benchmarks, load_nano_benchmark

    if params.index.corpus:
        source = resolve_path(params.index.corpus, project)
        pairs = list(read_corpus(source))
    else:
        benchmark = resolve_path(params.prepare.output, project) / "eval"
        names = list_nano_benchmarks(benchmark)
        if not names:
            raise FileNotFoundError(f"{benchmark}: no benchmark to index (run the prepare stage first)")
        source = benchmark
        pairs = [pair for name in names for pair in load_nano_benchmark(benchmark, name).corpus.items()]
    if not pairs:
        raise ValueError(f"{source}: the corpus to index is empty")
    ids, texts = zip(*pairs, strict=True)
    return list(ids), list(texts), str(source)


def run(params: Params, project: Path) -> dict[str, Any]:
    """Encode the corpus with ``train.output`` and build ``<index.folder>/<index.name>``."""
    from pipeline import indexes, models
    from pipeline.indexing import index_corpus

    config = params.index
    model_path = resolve_path(params.train.output, project)
    ids, texts, source = corpus_for(params, project)
    folder = resolve_path(config.folder, project)
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
        atomic_write_json(project / "metrics" / "index.json", summary)
        import mlflow

        mlflow.log_metrics({k: float(v) for k, v in summary.items() if isinstance(v, int | float)})
    logger.info(
        "indexed %d documents (%d tokens) in %.1f s", summary["documents"], summary["tokens"], seconds
    )
    return {"index": str(folder / config.name), **summary, "mlflow_run_id": mlflow_run.info.run_id}
