"""How build time, disk, memory and search time grow with the corpus: ours and PyLate 1.6, PLAID at each
library's defaults, on the same embeddings, beside brute-force exact MaxSim in fp32 and bf16.

For each size (documents): the real corpora combined (SciFact + NFCorpus + ArguAna, 17,490 documents,
shuffled), then, above that, synthetic documents made from real token embeddings with noise (how:
:mod:`bench.index.growth_data`). The real documents are encoded once, by ours at the index stage's precision
(``auto``: bf16 on a bf16-native CPU), and cached under ``bench/.cache/growth/`` so every size and both
libraries reuse the same float32 embeddings. Per size, each step in its own process
(:mod:`bench.index.growth_workers`): brute force (the recall@10 reference, fp32 and bf16, one query at a
time), then per library a build (seconds, disk, peak RSS) and a search of the reopened index (batched QPS,
one query at a time p50 / p95, recall@10 against exact, peak RSS). The record also holds each metric's
growth exponent: the least-squares slope of log(metric) over log(documents).

Before any work, each size's peak memory is estimated (:func:`estimate_memory`) and a run that would not fit
in the available memory stops, naming the size and the memory it needs.

The default sizes, 5,000, 17,490 (every real document) and 25,000, stop at about the largest whose builds
each take at most an hour on 2 cores (PyLate built 17,490 documents in 1,530 s on 2026-12-06, growing with
an exponent of about 1.4); the whole run is about 2 hours.

Usage (``make bench-growth`` runs the defaults)::

    .venv/bin/python -m bench.index.growth --sizes 1000 3000 --queries 50 \\
        --record bench/records/index_growth.json
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import (
    CACHE,
    PEER_PINNED,
    command_line,
    ensure_peer_venv,
    environment,
    logger,
    run_worker,
    setup_logging,
    write_record,
)

WORKERS = "bench.index.growth_workers"
#: The real corpora's documents and tokens (FACTS.md, 2026-12-06: 17,490 documents, 2.59M tokens).
REAL_DOCUMENTS = 17_490
TOKENS_PER_DOCUMENT = 2_590_000 / REAL_DOCUMENTS
#: Peak RSS while building, bytes per token, measured at 17,490 documents (FACTS.md, 2026-12-06: PyLate
#: 6.3 GB, ours 2.7 GB over 2.59M tokens). ``--calibrate RECORD`` takes them from a growth record instead.
BUILD_BYTES_PER_TOKEN = {"ours": 2.7e9 / 2.59e6, "peer": 6.3e9 / 2.59e6}
#: What the orchestrator holds while it writes a size (its float32 embeddings: 128 dims x 4 bytes), and
#: what a worker holds before its library's work (interpreter, torch).
EMBEDDING_BYTES_PER_TOKEN = 128 * 4
BASE_BYTES = 600 * 2**20
#: What stays free for everything else on the machine.
HEADROOM = 1.2
COMPARISON = "defaults"


class DoesNotFit(RuntimeError):
    """A size's estimated peak memory is above what the machine has available."""


def estimate_memory(documents: int, bytes_per_token: dict[str, float]) -> dict[str, float]:
    """Estimated peak bytes of one size: the larger library's build (``bytes_per_token`` x tokens, plus a
    worker's base) plus the orchestrator's copy of the embeddings, with :data:`HEADROOM`.

    >>> round(estimate_memory(17_490, {"ours": 1000.0})["needed"] / 2**30, 2)
    5.08
    """
    tokens = documents * TOKENS_PER_DOCUMENT
    builds = {name: BASE_BYTES + rate * tokens for name, rate in bytes_per_token.items()}
    needed = HEADROOM * (max(builds.values()) + EMBEDDING_BYTES_PER_TOKEN * tokens)
    return {"tokens": tokens, **{f"build_{name}": value for name, value in builds.items()}, "needed": needed}


def check_memory(sizes: list[int], bytes_per_token: dict[str, float], available: float) -> dict[int, Any]:
    """Every size's estimate; :class:`DoesNotFit` naming the first size that needs more than ``available``.

    >>> check_memory([1000, 10**6], {"ours": 1000.0}, available=8 * 2**30)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    bench.index.growth.DoesNotFit: size 1000000 documents needs about 250.9 GiB ... 8.0 GiB available: ...
    """
    estimates = {n: estimate_memory(n, bytes_per_token) for n in sizes}
    for n, estimate in estimates.items():
        if estimate["needed"] > available:
            raise DoesNotFit(
                f"size {n} documents needs about {estimate['needed'] / 2**30:.1f} GiB "
                f"({estimate['tokens']:,.0f} tokens estimated), {available / 2**30:.1f} GiB available: "
                "run smaller sizes or on a larger machine"
            )
    return estimates


def calibrated(record: dict[str, Any] | None) -> dict[str, float]:
    """Build bytes per token from a growth record's largest size (its peak RSS less a worker's base), or
    :data:`BUILD_BYTES_PER_TOKEN` without one."""
    if not record:
        return dict(BUILD_BYTES_PER_TOKEN)
    largest = max(record["sizes"], key=lambda size: size["documents"])
    return {
        name: max(largest[name]["build_peak_rss_mib"] * 2**20 - BASE_BYTES, 0) / largest["tokens"]
        for name in ("ours", "peer")
        if largest.get(name, {}).get("build_peak_rss_mib")
    } or dict(BUILD_BYTES_PER_TOKEN)


def exponent(points: list[tuple[float, float]]) -> float | None:
    """The least-squares slope of log(y) over log(x): how y grows with x (``None`` under two points).

    >>> round(exponent([(1000, 2.0), (2000, 4.0), (4000, 8.0)]), 3)
    1.0
    """
    points = [(math.log(x), math.log(y)) for x, y in points if x > 0 and y and y > 0]
    if len(points) < 2:
        return None
    mx = sum(x for x, _ in points) / len(points)
    my = sum(y for _, y in points) / len(points)
    spread = sum((x - mx) ** 2 for x, _ in points)
    return sum((x - mx) * (y - my) for x, y in points) / spread if spread else None


def real_embeddings(n: int, queries: int, seed: int, timeout: float) -> tuple[Path, dict[str, Any]]:
    """The cache of the first ``n`` real documents (and the queries), encoded now unless cached already."""
    path = CACHE / "growth" / f"real-{n}d-{queries}q-seed{seed}.npz"
    info = path.with_suffix(".json")
    if not (path.is_file() and info.is_file()):
        arguments = ["encode", "--cache", str(path), "--max-docs", str(n), "--max-queries", str(queries)]
        arguments += ["--seed", str(seed)]
        write_record(info, run_worker(sys.executable, WORKERS, arguments, timeout=timeout))
    return path, json.loads(info.read_text(encoding="utf-8"))


def measure_size(run: dict[str, Any], n: int, real: Path, folder: Path) -> dict[str, Any]:
    """One size: its embeddings written, brute force, then each library's build and search."""
    import numpy as np

    from bench.index.corpus import load_embeddings
    from bench.index.growth_data import size_documents, write_size

    args = run["args"]
    ids, documents, queries = load_embeddings(real)
    ids, documents = size_documents(documents, ids, n, args.seed)
    cache = write_size(folder / f"size-{n}.npz", ids, documents, np.stack(queries))
    row: dict[str, Any] = {
        "documents": n,
        "real_documents": min(n, len(run["real_ids"])),
        "tokens": int(sum(len(d) for d in documents)),
    }
    del documents
    reference = folder / f"reference-{n}.json"
    files = ["--cache", str(cache), "--reference", str(reference)]
    row["brute"] = run_worker(sys.executable, WORKERS, ["brute", *files], timeout=args.timeout)
    for system, python in run["pythons"].items():
        index = folder / f"index-{system}-{n}"
        steps = [*files, "--folder", str(index)]
        peer = system == "peer"
        built = run_worker(python, WORKERS, [f"build-{system}", *steps], peer=peer, timeout=args.timeout)
        searched = run_worker(python, WORKERS, [f"search-{system}", *steps], peer=peer, timeout=args.timeout)
        row[system] = {**built, **searched, "setup": searched["setup"]}
        shutil.rmtree(index, ignore_errors=True)
        logger.info("%d documents, %s: %s", n, system, {k: v for k, v in row[system].items() if k != "setup"})
    cache.unlink()
    return row


#: The metrics whose growth exponent the record keeps, each a path into a size's row.
GROWING = {
    "build_s": ("{side}", "build_s"),
    "disk_mib": ("{side}", "disk_mib"),
    "build_peak_rss_mib": ("{side}", "build_peak_rss_mib"),
    "search_peak_rss_mib": ("{side}", "search_peak_rss_mib"),
    "qps": ("{side}", "qps"),
    "single_p50_ms": ("{side}", "single", "p50_ms"),
    "single_p95_ms": ("{side}", "single", "p95_ms"),
}


def exponents(sizes: list[dict[str, Any]], sides: list[str]) -> dict[str, dict[str, float | None]]:
    """Per side (each library, and brute force fp32 / bf16), each metric's growth exponent over the sizes."""
    result: dict[str, dict[str, float | None]] = {}
    for side in sides:
        fitted = {}
        for metric, path in GROWING.items():
            points = []
            for size in sizes:
                value: Any = size
                for key in (part.format(side=side) for part in path):
                    value = value.get(key, {}) if isinstance(value, dict) else {}
                if isinstance(value, int | float):
                    points.append((size["documents"], float(value)))
            fitted[metric] = exponent(points)
        result[side] = fitted
    for precision in ("fp32", "bf16"):
        result[f"brute {precision}"] = {
            metric: exponent([(s["documents"], s["brute"][precision][key]) for s in sizes])
            for metric, key in (("single_p50_ms", "p50_ms"), ("single_p95_ms", "p95_ms"))
        }
    return result


def orchestrate(args: argparse.Namespace) -> dict[str, Any]:
    """The memory check, the embeddings, every size; the record, saved after each size."""
    import psutil

    from bench.index.growth_data import combined_corpus, describe

    sizes = sorted(set(args.sizes))
    rates = calibrated(json.loads(Path(args.calibrate).read_text()) if args.calibrate else None)
    available = args.available_gib * 2**30 if args.available_gib else psutil.virtual_memory().available
    estimates = check_memory(sizes, rates, available)
    real_ids, _ = combined_corpus(args.seed)
    pythons = {"ours": sys.executable, **({"peer": str(ensure_peer_venv())} if args.peer else {})}
    real, encoded = real_embeddings(min(max(sizes), len(real_ids)), args.queries, args.seed, args.timeout)
    report: dict[str, Any] = {
        "benchmark": "index_growth",
        "environment": environment(),
        "command": command_line("bench.index.growth"),
        "documents": describe(args.seed),
        "queries": args.queries,
        "encoding": encoded,
        "comparison": COMPARISON,
        "declared": list(PEER_PINNED),
        "memory_estimate": {
            "bytes_per_token": rates,
            "available_gib": available / 2**30,
            "needed_gib": {str(n): e["needed"] / 2**30 for n, e in estimates.items()},
        },
        "sizes": [],
    }
    run = {"args": args, "real_ids": real_ids, "pythons": pythons}
    with tempfile.TemporaryDirectory(prefix="growth-", dir=args.scratch) as folder:
        for n in sizes:
            started = time.perf_counter()
            report["sizes"].append({**measure_size(run, n, real, Path(folder)), "wall_s": 0.0})
            report["sizes"][-1]["wall_s"] = time.perf_counter() - started
            report["exponents"] = exponents(report["sizes"], list(pythons))
            if args.note:
                report["note"] = args.note
            write_record(args.record or CACHE / "runs" / "index_growth.json", report)
    return report


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", type=int, default=[5_000, REAL_DOCUMENTS, 25_000])
    parser.add_argument("--queries", type=int, default=50, help="test queries of the three sets, in turn")
    parser.add_argument("--seed", type=int, default=0, help="the shuffle and the synthetic documents")
    parser.add_argument("--no-peer", dest="peer", action="store_false", help="ours and brute force only")
    parser.add_argument("--calibrate", default=None, help="a growth record to take build bytes/token from")
    parser.add_argument("--available-gib", type=float, default=None, help="instead of psutil's figure")
    parser.add_argument("--timeout", type=int, default=6 * 3600, help="seconds per worker")
    parser.add_argument("--scratch", default=None, help="where sizes' embeddings and indexes go")
    parser.add_argument("--record", default=None, help="the record to write (to commit)")
    parser.add_argument("--note", default=None, help="a caveat printed with the table")
    return parser


def main() -> None:
    setup_logging()
    try:
        report = orchestrate(parser().parse_args())
    except DoesNotFit as error:
        raise SystemExit(f"bench.index.growth: {error}") from None
    from bench.render import render

    print(render(report))


if __name__ == "__main__":
    main()
