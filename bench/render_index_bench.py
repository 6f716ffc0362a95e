"""Render an ``index_bench.py`` report (JSON) as the README's Markdown tables.

Usage:
    .venv/bin/python bench/render_index_bench.py bench/records/index_bench.json            # print
    .venv/bin/python bench/render_index_bench.py bench/records/index_bench.json --readme README.md

``--readme`` replaces what lies between ``<!-- index-bench:begin -->`` and ``<!-- index-bench:end -->`` in
that file (atomically), so the README's numbers are always the committed report's;
``--marker index-bench-gpu`` uses ``<!-- index-bench-gpu:begin -->`` ... instead (the GPU pass's report,
``bench/gpu_pass.sh``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

MARKER = "index-bench"
BEGIN, END = f"<!-- {MARKER}:begin -->", f"<!-- {MARKER}:end -->"
#: Reports whose tables the README shows, and the marker of each.
README_TABLES = {
    "index_bench.json": MARKER,
    "index_bench_cuda.json": "index-bench-gpu",
    "encode_bench.json": "encode-bench",  # `index_bench.py --peer --kinds`: encoding only
}
METRICS = [
    ("encode docs/s", "encode_docs_per_s", "{:.1f}"),
    ("encode precision", "precision", "{}"),  # ours: index.precision resolved; PyLate: float32
    ("build s", "build_s", "{:.1f}"),
    ("tune s", "tune_s", "{:.1f}"),
    ("QPS", "qps", "{:.2f}"),
    ("recall@10 vs exact", "recall@10", "{:.3f}"),
    ("settings", "settings", "{}"),
    ("disk MiB", "disk_mib", "{:.1f}"),
    ("peak RSS MiB", "peak_rss_mib", "{:.0f}"),
]


def _cell(value: Any, fmt: str) -> str:
    return "n/a" if value is None else fmt.format(value)


def _index_label(row: dict[str, Any]) -> str:
    return {"plaid": "plaid (defaults)", "plaid at target": "plaid at target"}.get(row["index"], row["index"])


def render(report: dict[str, Any]) -> str:
    """The environment, the command, the caveat if any, and one table row per (dataset, index, metric)."""
    rows = report["rows"]
    peer = any(row.get("peer") for row in rows)
    lines = []
    if report.get("note"):
        lines += [f"**{report['note']}**", ""]
    env = report["environment"]
    lines += [
        f"Environment: {env['date']}, {env['cpu']}, {env['cores']} cores, {env['ram_gib']} GiB RAM, "
        f"load average {env['load_avg_1m']} at the start, Python {env['python']}, torch {env['torch']}, "
        f"CUDA {'yes (' + env.get('gpu', 'GPU') + ')' if env['cuda'] else 'no'}. "
        f"Command: `{report['command']}`",
        "",
    ]
    header = "| dataset (docs, queries) | index | metric | ours |" + (
        " PyLate 1.6 | ours/PyLate |" if peer else ""
    )
    lines += [header, "|" + "---|" * (header.count("|") - 1)]
    defaults: dict[str, float] = {}
    for row in rows:
        where = f"{row['dataset']} ({row['documents']}, {row['queries']})"
        if row["index"] == "plaid" and row.get("peer"):
            defaults[row["dataset"]] = row["peer"].get("qps")
        for label, key, fmt in METRICS:
            ours, theirs = row["ours"].get(key), row.get("peer", {}).get(key)
            if ours is None and theirs is None:
                continue
            line = f"| {where} | {_index_label(row)} | {label} | {_cell(ours, fmt)} |"
            if peer:
                numeric = isinstance(ours, int | float) and isinstance(theirs, int | float) and theirs
                ratio = f"{ours / theirs:.2f}" if numeric else ""
                if key == "settings" and row.get("peer") and not row["peer"].get("reached", True):
                    theirs = f"{theirs} (its best recall; none reached ours)"
                line += f" {_cell(theirs, fmt)} | {ratio} |"
            lines.append(line)
        if row["index"] == "plaid at target" and defaults.get(row["dataset"]):
            base = defaults[row["dataset"]]
            lines.append(
                f"| {where} | plaid at target | QPS vs PyLate at its defaults | {row['ours']['qps']:.2f} | "
                f"{base:.2f} | {row['ours']['qps'] / base:.2f} |"
            )
    if report.get("index_corpus_rss"):
        items = report["index_corpus_rss"]
        traced = any("peak_rss_after_chunk_mib" in item for item in items)
        precision = items[0].get("precision")  # how the documents were encoded (older records: float32)
        header = (
            f"| index_corpus ({precision or 'fp32'} encoding): documents | tokens | seconds | "
            "RSS after model load MiB | peak RSS MiB |"
        )
        lines += ["", header + (" peak RSS after each chunk MiB |" if traced else "")]
        lines.append("|---|---|---|---|---|" + ("---|" if traced else ""))
        for item in items:
            line = (
                f"| {item['documents']} | {item['tokens']} | {item['seconds']:.0f} | "
                f"{item['rss_after_model_mib']:.0f} | {item['peak_rss_mib']:.0f} |"
            )
            if traced:
                line += " " + ", ".join(f"{v:.0f}" for v in item.get("peak_rss_after_chunk_mib", [])) + " |"
            lines.append(line)
        if len(items) == 2:
            ratio = items[1]["peak_rss_mib"] / items[0]["peak_rss_mib"]
            lines += [
                "",
                f"Peak RSS for {items[1]['documents'] / items[0]['documents']:.0f}x the documents: "
                f"{ratio:.2f}x (target <= 1.1x).",
            ]
    return "\n".join(lines)


def markers(name: str = MARKER) -> tuple[str, str]:
    """The begin and end markers named ``name``."""
    return f"<!-- {name}:begin -->", f"<!-- {name}:end -->"


def replace_in_readme(readme: Path, markdown: str, marker: str = MARKER) -> None:
    """Put ``markdown`` between the markers named ``marker`` of ``readme`` (both must be there, in order)."""
    from pipeline.project.io import replace_between_markers

    replace_between_markers(readme, *markers(marker), markdown)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("report", type=Path, help="a JSON report written by bench/index_bench.py")
    parser.add_argument("--readme", type=Path, default=None, help="replace the tables in this file")
    parser.add_argument(
        "--marker",
        default=MARKER,
        help="the markers' name (index-bench-gpu: the GPU pass; encode-bench: the encoding-only run)",
    )
    args = parser.parse_args()
    try:
        report = json.loads(args.report.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise SystemExit(f"{args.report}: cannot read the report ({error})") from None
    markdown = render(report)
    if args.readme:
        replace_in_readme(args.readme, markdown, args.marker)
    else:
        print(markdown)


if __name__ == "__main__":
    main()
