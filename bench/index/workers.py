"""The index benchmark's measured steps, each run by ``python -m bench.index`` in a fresh process.

A step's peak RSS is then its own, and PyLate's steps run in PyLate's venv: this module imports neither
``pipeline`` nor ``pylate`` at module level. Steps: ``encode-ours`` / ``encode-peer`` (docs/s; ours also
caches the embeddings both sides index), ``exact`` (exact MaxSim top 10: the recall reference),
``index-ours`` / ``index-peer`` (build, QPS, recall@10, disk; ours tuned to the recall target, PyLate over a
sweep of search settings) and ``rss`` (``index_corpus``'s peak RSS).
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import die_with_parent, folder_bytes, peak_rss_mib, setup, write_record
from bench.index.corpus import (
    cache_path,
    load_embeddings,
    load_probes,
    read_corpus,
    read_probe_queries,
    read_queries,
    save_embeddings,
)
from bench.index.encode import load_encoder, timed_encode

#: The library each side measures, as :func:`bench.common.setup` records it.
LIBRARY = {"ours": "pipeline", "peer": "pylate"}
#: PyLate's PLAID search settings swept for the row at our recall (its defaults are 8 and 8192).
PEER_SWEEP = [(probe, full) for probe in (2, 8, 32) for full in (256, 1024, 4096)]


def worker_encode(system: str, args: argparse.Namespace) -> dict[str, Any]:
    """Encode the corpus and queries; ours also caches the embeddings for every index step."""
    ids, texts = read_corpus(args.dataset, args.max_docs)
    queries = read_queries(args.dataset, args.max_queries)
    model, precision = load_encoder(system, args.device, args.encode_dtype, args.model_path, args.precision)
    documents, seconds = timed_encode(model, texts, 32, args.device)
    query_embeddings = model.encode(queries, is_query=True, batch_size=32, show_progress_bar=False)
    probes: list[str] = []
    if system == "ours":
        probes = read_probe_queries(args.dataset, queries, args.probe_queries)
        probe_embeddings = model.encode(probes, is_query=True, batch_size=32, show_progress_bar=False)
        path = cache_path(args.dataset, len(ids), len(queries), len(probes))
        save_embeddings(path, ids, documents, query_embeddings, probe_embeddings)
    return {
        "probes": len(probes),
        "documents": len(ids),
        "queries": len(queries),
        "tokens": int(sum(len(d) for d in documents)),
        "encode_docs_per_s": len(ids) / seconds,
        "encode_dtype": args.encode_dtype,
        "precision": precision,
        "peak_rss_mib": peak_rss_mib(),
        "setup": setup(LIBRARY[system], precision),
    }


def worker_exact(args: argparse.Namespace) -> dict[str, Any]:
    """Exact MaxSim top-10 over all documents: the recall reference."""
    from pipeline.indexes.indexing import exact_search

    ids, documents, queries = load_embeddings(args.cache)
    started = time.perf_counter()
    reference = exact_search(queries, documents, ids, k=10, device=args.device)
    seconds = time.perf_counter() - started
    Path(args.reference).write_text(json.dumps([[h["id"] for h in row] for row in reference]))
    return {"exact_qps": len(queries) / seconds, "peak_rss_mib": peak_rss_mib()}


def worker_index(system: str, args: argparse.Namespace) -> dict[str, Any]:
    """Build one index over the cached embeddings, then search it with every query."""
    ids, documents, queries = load_embeddings(args.cache)
    reference = json.loads(Path(args.reference).read_text())
    folder = Path(tempfile.mkdtemp(prefix=f"bench-{system}-{args.kind}-", dir=args.scratch))
    if system == "ours":
        from pipeline import indexes, retrieve
    else:
        from pylate import indexes, retrieve
    if args.kind == "plaid":
        # ours as the index stage builds it (rerank=0: the stage keeps its own store and tunes its search)
        stage = {"rerank": 0} if system == "ours" else {}
        index = indexes.PLAID(
            index_folder=str(folder), index_name="index", override=True, device=args.device, **stage
        )
    else:
        index = indexes.Voyager(index_folder=str(folder), index_name="index", override=True)
    started = time.perf_counter()
    index.add_documents(documents_ids=ids, documents_embeddings=documents)
    build = time.perf_counter() - started
    qps, recall = measure_search(retrieve.ColBERT(index=index), queries, reference)
    result: dict[str, Any] = {
        "build_s": build,
        "qps": qps,
        "recall@10": recall,
        "disk_mib": folder_bytes(folder) / 2**20,
    }
    if args.kind == "plaid" and system == "ours":
        probes = load_probes(args.cache)
        result["tuned"] = tuned_search(index, folder, documents, probes, queries, reference, args)
    elif args.kind == "plaid":
        result["sweep"] = peer_sweep(index, retrieve, queries, reference)
    shutil.rmtree(folder, ignore_errors=True)
    # Both sides index the same cached float32 embeddings: that is the precision their index steps share.
    return {**result, "peak_rss_mib": peak_rss_mib(), "setup": setup(LIBRARY[system], "fp32 embeddings in")}


def recall_at_10(results: list[list[dict[str, Any]]], reference: list[list[str]]) -> float:
    """Mean share of each query's exact top-10 ids (``reference``) that its first 10 ``results`` hold."""
    return sum(
        len({str(h["id"]) for h in row[:10]} & set(expected)) / len(expected)
        for row, expected in zip(results, reference, strict=True)
    ) / len(reference)


def measure_search(retriever: Any, queries: list[Any], reference: list[list[str]]) -> tuple[float, float]:
    """QPS (after a warm-up) and recall@10 against the exact reference of ``retriever`` over ``queries``."""
    retriever.retrieve(queries_embeddings=queries[:2], k=10)  # warm-up: lazy loads, thread pools
    started = time.perf_counter()
    results = retriever.retrieve(queries_embeddings=queries, k=10)
    seconds = time.perf_counter() - started
    return len(queries) / seconds, recall_at_10(results, reference)


def search_description(index: Any) -> str:
    """How an index searched: our search settings (exact, or a re-scored candidate pass) when it has them,
    else plain PLAID's probe settings (ours, or PyLate's: its PLAID delegates to a FastPlaid holding them)."""
    settings = getattr(index, "search_settings", None)
    if settings is not None:
        return settings.describe()
    backend = getattr(index, "_index", index)
    return f"PLAID n_ivf_probe={backend.n_ivf_probe} n_full_scores={backend.n_full_scores}"


def tuned_search(
    index: Any,
    folder: Path,
    documents: list[Any],
    probes: list[Any],
    queries: list[Any],
    reference: list[list[str]],
    args: argparse.Namespace,
) -> dict[str, Any]:
    """Ours at the recall target (``args.recall_target``): write the float16 store, tune on the ``probes``
    as the index stage does, then search as users do (``args.device``)."""
    from pipeline import indexes, retrieve
    from pipeline.indexes import tuning

    version = index.stats()["version"]
    started = time.perf_counter()
    with tuning.EmbeddingStoreWriter(index.path / tuning.STORE_FOLDER, scratch=folder) as writer:
        writer.add(documents)
        store = writer.commit(index_version=version, device=args.device)
    store_seconds = time.perf_counter() - started
    started = time.perf_counter()
    result = tuning.tune(store, probes, index.candidate_slots, target=args.recall_target)
    tune_seconds = time.perf_counter() - started
    tuning.write_settings(index.path, version, result)
    if not result.settings.needs_store:
        shutil.rmtree(index.path / tuning.STORE_FOLDER)
    reopened = indexes.PLAID(index_folder=str(folder), index_name="index", device=args.device)
    qps, recall = measure_search(retrieve.ColBERT(index=reopened), queries, reference)
    return {
        "settings": result.summary()["settings"],
        "description": result.settings.describe(),
        "qps": qps,
        "recall@10": recall,
        "probe_recall@10": result.recall,
        "probe_queries": len(probes),
        "target": args.recall_target,
        "store_s": store_seconds,
        "tune_s": tune_seconds,
        "disk_mib": folder_bytes(folder) / 2**20,
    }


def peer_sweep(index: Any, retrieve: Any, queries: list[Any], reference: Any) -> list[dict[str, Any]]:
    """PyLate's QPS and recall@10 at each ``(n_ivf_probe, n_full_scores)`` of :data:`PEER_SWEEP`."""
    backend = index._index  # pylate.indexes.PLAID delegates to its FastPlaid, which reads these per search
    rows = []
    for probe, full in PEER_SWEEP:
        backend.n_ivf_probe, backend.n_full_scores = probe, full
        qps, recall = measure_search(retrieve.ColBERT(index=index), queries, reference)
        rows.append({"n_ivf_probe": probe, "n_full_scores": full, "qps": qps, "recall@10": recall})
    return rows


def worker_rss(args: argparse.Namespace) -> dict[str, Any]:
    """Peak RSS of index_corpus (encode + add in chunks) for ``--max-docs`` documents."""
    from pipeline import indexes
    from pipeline.indexes.indexing import index_corpus

    ids, texts = read_corpus(args.dataset, args.max_docs)
    model, precision = load_encoder("ours", "cpu", precision=args.precision)  # as the index stage encodes
    baseline = peak_rss_mib()
    folder = Path(tempfile.mkdtemp(prefix="bench-rss-", dir=args.scratch))
    index = indexes.PLAID(
        index_folder=str(folder), index_name="index", override=True, device=args.device, rerank=0
    )  # as the index stage builds it
    trace: list[float] = []  # peak RSS after each chunk: where in the corpus the peak is reached
    stats = index_corpus(
        model,
        texts,
        ids,
        index,
        chunk_size=args.chunk_size,
        show_progress=False,
        on_chunk=lambda *_: trace.append(round(peak_rss_mib())),
    )
    shutil.rmtree(folder, ignore_errors=True)
    return {
        **stats,
        "precision": precision,
        "rss_after_model_mib": baseline,
        "peak_rss_mib": peak_rss_mib(),
        "peak_rss_after_chunk_mib": trace,
    }


WORKERS = {
    "encode-ours": lambda args: worker_encode("ours", args),
    "encode-peer": lambda args: worker_encode("peer", args),
    "exact": worker_exact,
    "index-ours": lambda args: worker_index("ours", args),
    "index-peer": lambda args: worker_index("peer", args),
    "rss": worker_rss,
}


def main() -> None:
    """One step: ``python -m bench.index.workers STEP --dataset ... --result FILE``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("step", choices=sorted(WORKERS))
    parser.add_argument("--result", required=True, help="where the step's JSON goes")
    for name in ("--dataset", "--kind", "--cache", "--reference", "--model-path", "--scratch"):
        parser.add_argument(name)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--max-docs", type=int)
    parser.add_argument("--max-queries", type=int, default=300)
    parser.add_argument("--probe-queries", type=int, default=100)
    parser.add_argument("--recall-target", type=float, default=0.95)
    parser.add_argument("--encode-dtype", default="float32")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--chunk-size", type=int, default=500)
    args = parser.parse_args()
    die_with_parent()
    write_record(args.result, WORKERS[args.step](args))


if __name__ == "__main__":
    main()
