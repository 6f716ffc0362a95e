"""The growth benchmark's measured steps, each in a fresh process (its peak RSS is its own).

``encode``: the real corpora combined (:mod:`bench.index.growth_data`), encoded once by ours at the index
stage's precision and cached; ``brute``: exact MaxSim over every token, fp32 and bf16 (the recall
reference, batched QPS and one query at a time); ``build-ours`` / ``build-peer``: a PLAID index at the
library's defaults over one size's embeddings (seconds, disk, peak RSS); ``search-ours`` / ``search-peer``:
that index reopened in a new process (which never loads the documents' embeddings), searched batched and one
query at a time (peak RSS while searching). Neither ``pipeline`` nor ``pylate`` is imported at module level:
PyLate's steps run in its venv. Started by :mod:`bench.index.growth`.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from bench.common import die_with_parent, folder_bytes, peak_rss_mib, setup, write_record
from bench.index.corpus import load_embeddings, save_embeddings
from bench.index.encode import load_encoder, timed_encode
from bench.index.growth_data import combined_corpus, combined_queries, queries_only

LIBRARY = {"ours": "pipeline", "peer": "pylate"}
#: The input both indexes get: the cached float32 embeddings (the encoder's precision is the record's).
INDEX_PRECISION = "fp32 embeddings in"


def worker_encode(args: argparse.Namespace) -> dict[str, Any]:
    """The first ``--max-docs`` documents of the combined corpus and ``--max-queries`` queries, cached."""
    ids, texts = combined_corpus(args.seed)
    ids, texts = ids[: args.max_docs], texts[: args.max_docs]
    queries = combined_queries(args.max_queries)
    model, precision = load_encoder("ours", "cpu", precision="auto")
    documents, seconds = timed_encode(model, texts, 32, "cpu")
    query_embeddings = model.encode(queries, is_query=True, batch_size=32, show_progress_bar=False)
    save_embeddings(Path(args.cache), ids, documents, query_embeddings)
    return {
        "documents": len(ids),
        "queries": len(queries),
        "tokens": int(sum(len(d) for d in documents)),
        "encode_s": seconds,
        "setup": setup("pipeline", precision),
    }


def maxsim_scores(query: Any, tokens: Any, owner: Any, n_docs: int, block: int = 1 << 20) -> Any:
    """Exact MaxSim of one query against every document: ``query @ tokens.T`` a block of tokens at a time,
    each token's similarity maxed into its document's (``owner``), summed over the query's tokens."""
    import torch

    best = torch.full((query.shape[0], n_docs), float("-inf"))
    for start in range(0, tokens.shape[0], block):
        similarity = (query @ tokens[start : start + block].T).float()
        index = owner[start : start + block].expand(query.shape[0], -1)
        best.scatter_reduce_(1, index, similarity, reduce="amax", include_self=True)
    return best.sum(dim=0)


def worker_brute(args: argparse.Namespace) -> dict[str, Any]:
    """Brute-force exact MaxSim in fp32 and bf16: top 10 per query (fp32's is the recall reference)."""
    import numpy as np
    import torch

    ids, documents, queries = load_embeddings(args.cache)
    lengths = torch.tensor([len(d) for d in documents])
    owner = torch.repeat_interleave(torch.arange(len(documents)), lengths).unsqueeze(0)
    tokens32 = torch.from_numpy(np.concatenate(documents))
    del documents
    result: dict[str, Any] = {"tokens": int(tokens32.shape[0])}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        tokens = tokens32.to(dtype)
        times, tops = [], []
        maxsim_scores(torch.from_numpy(queries[0]).to(dtype), tokens, owner, len(ids))  # warm-up
        for query in queries:
            started = time.perf_counter()
            scores = maxsim_scores(torch.from_numpy(query).to(dtype), tokens, owner, len(ids))
            tops.append([ids[i] for i in torch.topk(scores, 10).indices.tolist()])
            times.append(time.perf_counter() - started)
        result[name] = latency(times)
        if name == "fp32":
            Path(args.reference).write_text(json.dumps(tops), encoding="utf-8")
        else:
            result[name]["recall@10"] = recall(tops, json.loads(Path(args.reference).read_text()))
    return {**result, "peak_rss_mib": peak_rss_mib(), "setup": setup("torch", "fp32 and bf16")}


def latency(seconds: list[float]) -> dict[str, float]:
    """QPS (one query after another) and p50 / p95 milliseconds of per-query times."""
    import numpy as np

    ms = np.array(seconds) * 1000
    return {
        "qps": len(seconds) / sum(seconds),
        "p50_ms": float(np.percentile(ms, 50)),
        "p95_ms": float(np.percentile(ms, 95)),
    }


def recall(results: list[list[str]], reference: list[list[str]]) -> float:
    """Mean recall@10 of ``results`` (ids, best first) against ``reference``."""
    hits = [len(set(r[:10]) & set(e)) / len(e) for r, e in zip(results, reference, strict=True)]
    return sum(hits) / len(hits)


def open_plaid(system: str, folder: str, build: bool) -> Any:
    """The library's PLAID at its defaults (no progress bars), new (``build``) or reopened."""
    if system == "ours":
        from pipeline import indexes
    else:
        from pylate import indexes
    return indexes.PLAID(index_folder=folder, index_name="index", override=build, show_progress=False)


def worker_build(system: str, args: argparse.Namespace) -> dict[str, Any]:
    """Build the library's default PLAID over one size's embeddings: seconds, disk, peak RSS."""
    ids, documents, _ = load_embeddings(args.cache)
    loaded = peak_rss_mib()
    index = open_plaid(system, args.folder, build=True)
    started = time.perf_counter()
    index.add_documents(documents_ids=ids, documents_embeddings=documents)
    seconds = time.perf_counter() - started
    return {
        "build_s": seconds,
        "disk_mib": folder_bytes(Path(args.folder)) / 2**20,
        "rss_after_load_mib": loaded,
        "build_peak_rss_mib": peak_rss_mib(),
        "setup": setup(LIBRARY[system], INDEX_PRECISION),
    }


def worker_search(system: str, args: argparse.Namespace) -> dict[str, Any]:
    """Reopen the index and search it: batched QPS, one query at a time (p50 / p95), recall@10, peak RSS."""
    if system == "ours":
        from pipeline import retrieve
    else:
        from pylate import retrieve
    queries = queries_only(args.cache)
    reference = json.loads(Path(args.reference).read_text())
    retriever = retrieve.ColBERT(index=open_plaid(system, args.folder, build=False))
    retriever.retrieve(queries_embeddings=queries[:2], k=10)  # warm-up: lazy loads, thread pools
    started = time.perf_counter()
    batched = retriever.retrieve(queries_embeddings=queries, k=10)
    qps = len(queries) / (time.perf_counter() - started)
    times, single = [], []
    for query in queries:
        started = time.perf_counter()
        single.append(retriever.retrieve(queries_embeddings=[query], k=10)[0])
        times.append(time.perf_counter() - started)

    def ids(rows: list[Any]) -> list[list[str]]:
        return [[str(hit["id"]) for hit in row] for row in rows]

    return {
        "qps": qps,
        "recall@10": recall(ids(batched), reference),
        "single": {**latency(times), "recall@10": recall(ids(single), reference)},
        "search_peak_rss_mib": peak_rss_mib(),
        "setup": setup(LIBRARY[system], INDEX_PRECISION),
    }


WORKERS = {
    "encode": worker_encode,
    "brute": worker_brute,
    "build-ours": lambda args: worker_build("ours", args),
    "build-peer": lambda args: worker_build("peer", args),
    "search-ours": lambda args: worker_search("ours", args),
    "search-peer": lambda args: worker_search("peer", args),
}


def main() -> None:
    """One step: ``python -m bench.index.growth_workers STEP --cache FILE ... --result FILE``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("step", choices=sorted(WORKERS))
    parser.add_argument("--result", required=True, help="where the step's JSON goes")
    for name in ("--cache", "--reference", "--folder"):
        parser.add_argument(name)
    parser.add_argument("--max-docs", type=int)
    parser.add_argument("--max-queries", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    die_with_parent()
    write_record(args.result, WORKERS[args.step](args))


if __name__ == "__main__":
    main()
