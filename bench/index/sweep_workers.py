"""The fine sweep's measured steps (:mod:`bench.index.sweep`), each in a fresh process.

``peer`` runs in PyLate's venv: its PLAID at its defaults, then over every ``(n_ivf_probe, n_full_scores)``
of :data:`PROBES` x :data:`FULL_SCORES` on the same index, then its exact search (``rank.rerank`` over every
document, as its docs show re-ranking). ``ours`` builds our PLAID the way PyLate behaves (``rerank=0``) and
searches it at PyLate's settings, tunes it to the recall target as the index stage does, and builds one at
the library's defaults. Both index the same cached float32 embeddings (:mod:`bench.index.corpus`).
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
from bench.index.corpus import load_embeddings, load_probes
from bench.index.workers import measure_search, recall_at_10, search_description, tuned_search

#: ``n_ivf_probe`` values swept (PyLate's default is 8).
PROBES = (1, 2, 4, 8, 16, 32, 64)
#: ``n_full_scores`` values swept (PyLate's default is 8,192).
FULL_SCORES = (256, 512, 1024, 2048, 4096, 8192, 16384)
#: What both sides index: the same float32 embeddings, whatever each library would encode in.
EMBEDDINGS_IN = "fp32 embeddings in"


def peer_exact(ids: list[str], documents: list[Any], queries: list[Any], reference: Any) -> dict[str, Any]:
    """PyLate's exact search: ``rank.rerank`` of every document for each query (one query per call, as a
    user re-ranking a whole corpus would; each call pads every document into one tensor)."""
    from pylate import rank

    def top10(query: Any) -> list[dict[str, Any]]:
        return rank.rerank(documents_ids=[ids], queries_embeddings=[query], documents_embeddings=[documents])[
            0
        ]

    top10(queries[0])  # warm-up, as every timed search here has
    started = time.perf_counter()
    results = [top10(query)[:10] for query in queries]
    seconds = time.perf_counter() - started
    return {"qps": len(queries) / seconds, "recall@10": recall_at_10(results, reference)}


def worker_peer(args: argparse.Namespace) -> dict[str, Any]:
    """PyLate's PLAID at its defaults and over the grid, and its exact search."""
    from pylate import indexes, retrieve

    ids, documents, queries = load_embeddings(args.cache)
    reference = json.loads(Path(args.reference).read_text())
    folder = Path(tempfile.mkdtemp(prefix="sweep-peer-", dir=args.scratch))
    index = indexes.PLAID(index_folder=str(folder), index_name="index", override=True, device=args.device)
    started = time.perf_counter()
    index.add_documents(documents_ids=ids, documents_embeddings=documents)
    build = time.perf_counter() - started
    retriever = retrieve.ColBERT(index=index)
    qps, recall = measure_search(retriever, queries, reference)
    defaults = {"build_s": build, "qps": qps, "recall@10": recall, "disk_mib": folder_bytes(folder) / 2**20}
    backend = index._index  # pylate.indexes.PLAID delegates to its FastPlaid, which reads these per search
    grid = []
    for probe in PROBES:
        for full in FULL_SCORES:
            backend.n_ivf_probe, backend.n_full_scores = probe, full
            qps, recall = measure_search(retriever, queries, reference)
            grid.append({"n_ivf_probe": probe, "n_full_scores": full, "qps": qps, "recall@10": recall})
    shutil.rmtree(folder, ignore_errors=True)
    exact = peer_exact(ids, documents, queries, reference)
    return {
        "defaults": defaults,
        "grid": grid,
        "exact": exact,
        "peak_rss_mib": peak_rss_mib(),
        "setup": setup("pylate", EMBEDDINGS_IN),
    }


def worker_ours(args: argparse.Namespace) -> dict[str, Any]:
    """Ours as PyLate behaves (``rerank=0``) at PyLate's settings, tuned as the index stage tunes, and at the
    library's defaults."""
    from pipeline import indexes

    ids, documents, queries = load_embeddings(args.cache)
    reference = json.loads(Path(args.reference).read_text())
    rows: dict[str, Any] = {}
    folder = Path(tempfile.mkdtemp(prefix="sweep-ours-", dir=args.scratch))
    plain = indexes.PLAID(
        index_folder=str(folder), index_name="index", override=True, device=args.device, rerank=0
    )
    rows["pylate settings"] = _built_and_searched(plain, folder, ids, documents, queries, reference)
    tuned = tuned_search(plain, folder, documents, load_probes(args.cache), queries, reference, args)
    build = rows["pylate settings"]["build_s"]
    rows["tuned"] = {**tuned, "build_s": build + tuned["store_s"], "settings": tuned["description"]}
    shutil.rmtree(folder, ignore_errors=True)
    folder = Path(tempfile.mkdtemp(prefix="sweep-defaults-", dir=args.scratch))
    default = indexes.PLAID(index_folder=str(folder), index_name="index", override=True, device=args.device)
    rows["defaults"] = _built_and_searched(default, folder, ids, documents, queries, reference)
    shutil.rmtree(folder, ignore_errors=True)
    return {**rows, "peak_rss_mib": peak_rss_mib(), "setup": setup("pipeline", EMBEDDINGS_IN)}


def _built_and_searched(
    index: Any, folder: Path, ids: list[str], documents: list[Any], queries: list[Any], reference: Any
) -> dict[str, Any]:
    """Build one of our indexes over the embeddings, then search it: the row the sweep records for it."""
    from pipeline import retrieve

    started = time.perf_counter()
    index.add_documents(documents_ids=ids, documents_embeddings=documents)
    build = time.perf_counter() - started
    qps, recall = measure_search(retrieve.ColBERT(index=index), queries, reference)
    return {
        "build_s": build,
        "qps": qps,
        "recall@10": recall,
        "disk_mib": folder_bytes(folder) / 2**20,
        "settings": search_description(index),
    }


WORKERS = {"ours": worker_ours, "peer": worker_peer}


def main() -> None:
    """One step: ``python -m bench.index.sweep_workers STEP --cache ... --result FILE``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("step", choices=sorted(WORKERS))
    parser.add_argument("--result", required=True, help="where the step's JSON goes")
    for name in ("--cache", "--reference", "--scratch"):
        parser.add_argument(name, required=True)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--recall-target", type=float, default=0.95)
    args = parser.parse_args()
    die_with_parent()
    write_record(args.result, WORKERS[args.step](args))


if __name__ == "__main__":
    main()
