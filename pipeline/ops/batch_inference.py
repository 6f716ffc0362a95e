"""Batch inference: a file of queries scored with a registry alias's version, as a TREC run and JSONL of hits.

``dags/colbert_batch_inference.py`` runs :func:`run_batch_inference` when the pipeline DAG promotes a
champion (the ``colbert_champion`` asset) or when triggered by hand. The queries are read from a file
(:func:`read_queries`: BEIR ``queries.jsonl`` with ``_id``/``text``, JSONL/CSV/Parquet with
``query_id``/``text``, or ``qid<TAB>text`` lines in a ``.tsv``); they are answered by the version the alias
names when the run starts, in batches (bounded memory whatever the file's size), exactly as ``search``
answers them. Two files are logged as artifacts of one MLflow run (experiment ``colbert-batch-inference``,
tagged with the model, version and the queries file's md5):

- ``run.trec``: ``qid Q0 docid rank score tag`` per hit, the tag ``<model>-v<version>``;
- ``hits.jsonl``: per query ``{"query_id", "query", "model", "model_version", "hits": [{"id", "score",
  "text"}, ...]}``, the hits as ``colbert-pipeline search --json`` prints them.

Nothing heavy at module level: the DAG file that imports this stays cheap to parse.

Used as (it needs a registry with a champion, so it is not a doctest; tests/ops/test_batch_inference.py
runs it against a real tracking server)::

    run_batch_inference(Path("queries.jsonl"), "http://mlflow:5000", "colbert-pipeline")
    # {'model': 'colbert-pipeline', 'version': '3', 'queries': 300, 'hits': 3000, 'run_id': '...', ...}
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from pipeline.project.errors import InputError

logger = logging.getLogger(__name__)

EXPERIMENT = "colbert-batch-inference"
RUN_FILE = "run.trec"
HITS_FILE = "hits.jsonl"
DEFAULT_K = 10
DEFAULT_BATCH = 32
#: The queries file's setting (an Airflow Variable or the environment) when the DAG run names none.
QUERIES_ENV = "COLBERT_PIPELINE_BATCH_QUERIES"


def read_queries(path: str | Path) -> dict[str, str]:
    """``{query id: text}`` of a queries file, in file order; a bad or duplicate row names file and line.

    Example:
        >>> import tempfile
        >>> path = Path(tempfile.mkdtemp()) / "queries.tsv"
        >>> _ = path.write_text("q1\\twho eats bamboo?\\nq2\\twhere do otters live?\\n")
        >>> read_queries(path)
        {'q1': 'who eats bamboo?', 'q2': 'where do otters live?'}
    """
    from pipeline.data.readers import read_id_texts

    path = Path(path)
    if path.suffix != ".tsv":
        return read_id_texts(path, "query_id")
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    queries: dict[str, str] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        qid, tab, text = line.partition("\t")
        if not tab or not qid.strip() or not text.strip():
            raise InputError(f"{path}:{number}: expected 'query id<TAB>text', got {line[:80]!r}")
        if qid in queries:
            raise InputError(f"{path}:{number}: duplicate query id {qid!r}")
        queries[qid.strip()] = text.strip()
    if not queries:
        raise InputError(f"{path}: no queries")
    return queries


def score_queries(
    model: Any, queries: Mapping[str, str], k: int = DEFAULT_K, batch_size: int = DEFAULT_BATCH
) -> Iterator[tuple[str, str, list[dict[str, Any]]]]:
    """``(query id, text, hits)`` per query, in order; ``model`` is a loaded served model (pyfunc)."""
    import pandas as pd
    from tqdm import tqdm

    from pipeline.ops.serving import QUERY_COLUMN, hits

    items = list(queries.items())
    starts = range(0, len(items), batch_size)
    for start in tqdm(starts, desc="Scoring queries", unit="batch", disable=len(starts) <= 1):
        batch = items[start : start + batch_size]
        answer = model.predict(pd.DataFrame({QUERY_COLUMN: [text for _, text in batch]}), params={"k": k})
        for (qid, text), row in zip(batch, hits(answer), strict=True):
            yield qid, text, row


def write_outputs(
    folder: Path, scored: Iterator[tuple[str, str, list[dict[str, Any]]]], model: str, version: str
) -> dict[str, int]:
    """``run.trec`` and ``hits.jsonl`` in ``folder``; the numbers of queries and hits."""
    from pipeline.project.runs import write_trec_run

    run: dict[str, dict[str, float]] = {}
    queries = hit_count = 0
    with open(folder / HITS_FILE, "w", encoding="utf-8") as stream:
        for qid, text, row in scored:
            record = {"query_id": qid, "query": text, "model": model, "model_version": version, "hits": row}
            stream.write(json.dumps(record, ensure_ascii=False) + "\n")
            run[qid] = {hit["id"]: hit["score"] for hit in row}
            queries += 1
            hit_count += len(row)
    write_trec_run(folder / RUN_FILE, run, tag=f"{model}-v{version}")
    return {"queries": queries, "hits": hit_count}


def _md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def run_batch_inference(
    queries_file: str | Path,
    tracking_uri: str,
    model_name: str,
    *,
    alias: str = "champion",
    k: int = DEFAULT_K,
    batch_size: int = DEFAULT_BATCH,
) -> dict[str, Any]:
    """Score ``queries_file`` with ``models:/model_name@alias`` and log the run and hits to MLflow.

    The queries are read (and refused, naming file and line) before the model is downloaded. Returns the
    model, version, counts, the MLflow run id and where its artifacts are.
    """
    import mlflow
    from mlflow import MlflowClient

    from pipeline.ops.follower import alias_version, load_version

    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise InputError(f"k: expected a positive integer, got {k!r}")
    path = Path(queries_file)
    queries = read_queries(path)
    version = alias_version(MlflowClient(tracking_uri=tracking_uri), model_name, alias)
    logger.info("batch inference: %d queries from %s with %s v%s", len(queries), path, model_name, version)
    loaded = load_version(model_name, version, tracking_uri, batch=min(batch_size, 16))
    loaded.prepare(batch_size)  # searched in batches: the settings fitted to a batch
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_experiment(EXPERIMENT)
    tags = {"model_name": model_name, "model_version": version, "alias": alias, "queries_md5": _md5(path)}
    with (
        tempfile.TemporaryDirectory(prefix="colbert-batch-") as scratch,
        mlflow.start_run(run_name=f"batch {model_name} v{version}", tags=tags) as run,
    ):
        scored = score_queries(loaded.model, queries, k=k, batch_size=batch_size)
        counts = write_outputs(Path(scratch), scored, model_name, version)
        mlflow.log_params({"k": k, "queries_file": str(path), "batch_size": batch_size})
        mlflow.log_metrics({"queries": counts["queries"], "hits": counts["hits"]})
        mlflow.log_artifacts(scratch)
    return {
        "model": model_name,
        "version": version,
        **counts,
        "run_id": run.info.run_id,
        "artifact_uri": run.info.artifact_uri,
        "files": [RUN_FILE, HITS_FILE],
    }


def run_configured(
    lookup: Any, queries_file: str | None = None, model_name: str | None = None, k: int = DEFAULT_K
) -> dict[str, Any] | None:
    """What the DAG's task runs: settings through ``lookup`` (Variable, then environment); ``None`` when no
    queries file is set (neither ``queries_file`` nor :data:`QUERIES_ENV`).

    A relative queries path is the workspace's (``COLBERT_PIPELINE_WORKSPACE``); the model is
    ``model_name``, else the workspace's ``register.model_name``; the registry is ``MLFLOW_TRACKING_URI``,
    else the workspace's.
    """
    from pipeline.ops import orchestration
    from pipeline.project.params_file import load_params

    queries_file = queries_file or lookup(QUERIES_ENV)
    if not queries_file:
        return None
    settings = orchestration.Settings.resolve(lookup)
    path = Path(queries_file).expanduser()
    if not path.is_absolute():
        path = settings.workspace / path
    name = model_name or load_params(settings.params_path, check_paths=False).register.model_name
    return run_batch_inference(path, orchestration.resolve_tracking_uri(settings), name, k=k)
