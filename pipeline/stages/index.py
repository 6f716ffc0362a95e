"""``index``: encode a corpus with the fine-tuned model and build its PLAID index, or update it in place.

The corpus is the prepared benchmark's (default) or ``index.corpus`` (a BEIR folder or a corpus JSONL with
``_id``/``title``/``text``), checked row by row before anything is encoded (:mod:`pipeline.data.corpus`).
Documents are encoded and added in chunks of ``index.chunk_size``, so peak memory does not grow with the
corpus. Each build writes a new index version inside ``indexes/<name>``, holding the PLAID files, a float16
copy of the embeddings, the texts and the corpus manifest (ids and a sha256 of each text, and the encoder),
and publishes it in one commit at the end: a crash leaves the previous version live and complete.

**Updating in place.** When the previous build (the index folder, or under ``dvc repro``, which deletes the
folder first, the build ``dvc.lock`` records, restored from DVC's cache: :mod:`pipeline.ops.previous_index`)
was made by the same encoder (model md5, backend, precision) with the same index settings, and the corpus
changed by at most ``index.update_max_churn``, only the added and changed documents are encoded; removed and
changed ones leave the index (:mod:`pipeline.indexes.updates`). Otherwise, or with ``index.update: rebuild``,
the index is rebuilt. ``metrics/index.json``'s ``update`` records the mode, the counts and the reason.

Then search settings: after an update, the previous ones are re-checked on the updated index and kept when
they still reach ``index.recall_target``; otherwise (and after a rebuild)
:func:`pipeline.indexes.tuning.tune` picks the fastest settings reaching ``index.recall_target`` recall@10
against exact MaxSim on probe queries (the benchmark's queries, else queries drawn from the corpus) and
stores them in ``indexes/<name>/search.json``, where every search finds them. Then one probe query at a time
is searched with those settings, as a served request is (``p50_ms``/``p95_ms``: search only, queries already
encoded). Writes ``metrics/index.json`` (the update, the chosen settings, their recall, QPS and single-query
latency, and the index version they were measured on), which the register stage's gate reads. The MLflow
run records the corpus as its dataset input (its DVC md5 the digest) and, with ``tracking.system_metrics``,
CPU, memory and GPU use.

With ``index.shards`` N above 1 a rebuild adds the documents from N shards of the encoding instead (an
in-place update encodes its few documents here)
(:func:`ready_shards`, ``index-shards/<index.name>/``), each a contiguous slice of the corpus that
``colbert-pipeline index --shard I/N`` (:func:`encode_shard`) encodes on its own, on any worker; the index is
built from them in corpus order. A shard missing or made from other inputs is encoded here, except in a
stateless index task, which refuses it (docs/stateless.md).

Example:
    $ colbert-pipeline index --set index.corpus=../shared/data/scifact --set index.name=scifact
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from pipeline.data.corpus import corpus_for
from pipeline.ops import index_build, previous_index, run_inputs, tracking
from pipeline.project.config import Params, resolve_path
from pipeline.project.errors import InputError
from pipeline.project.io import atomic_write_json
from pipeline.project.layout import SHARD_RUN_ENV, Layout

logger = logging.getLogger(__name__)


def probe_texts(params: Params, project: Path, texts: list[str]) -> tuple[list[str], str]:
    """Up to ``index.probe_queries`` query texts to tune search on, and where they came from.

    The benchmark's queries when the corpus has them (the prepared benchmark, or a BEIR folder's test
    queries), otherwise the first words of documents drawn from the corpus.
    """
    import random

    from pipeline.data.beir import find_file, load_beir
    from pipeline.data.benchmark import load_prepared_benchmarks
    from pipeline.indexes.tuning import queries_from_documents

    config = params.index
    queries: list[str] = []
    source = resolve_path(config.corpus, project) if config.corpus else None
    if source is None:
        benchmark = Layout(params, project).benchmark
        for data in load_prepared_benchmarks(benchmark).values():
            queries += list(data.queries.values())
        origin = f"{benchmark} queries"
    elif source.is_dir() and find_file(source, "queries") is not None and (source / "qrels").is_dir():
        queries = list(load_beir(source, "test").queries.values())
        origin = f"{source} test queries"
    if queries:
        random.Random(config.seed).shuffle(queries)
        return queries[: config.probe_queries], origin
    return queries_from_documents(texts, config.probe_queries, seed=config.seed), "drawn from the corpus"


def run(params: Params, project: Path) -> dict[str, Any]:
    """Encode the corpus with ``train.output`` and build ``<index.folder>/<index.name>``, or update it in
    place when only the corpus changed (see the module docs and :mod:`pipeline.indexes.updates`)."""
    from pipeline.indexes import updates
    from pipeline.models.backends import check_backend

    config = params.index
    check_backend(config.backend)
    layout = Layout(params, project)
    # Bad rows and a wrong corpus first, before any model is loaded or anything encoded.
    corpus, source = corpus_for(params, project)
    digests = [updates.text_digest(text) for text in corpus.texts]
    probes, probe_source = probe_texts(params, project, corpus.texts)
    encoder = index_build.encoder_identity(params, project)
    origin = None if config.update == "rebuild" else previous_index.restore_previous(project, layout.index)
    plan = index_build.plan_for(params, layout, origin, corpus.ids, digests, encoder)
    logger.info("index: %s (%s)", plan.mode, plan.reason)
    with tracking.stage_run(
        "index", params, project, tags={"corpus": source, "index_update": plan.mode}, system_metrics=True
    ) as mlflow_run:
        dataset = run_inputs.corpus_dataset(params, project)
        run_inputs.log_datasets([(dataset, "indexing")] if dataset is not None else [])
        built = index_build.build_or_update(
            params,
            layout,
            plan,
            corpus,
            digests,
            encoder,
            lambda model, index, writer: add_corpus(
                params, project, model, corpus.ids, corpus.texts, index, writer
            ),
        )
        index, store, stats, seconds, model = built
        version = index.stats()["version"]
        search, encoded = index_build.settle_search(model, index, store, probes, config, plan, layout)
        search.update(single_query_latency(layout.index_folder, config, encoded))
        search["probe_source"] = probe_source
        summary = {
            "documents": index.num_documents,
            "tokens": index.num_tokens,
            "build_seconds": round(seconds, 2),
            "bytes": int(index.disk_bytes),
            "corpus": source,
            "model": str(layout.model),
            "backend": config.backend,
            "precision": model.encode_precision,
            "search": search,
            "update": {**plan.record(index.num_documents), "encoded": int(stats["documents"])},
            "corpus_dropped": corpus.dropped,
            # the register stage checks that these numbers were measured on the index it registers
            "index_version": version,
            **({"shards": stats["shards"]} if "shards" in stats else {}),
        }
        atomic_write_json(layout.index_metrics, summary)
        import mlflow

        tracking.log_numbers(summary)
        tracking.log_numbers(summary["update"], prefix="update_")
        tracking.log_numbers(search, prefix="search_")
        mlflow.log_params({f"search.{k}": v for k, v in search["settings"].items()})
    logger.info(
        "indexed %d documents (%d tokens; %s, %d encoded) in %.1f s",
        summary["documents"],
        summary["tokens"],
        plan.mode,
        stats["documents"],
        seconds,
    )
    return {"index": str(layout.index), **summary, "mlflow_run_id": mlflow_run.info.run_id}


def add_corpus(
    params: Params, project: Path, model: Any, ids: list[str], texts: list[str], index: Any, writer: Any
) -> dict[str, Any]:
    """Encode the corpus into ``index`` (and the float16 copy ``writer``), chunk by chunk; with
    ``index.shards`` above 1, add it from its shards instead (:func:`ready_shards`)."""
    from pipeline.indexes.indexing import index_corpus
    from pipeline.indexes.shards import index_shards

    config = params.index
    if config.shards == 1:
        return index_corpus(
            model,
            texts,
            ids,
            index,
            chunk_size=config.chunk_size,
            batch_size=config.batch_size,
            on_chunk=lambda _, embeddings: writer.add(embeddings),
        )
    folders, encoded = ready_shards(params, project, model, ids, texts)
    stats: dict[str, Any] = index_shards(
        folders, index, chunk_size=config.chunk_size, on_chunk=lambda _, embeddings: writer.add(embeddings)
    )
    stats["shards"] = {"count": config.shards, "encoded_here": encoded}
    return stats


class ShardMissing(InputError):
    """A stateless index task found a shard of its run missing, unfinished or made for other inputs."""


def shard_identity(
    params: Params, model: Any, model_md5: str, ids: list[str], texts: list[str], shard: int
) -> dict[str, Any]:
    """What shard ``shard`` of ``index.shards`` must have been encoded from: its slice of the corpus (ids and
    texts, hashed), the model (its DVC md5), the backend and the precision the model encodes in."""
    from pipeline.indexes.shards import shard_bounds

    start, stop = shard_bounds(len(ids), shard, params.index.shards)
    digest = hashlib.sha256(json.dumps([ids[start:stop], texts[start:stop]]).encode()).hexdigest()
    return {
        "shard": shard,
        "shards": params.index.shards,
        "start": start,
        "stop": stop,
        "corpus_documents": len(ids),
        "corpus_sha256": digest,
        "model_md5": model_md5,
        "backend": params.index.backend,
        "precision": model.encode_precision,
    }


def write_encoded_shard(
    params: Params, model: Any, ids: list[str], texts: list[str], folder: Path, identity: dict[str, Any]
) -> dict[str, Any]:
    """Encode the shard's slice of the corpus ``index.chunk_size`` documents at a time into ``folder``."""
    from tqdm.auto import tqdm

    from pipeline.indexes.shards import write_shard
    from pipeline.models import as_numpy

    config = params.index
    start, stop = identity["start"], identity["stop"]
    steps = range(start, stop, config.chunk_size)

    def chunks() -> Any:
        for first in tqdm(steps, desc=f"Encoding {folder.name}", unit="chunk"):
            last = min(first + config.chunk_size, stop)
            encoded = model.encode(
                texts[first:last], is_query=False, batch_size=config.batch_size, show_progress_bar=False
            )
            yield ids[first:last], as_numpy(encoded)

    return write_shard(folder, chunks(), identity)


def ready_shards(
    params: Params, project: Path, model: Any, ids: list[str], texts: list[str]
) -> tuple[list[Path], int]:
    """Every shard folder of the corpus, in order, and how many of them were encoded here.

    A shard that is there and was encoded from this model, this slice of the corpus and this precision is
    used as it is. One missing or stale is encoded here, unless this is a stateless index task
    (``COLBERT_PIPELINE_SHARD_RUN`` names its run): then its shard tasks were to make them, and the task that
    should have made it is named in an input error.
    """
    from pipeline.indexes.shards import read_meta
    from pipeline.ops import lineage

    config = params.index
    layout = Layout(params, project)
    run_id = os.environ.get(SHARD_RUN_ENV)
    model_md5 = lineage.compute_md5(layout.model, project)
    folders, encoded = [], 0
    for shard in range(config.shards):
        folder = layout.index_shard(shard, config.shards)
        identity = shard_identity(params, model, model_md5, ids, texts, shard)
        meta = read_meta(folder) or {}
        same = (
            meta.get("identity") == identity and meta.get("ids") == ids[identity["start"] : identity["stop"]]
        )
        if not same and run_id:
            raise ShardMissing(
                f"shard {shard} of {config.shards} ({layout.relative(folder)}) "
                f"{_mismatch(meta.get('identity'), identity)}: run `colbert-pipeline task index --shard "
                f"{shard}/{config.shards} --run {run_id}` again (it makes that shard for this run)"
            )
        if not same:
            logger.info("shard %d of %d: none there for these inputs, encoding it here", shard, config.shards)
            write_encoded_shard(params, model, ids, texts, folder, identity)
            encoded += 1
        folders.append(folder)
    return folders, encoded


def _mismatch(found: Any, wanted: dict[str, Any]) -> str:
    """Why a shard cannot be used, for the error: missing, or which of its inputs differ."""
    if not isinstance(found, dict):
        return "is missing or unfinished"
    differ = [
        f"{key} {found.get(key)!r}, not {value!r}" for key, value in wanted.items() if found.get(key) != value
    ]
    hint = " (set index.precision where workers differ)" if "precision" in "".join(differ) else ""
    return f"was encoded from other inputs: {'; '.join(differ) or 'its documents differ'}{hint}"


def encode_shard(params: Params, project: Path, shard: int, shards: int) -> dict[str, Any]:
    """``colbert-pipeline index --shard I/N``: encode shard I (from 0) of N of the corpus, nothing more.

    Writes ``index-shards/<index.name>/shard-I-of-N/``, which the index stage builds from. A shard already
    there from the same inputs is kept (a retried task does not encode again). N must be ``index.shards``.
    """
    from pipeline.indexes.shards import matches
    from pipeline.models.backends import check_backend, load_model
    from pipeline.ops import lineage

    config = params.index
    if shards != config.shards:
        raise InputError(f"--shard {shard}/{shards}: index.shards is {config.shards}, not {shards}")
    check_backend(config.backend)
    layout = Layout(params, project)
    corpus, source = corpus_for(params, project)
    ids, texts = corpus.ids, corpus.texts
    model = load_model(str(layout.model), config.backend, device=config.device, precision=config.precision)
    identity = shard_identity(params, model, lineage.compute_md5(layout.model, project), ids, texts, shard)
    folder = layout.index_shard(shard, shards)
    started = time.perf_counter()
    skipped = matches(folder, identity)
    if skipped:
        logger.info("%s already holds this shard (same model, corpus slice and precision)", folder)
        meta: dict[str, Any] = {"tokens": None}
    else:
        meta = write_encoded_shard(params, model, ids, texts, folder, identity)
    return {
        "shard": f"{shard}/{shards}",
        "folder": str(folder),
        "documents": identity["stop"] - identity["start"],
        "tokens": meta["tokens"],
        "corpus": source,
        "precision": identity["precision"],
        "skipped": skipped,
        "seconds": round(time.perf_counter() - started, 2),
    }


#: Probe queries timed one at a time for the single-query latency in ``metrics/index.json``.
LATENCY_QUERIES = 32


def single_query_latency(folder: Path, config: Any, queries: Any) -> dict[str, float]:
    """p50/p95 milliseconds of one encoded query searched alone with the stored settings (search only).

    The index is opened afresh, as the served model opens it, so the settings just written are the ones
    timed. One untimed search first: the first call pays for lazy loading, which no later request does.
    """
    from pipeline import indexes
    from pipeline.ops.canary import percentile

    index = indexes.PLAID(
        index_folder=str(folder), index_name=config.name, override=False, device=config.device
    )
    timed = list(queries[:LATENCY_QUERIES])
    if not timed:
        return {}
    index.search([timed[0]], k=10)
    latencies = []
    for query in timed:
        started = time.perf_counter()
        index.search([query], k=10)
        latencies.append((time.perf_counter() - started) * 1000.0)
    return {
        "p50_ms": round(percentile(latencies, 50), 3),
        "p95_ms": round(percentile(latencies, 95), 3),
        "latency_queries": len(timed),
    }
