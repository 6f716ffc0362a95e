"""``quality``: score the base and fine-tuned models on a full test set, the way a user would compare them.

For ``quality.dataset`` (a BEIR folder; by default the prepared benchmark) it retrieves the top 100 of
the whole corpus for every judged query with each of ``quality.systems``:

- ``dense``: the base model as the classic bi-encoder (mean pooling, cosine), exact search;
- ``colbert-base``: the base model as an untrained ColBERT (seeded projection), through a PLAID index
  and, with ``quality.exact``, exact MaxSim over every document;
- ``colbert-tuned``: the fine-tuned model (``quality.model``, default ``train.output``), the same two ways.

Each result goes to ``<quality.output>/runs/<name>/`` (metrics JSON and TREC run, see
:mod:`pipeline.project.report`) and to the stage's MLflow run; ``colbert-pipeline report`` turns them into the
report. ``metrics/quality.json`` holds this run's scores (``{"dataset": ..., system: {retrieval: {...}}}``),
the DVC metric that ``dvc exp show`` lists for a real-data experiment. Inputs are all checked before any
model loads.

Example:
    $ colbert-pipeline quality --config configs/scifact.yaml
    $ colbert-pipeline report --config configs/scifact.yaml
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path
from typing import Any

from pipeline.data.beir import BeirData, load_beir
from pipeline.ops import tracking
from pipeline.project.config import Params, resolve_path
from pipeline.project.io import atomic_write_json, read_json
from pipeline.project.layout import TRAINING_LOSS_FILE, Layout
from pipeline.project.report import save_system_result
from pipeline.project.runs import Run, hits_to_run

logger = logging.getLogger(__name__)

#: Depth of every run: recall@100 needs the top 100.
DEPTH = 100


def load_quality_dataset(params: Params, project: Path) -> tuple[BeirData, str]:
    """The judged queries and the corpus to score on, and the dataset's name in the report."""
    from pipeline.data.benchmark import load_prepared_benchmarks

    config = params.quality
    if config.dataset:
        folder = resolve_path(config.dataset, project)
        # Upstream BEIR sets judge a few documents their corpus lacks (ArguAna: 5): no system can find
        # them, so they are dropped (and logged) rather than failing the whole evaluation.
        data = load_beir(folder, config.split, on_missing="skip")
        return data, config.name or folder.name
    name, data = next(iter(load_prepared_benchmarks(Layout(params, project).benchmark).items()))
    return data, config.name or name


def tuned_model_path(params: Params, project: Path) -> Path:
    """``quality.model``, or the train stage's output."""
    return Layout(params, project).quality_model


def check_inputs(params: Params, project: Path) -> None:
    """Fail before any model loads: the fine-tuned model must be there if it is to be scored."""
    if "colbert-tuned" in params.quality.systems:
        model = tuned_model_path(params, project)
        if not (model / "config.json").is_file() and not (model / "modules.json").is_file():
            raise FileNotFoundError(
                f"quality.model: {model} is not a saved model (train it first, or drop colbert-tuned "
                "from quality.systems)"
            )


def dense_run(
    model_name: str, data: BeirData, query_ids: list[str], batch_size: int, device: str | None
) -> tuple[Run, dict[str, Any]]:
    """Exact cosine top-100 with the base model as a plain sentence-transformers bi-encoder."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.util import semantic_search

    from pipeline.models import resolve_model_name

    model = SentenceTransformer(resolve_model_name(model_name), device=device)
    doc_ids = list(data.corpus)
    started = time.perf_counter()
    documents = model.encode(
        list(data.corpus.values()),
        batch_size=batch_size,
        convert_to_tensor=True,
        normalize_embeddings=True,
        show_progress_bar=True,
    )
    encode_seconds = time.perf_counter() - started
    queries = model.encode(
        [data.queries[q] for q in query_ids],
        batch_size=batch_size,
        convert_to_tensor=True,
        normalize_embeddings=True,
    )
    started = time.perf_counter()
    found = semantic_search(queries, documents, top_k=DEPTH)
    search_seconds = time.perf_counter() - started
    run = {
        query_id: {doc_ids[hit["corpus_id"]]: float(hit["score"]) for hit in hits}
        for query_id, hits in zip(query_ids, found, strict=True)
    }
    return run, {"encode_seconds": encode_seconds, "search_seconds": search_seconds}


def colbert_runs(
    model_path: str, data: BeirData, query_ids: list[str], params: Params, index_name: str
) -> dict[str, tuple[Run, dict[str, Any]]]:
    """Top-100 runs of one ColBERT model: through a PLAID index and (``quality.exact``) exact MaxSim."""
    from pipeline import indexes, models, retrieve
    from pipeline.indexes.indexing import exact_search

    config = params.quality
    # float32, as PyLate encodes: the quality runs compare with PyLate's on the same footing.
    model = models.ColBERT(
        model_name_or_path=model_path,
        device=config.device,
        query_length=config.query_length,
        encode_precision="fp32",
    )
    doc_ids = list(data.corpus)
    started = time.perf_counter()
    documents = model.encode(
        list(data.corpus.values()), is_query=False, batch_size=config.batch_size, show_progress_bar=True
    )
    encode_seconds = time.perf_counter() - started
    queries = model.encode([data.queries[q] for q in query_ids], is_query=True, batch_size=config.batch_size)
    # What both retrievals' records say alike.
    shared = {"encode_seconds": encode_seconds, "query_length": model.query_length}
    runs: dict[str, tuple[Run, dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory(prefix="quality-index-") as scratch:
        index = indexes.PLAID(
            index_folder=scratch,
            index_name=index_name,
            override=True,
            device=config.device,
            **params.index.plaid_options(),
        )
        started = time.perf_counter()
        index.add_documents(documents_ids=doc_ids, documents_embeddings=documents)
        build_seconds = time.perf_counter() - started
        started = time.perf_counter()
        hits = retrieve.ColBERT(index=index).retrieve(queries_embeddings=queries, k=DEPTH)
        details = {
            **shared,
            "build_seconds": build_seconds,
            "search_seconds": time.perf_counter() - started,
            "index_bytes": float(index.disk_bytes),
        }
        runs["plaid"] = (hits_to_run(query_ids, hits), details)
    if config.exact:
        started = time.perf_counter()
        hits = exact_search(queries, documents, doc_ids, k=DEPTH)
        runs["exact"] = (
            hits_to_run(query_ids, hits),
            {**shared, "search_seconds": time.perf_counter() - started},
        )
    return runs


def run(params: Params, project: Path) -> dict[str, Any]:
    """Score every configured system on ``quality.dataset`` and write its results for the report."""
    import torch

    config = params.quality
    data, name = load_quality_dataset(params, project)
    check_inputs(params, project)
    query_ids = sorted(data.relevant_docs())
    layout = Layout(params, project)
    folder = layout.quality_runs / name
    tuned = tuned_model_path(params, project)
    summary: dict[str, dict[str, float]] = {}
    scores: dict[str, Any] = {"dataset": name}
    loss_curve = tuned / TRAINING_LOSS_FILE
    with tracking.stage_run("quality", params, project, tags={"dataset": name}) as mlflow_run:
        for system in config.systems:
            if system == "dense":
                results = {
                    "cosine": dense_run(
                        params.train.base_model, data, query_ids, config.batch_size, config.device
                    )
                }
                model = params.train.base_model
            else:
                model = params.train.base_model if system == "colbert-base" else str(tuned)
                # An untrained ColBERT's projection is random: seed it, as the baseline stage does.
                torch.manual_seed(params.train.seed)
                results = colbert_runs(model, data, query_ids, params, index_name=f"{name}-{system}")
            records = save_system_result(
                folder,
                dataset=name,
                system=system,
                runs={
                    retrieval: (
                        system_run,
                        {"model": model, "documents": len(data.corpus), **_rounded(details)},
                    )
                    for retrieval, (system_run, details) in results.items()
                },
                qrels=data.qrels,
                ignore_identical_ids=config.ignore_identical_ids,
                training_loss=(
                    read_json(loss_curve) if system == "colbert-tuned" and loss_curve.is_file() else None
                ),
            )
            for retrieval, record in records.items():
                metrics = {k: v for k, v in record["metrics"].items() if isinstance(v, float)}
                summary[f"{system}.{retrieval}"] = metrics
                # The count too: a table rendered from DVC's metrics alone says how many queries were scored.
                counted = {**metrics, "queries": record["metrics"]["queries"]}
                scores.setdefault(system, {})[retrieval] = counted
                tracking.log_numbers(metrics, prefix=f"{system}.{retrieval}.")
        atomic_write_json(layout.quality_metrics, scores)
    return {"results": str(folder), "dataset": name, **summary, "mlflow_run_id": mlflow_run.info.run_id}


def _rounded(details: dict[str, Any]) -> dict[str, Any]:
    return {key: round(value, 2) if isinstance(value, float) else value for key, value in details.items()}
