"""Profile a PLAID build (encoding excluded) and compare k-means settings by build time and recall@10.

Encodes the first ``--docs`` documents of a ``../shared/data`` corpus once (cached under
``bench/.cache/embeddings/``), then in this one process: builds :class:`pipeline.indexes.PLAID` under
cProfile and prints where the time goes, then builds once per k-means variant (the default again included),
printing its build seconds and recall@10 against exact MaxSim on the corpus's test queries (plain PLAID
search at ``n_full_scores=1024``).

Usage (minutes):
    OMP_NUM_THREADS=2 .venv/bin/python -m bench.index.build --dataset scifact --docs 1000 --queries 100
    .venv/bin/python -m bench.index.build --cache bench/.cache/embeddings/scifact-500d-50q-50p.npz  # reuse
    # a full corpus cached by `python -m bench.index`, two variants, no profile (about 10 minutes on 2 cores):
    .venv/bin/python -m bench.index.build --cache bench/.cache/embeddings/scifact-5183d-300q-100p.npz \
        --dataset scifact --no-profile --variants 0 4 --record bench/records/build_kmeans_scifact.json
    # ... and each variant tuned to recall@10 0.95 as the index stage tunes (its QPS and recall at target):
    .venv/bin/python -m bench.index.build --cache bench/.cache/embeddings/scifact-5183d-300q-100p.npz \
        --dataset scifact --no-profile --variants 0 1 3 --tuned \
        --record bench/records/build_sample_scifact.json
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import command_line, environment, profiled, write_record
from bench.index.corpus import (
    EMBEDDINGS,
    load_embeddings,
    load_probes,
    read_corpus,
    read_queries,
    save_embeddings,
)
from bench.index.workers import tuned_search

#: name -> PLAID keyword arguments (the default first).
VARIANTS: dict[str, dict] = {
    "default (niters 4, 32 points/centroid, a sample of documents, 8,192-point blocks)": {},
    "fast-plaid's and PyLate's 256 points/centroid": {"max_points_per_centroid": 256},
    "kmeans_niters 2": {"kmeans_niters": 2},
    "16 points/centroid": {"max_points_per_centroid": 16},
    "fast-plaid's 51,200-point k-means blocks": {"kmeans_chunk_size": 51_200},
    "4,096 centroids (fast-plaid's rule gives SciFact and NFCorpus 8,192)": {"n_centroids": 4096},
}


def embeddings(dataset: str, docs: int, queries: int, cache: Path | None = None) -> tuple[list, list, list]:
    """Ids, document and query embeddings: from ``cache`` (``python -m bench.index``'s) or encoded once."""
    path = cache or EMBEDDINGS / f"profile-{dataset}-{docs}d-{queries}q.npz"
    if not path.is_file():
        from pipeline import models

        ids, texts = read_corpus(dataset, docs)
        model = models.ColBERT(device="cpu")
        documents = model.encode(texts, is_query=False, batch_size=32, show_progress_bar=True)
        encoded = model.encode(read_queries(dataset, queries), is_query=True, batch_size=32)
        save_embeddings(path, ids, documents, encoded)
    return load_embeddings(path)


def build_variant(
    name: str,
    kwargs: dict[str, Any],
    folder: Path,
    data: tuple[list, list, list],
    reference: list,
    profile: int,
) -> dict[str, Any]:
    """Build one variant (under cProfile when ``profile`` > 0, printing its top entries), then measure."""
    from pipeline import indexes
    from pipeline.indexes.indexing import recall_at_k

    ids, documents, queries = data
    # rerank=0: the index stage's build (fast-plaid's centroid rule, no store), which the variants change
    kwargs = {"rerank": 0, **kwargs}
    index = indexes.PLAID(index_folder=folder, index_name="index", override=True, device="cpu", **kwargs)

    def build() -> float:
        started = time.perf_counter()
        index.add_documents(ids, documents)
        return time.perf_counter() - started

    if profile:
        seconds, text = profiled(build, profile)
    else:
        seconds, text = build(), ""
    plain = indexes.PLAID(index_folder=folder, index_name="index", device="cpu", n_full_scores=1024, rerank=0)
    recall = recall_at_k(plain(queries, k=10), reference, k=10)
    print(f"{name}: build {seconds:.1f} s, recall@10 {recall:.3f}", flush=True)
    if text:
        print(text, flush=True)
    return {"build_s": round(seconds, 1), "recall@10": round(recall, 3), "index": index}


def run(args: argparse.Namespace, data: tuple[list, list, list]) -> dict[str, dict]:
    """The profiled build (unless ``--no-profile``), then each chosen variant: build seconds and recall."""
    from pipeline.indexes.indexing import exact_search

    ids, documents, queries = data
    reference = exact_search(queries, documents, ids, k=10)
    scratch = Path(tempfile.mkdtemp(prefix="profile-build-"))
    # The profiled build runs first and apart: the first build in a process also pays one-off loads, and
    # the profiler's overhead; every variant (the default included) is then timed the same way.
    chosen = list(VARIANTS.items())
    if args.variants is not None:
        chosen = [chosen[position] for position in args.variants]
    runs = ([] if args.no_profile else [("profiled default", {})]) + chosen
    report: dict[str, dict] = {}
    for position, (name, kwargs) in enumerate(runs):
        folder = scratch / f"v{position}"
        profile = args.top if position == 0 and not args.no_profile else 0
        result = build_variant(name, kwargs, folder, data, reference, profile)
        index = result.pop("index")
        report[name] = result
        if args.tuned:
            settings = argparse.Namespace(device="cpu", recall_target=0.95)
            expected = [[hit["id"] for hit in row] for row in reference]
            probes = load_probes(args.cache)
            tuned = tuned_search(index, folder, documents, probes, queries, expected, settings)
            report[name]["tuned"] = {key: tuned[key] for key in ("description", "qps", "recall@10", "tune_s")}
            print(f"  tuned: {tuned['description']}: {tuned['qps']:.1f} QPS, recall {tuned['recall@10']:.3f}")
        shutil.rmtree(folder, ignore_errors=True)  # a full corpus's index is large
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="scifact")
    parser.add_argument("--docs", type=int, default=1000)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--top", type=int, default=25, help="functions shown from the profile")
    parser.add_argument(
        "--cache", type=Path, default=None, help="embeddings cached by `python -m bench.index`"
    )
    parser.add_argument(
        "--no-profile", action="store_true", help="skip the cProfile build (a full corpus takes minutes)"
    )
    parser.add_argument(
        "--variants",
        nargs="+",
        type=int,
        choices=range(len(VARIANTS)),
        default=None,
        help="positions in VARIANTS to build (default: all)",
    )
    parser.add_argument(
        "--tuned",
        action="store_true",
        help="also tune each variant to recall@10 0.95 on the cache's probe queries (as the index "
        "benchmark's tuned search) and report the tuned settings, QPS and recall; needs --cache",
    )
    parser.add_argument("--record", type=Path, default=None, help="also write the JSON report here")
    args = parser.parse_args()
    if args.tuned and args.cache is None:
        parser.error("--tuned needs --cache (a `python -m bench.index` cache holds the probe queries)")
    data = embeddings(args.dataset, args.docs, args.queries, args.cache)
    report = run(args, data)
    ids, documents, queries = data
    summary = {
        "dataset": args.dataset,
        "command": command_line("bench.index.build"),
        "documents": len(ids),
        "tokens": int(sum(len(d) for d in documents)),
        "queries": len(queries),
        "cache": str(args.cache) if args.cache else None,
        "environment": environment(),
        "variants": report,
    }
    print(json.dumps(summary, indent=2))
    if args.record:
        write_record(args.record, summary)


if __name__ == "__main__":
    main()
