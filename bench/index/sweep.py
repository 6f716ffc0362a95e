"""``python -m bench.index.sweep``: PyLate's PLAID over a fine grid of search settings, and both libraries'
exact search, beside ours, on the same embeddings in one run.

The index benchmark's PyLate sweep has nine settings; this one has 49 (``n_ivf_probe`` 1..64 x
``n_full_scores`` 256..16,384, :mod:`bench.index.sweep_workers`), so that "PyLate at our recall" is a
measured setting, or its nearest recall above and below ours both are. Ours is measured three ways on the
same index inputs: as PyLate behaves (``rerank=0``, PyLate's settings: like for like but for fast-plaid's
version), tuned to the recall target as the index stage does, and at the library's defaults. Exact search is
ours (:func:`pipeline.indexes.indexing.exact_search`) against PyLate's ``rank.rerank`` over every document.

Steps run one at a time in fresh processes (encode and the exact reference by :mod:`bench.index.workers`),
so a step's peak RSS is its own. Run it on a quiet machine; the record is rendered by ``bench.render``.

Usage (85 minutes on 2 cores for SciFact and 100 queries on 2026-12-07, most of it PyLate's grid):
    .venv/bin/python -m bench.index.sweep --record bench/records/index_sweep_scifact.json
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.common import (
    PEER_PINNED,
    command_line,
    ensure_peer_venv,
    environment,
    run_worker,
    setup_logging,
    write_record,
)
from bench.index.corpus import cache_path
from bench.setup_notes import setup_note

BENCHMARK = "index_sweep"


def neighbours(settings: list[dict[str, Any]], recall: float) -> dict[str, dict[str, Any] | None]:
    """PyLate's settings nearest ``recall``: ``at_or_above``, the fastest reaching it, and ``below``, the
    highest recall under it (the fastest of ties); ``None`` where there is none.

    Example:
        >>> grid = [{"recall@10": 0.90, "qps": 9.0}, {"recall@10": 0.95, "qps": 2.0},
        ...         {"recall@10": 0.96, "qps": 3.0}, {"recall@10": 0.93, "qps": 5.0}]
        >>> found = neighbours(grid, 0.95)
        >>> found["at_or_above"]["qps"], found["below"]["recall@10"]
        (3.0, 0.93)
    """
    above = [s for s in settings if s["recall@10"] >= recall]
    below = [s for s in settings if s["recall@10"] < recall]
    return {
        "at_or_above": max(above, key=lambda s: s["qps"]) if above else None,
        "below": max(below, key=lambda s: (s["recall@10"], s["qps"])) if below else None,
    }


def summarize(ours: dict[str, Any], peer: dict[str, Any], exact_qps: float) -> dict[str, Any]:
    """The record's comparisons: each of ours' rows against PyLate's nearest settings, and exact search."""
    candidates = [{"n_ivf_probe": 8, "n_full_scores": 8192, **peer["defaults"]}, *peer["grid"]]
    comparisons = {}
    for name in ("pylate settings", "tuned", "defaults"):
        row = ours[name]
        near = neighbours(candidates, row["recall@10"])
        comparisons[name] = {
            side: None if found is None else {**found, "qps_ratio": round(row["qps"] / found["qps"], 2)}
            for side, found in near.items()
        }
    # PyLate's index at its defaults (probe 8, 8,192 full scores) is also ours' "pylate settings" row's
    # same-settings counterpart: the like-for-like ratio for search, and each row's build beside its build.
    defaults = peer["defaults"]
    versus_defaults = {
        name: {
            "qps_ratio": round(ours[name]["qps"] / defaults["qps"], 2),
            "build_ratio": round(ours[name]["build_s"] / defaults["build_s"], 2),
        }
        for name in ("pylate settings", "tuned", "defaults")
    }
    return {
        "versus_pylate_settings": comparisons,
        "versus_pylate_defaults": versus_defaults,
        "exact": {
            "ours_qps": exact_qps,
            "pylate_qps": peer["exact"]["qps"],
            "pylate_recall@10": peer["exact"]["recall@10"],
            "qps_ratio": round(exact_qps / peer["exact"]["qps"], 2),
        },
    }


def orchestrate(args: argparse.Namespace) -> dict[str, Any]:
    ours_python, peer_python = Path(sys.executable), ensure_peer_venv()
    scratch = Path(args.scratch or tempfile.mkdtemp(prefix="index-sweep-")).resolve()
    scratch.mkdir(parents=True, exist_ok=True)
    common = ["--dataset", args.dataset, "--max-queries", str(args.max_queries), "--scratch", str(scratch)]
    common += ["--probe-queries", str(args.probe_queries)]
    if args.max_docs:
        common += ["--max-docs", str(args.max_docs)]
    # fp32, as PyLate encodes: both sides then index embeddings either library could have made.
    encoded = run_worker(ours_python, "bench.index.workers", ["encode-ours", *common, "--precision", "fp32"])
    cache = cache_path(args.dataset, encoded["documents"], encoded["queries"], encoded["probes"])
    reference = scratch / "reference.json"
    files = ["--cache", str(cache), "--reference", str(reference), "--scratch", str(scratch)]
    exact = run_worker(ours_python, "bench.index.workers", ["exact", *common, *files[:4]])
    options = [*files, "--recall-target", str(args.recall_target)]
    ours = run_worker(ours_python, "bench.index.sweep_workers", ["ours", *options])
    peer = run_worker(peer_python, "bench.index.sweep_workers", ["peer", *options], peer=True)
    record = {
        "benchmark": BENCHMARK,
        "command": command_line("bench.index.sweep"),
        "environment": environment(),
        "dataset": args.dataset,
        "documents": encoded["documents"],
        "tokens": encoded["tokens"],
        "queries": encoded["queries"],
        "probe_queries": encoded["probes"],
        "recall_target": args.recall_target,
        "comparison": "like for like",
        "declared": list(PEER_PINNED),
        "setups": {"ours": ours.pop("setup"), "peer": peer.pop("setup")},
        "ours": ours,
        "peer": peer,
        "summary": summarize(ours, peer, exact["exact_qps"]),
    }
    if args.record:
        write_record(args.record, record)
    return record


# ------------------------------------------------------------------------------------------ rendering
def _setting(row: dict[str, Any] | None) -> str:
    if row is None:
        return "none"
    return (
        f"probe {row['n_ivf_probe']}, {row['n_full_scores']:,} full scores: {row['qps']:.2f} QPS at "
        f"{row['recall@10']:.3f} (ours {row['qps_ratio']:.2f}x)"
    )


def render_sweep(report: dict[str, Any]) -> str:
    """The record as Markdown: ours' rows beside PyLate's nearest settings, exact search, and the grid."""
    from bench.render import environment_line

    differences, _ = setup_note(report, "index sweep")
    summary = report["summary"]
    lines = [
        environment_line(report),
        "",
        f"{report['dataset']}: {report['documents']:,} documents ({report['tokens']:,} tokens), "
        f"{report['queries']} queries; both libraries index the same float32 embeddings "
        f"({differences or 'no declared difference'}).",
        "",
        "| ours | settings | build s | QPS | recall@10 vs exact | PyLate at or above that recall "
        "| PyLate's nearest below it | vs PyLate's defaults: QPS, build time |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, label in (
        ("pylate settings", "as PyLate (`rerank=0`)"),
        ("tuned", "tuned as the index stage"),
        ("defaults", "library defaults"),
    ):
        row, near = report["ours"][name], summary["versus_pylate_settings"][name]
        versus = summary["versus_pylate_defaults"][name]
        lines.append(
            f"| {label} | {row['settings']} | {row['build_s']:.1f} | {row['qps']:.2f} | "
            f"{row['recall@10']:.3f} | {_setting(near['at_or_above'])} | {_setting(near['below'])} | "
            f"{versus['qps_ratio']:.2f}x, {versus['build_ratio']:.2f}x |"
        )
    exact, defaults = summary["exact"], report["peer"]["defaults"]
    lines += [
        "",
        f"Exact search over every document: ours {exact['ours_qps']:.2f} QPS, PyLate's `rank.rerank` "
        f"{exact['pylate_qps']:.2f} QPS (recall@10 {exact['pylate_recall@10']:.3f} against ours), "
        f"{exact['qps_ratio']:.2f}x. PyLate's index at its defaults (probe 8, 8,192 full scores) built in "
        f"{defaults['build_s']:.1f} s and answered {defaults['qps']:.2f} QPS at recall@10 "
        f"{defaults['recall@10']:.3f}.",
        "",
        "PyLate's grid (QPS / recall@10 vs exact):",
        "",
    ]
    grid = report["peer"]["grid"]
    fulls = sorted({row["n_full_scores"] for row in grid})
    lines += [
        "| n_ivf_probe | " + " | ".join(f"{full:,}" for full in fulls) + " |",
        "|---|" + "---|" * len(fulls),
    ]
    for probe in sorted({row["n_ivf_probe"] for row in grid}):
        cells = {row["n_full_scores"]: row for row in grid if row["n_ivf_probe"] == probe}
        lines.append(
            f"| {probe} | "
            + " | ".join(
                f"{cells[f]['qps']:.2f} / {cells[f]['recall@10']:.3f}" if f in cells else "not run"
                for f in fulls
            )
            + " |"
        )
    return "\n".join(lines)


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="scifact")
    parser.add_argument("--max-docs", type=int, default=None, help="first N documents (default: all)")
    parser.add_argument("--max-queries", type=int, default=100)
    parser.add_argument("--probe-queries", type=int, default=100, help="queries (not measured) tuned on")
    parser.add_argument("--recall-target", type=float, default=0.95)
    parser.add_argument("--scratch", default=None, help="where temporary indexes go")
    parser.add_argument("--record", default=None, help="write the record here (to commit)")
    return parser


def main() -> None:
    setup_logging()
    record = orchestrate(parser().parse_args())
    print(render_sweep(record))


if __name__ == "__main__":
    main()
