"""Render benchmark records (``bench/records/*.json``) as Markdown tables.

Each record's kind is told by its shape: an index benchmark (``python -m bench.index``), an encoding
precision comparison (``python -m bench.index.precision``), k-means build variants
(``python -m bench.index.build``), trainer throughput (``python -m bench.train --peer``), the served
champion under load (``python -m bench.serve``), index updates (``python -m bench.index.updates``) or the
library at its defaults (``python -m bench.index.library``).
Every table comes with the environment the record names (date, cores, Python, torch, the GPU where there
was one).

The docs site renders its benchmark tables with :func:`render` at build time (``docs/hooks.py``, a
``<!-- render: record NAME -->`` placeholder per table), so a page's numbers are always the committed
record's.

Usage:
    .venv/bin/python -m bench.render                                   # every record, or: make bench-render
    .venv/bin/python -m bench.render bench/records/index_bench.json    # one
    .venv/bin/python -m bench.render bench/records/index_bench.json --readme FILE --marker NAME

``--readme`` replaces what lies between ``<!-- NAME:begin -->`` and ``<!-- NAME:end -->`` in that file
(atomically; ``--marker`` defaults to ``index-bench``)."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

from bench.common import RECORDS
from bench.index.growth_report import render_growth
from bench.index.library import render_library
from bench.index.sweep import BENCHMARK as SWEEP
from bench.index.sweep import render_sweep
from bench.limit import BENCHMARK as LIMIT
from bench.limit import render_limit
from bench.setup_notes import NOT_RECORDED, setup_note
from bench.shards_report import render_shards
from bench.train.precision_seeds import BENCHMARK as PRECISION_SEEDS
from bench.train.precision_seeds import render_precision_seeds

MARKER = "index-bench"
BEGIN, END = f"<!-- {MARKER}:begin -->", f"<!-- {MARKER}:end -->"
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


def environment_line(report: dict[str, Any]) -> str:
    """Where and how a record was measured, from its ``environment`` (and its command, when it has one).

    Index records name the load at the start, trainer records the load at the end and torch's threads;
    a record with a GPU names it.
    """
    env = report.get("environment") or {}
    parts = [str(env.get("date", "date not recorded")), str(env.get("cpu_model") or env.get("cpu", "?"))]
    if "cpu_native_bf16" in env:
        parts.append(f"native bfloat16 {'yes' if env['cpu_native_bf16'] else 'no'}")
    parts += [f"{env['cores']} cores"] if "cores" in env else []
    parts += [f"{env['ram_gib']} GiB RAM"] if "ram_gib" in env else []
    if "load_avg_1m" in env:
        parts.append(f"load average {env['load_avg_1m']} at the start")
    elif "load_avg_1m_at_end" in env:
        parts.append(f"load average {env['load_avg_1m_at_end']} at the end")
    parts += [f"Python {env['python']}"] if "python" in env else []
    parts += [f"torch {env['torch']}"] if "torch" in env else []
    parts += [f"{env['torch_threads']} torch threads"] if "torch_threads" in env else []
    cuda = env.get("cuda", "gpu" in env)
    parts.append(f"CUDA {'yes (' + env.get('gpu', 'GPU') + ')' if cuda else 'no'}")
    line = "Environment: " + ", ".join(parts) + "."
    return line + (f" Command: `{report['command']}`" if report.get("command") else "")


def _index_rows(row: dict[str, Any], peer: bool, unrecorded: list[str]) -> list[str]:
    """One table line per metric either system measured in ``row``; a ratio carries its setup note."""
    where = f"{row['dataset']} ({row['documents']}, {row['queries']})"
    note, recorded = setup_note(row, f"{where} {row['index']}") if peer and row.get("peer") else ("", True)
    if not recorded:
        unrecorded.append(f"{where} {_index_label(row)}")
    lines = []
    for label, key, fmt in METRICS:
        ours, theirs = row["ours"].get(key), row.get("peer", {}).get(key)
        if ours is None and theirs is None:
            continue
        line = f"| {where} | {_index_label(row)} | {label} | {_cell(ours, fmt)} |"
        if peer:
            numeric = isinstance(ours, int | float) and isinstance(theirs, int | float) and theirs
            ratio = f"{ours / theirs:.2f}" + (f" ({note})" if note else "") if numeric else ""
            if key == "settings" and row.get("peer") and not row["peer"].get("reached", True):
                theirs = f"{theirs} (its best recall; none reached ours)"
            line += f" {_cell(theirs, fmt)} | {ratio} |"
        lines.append(line)
    return lines


def render_index(report: dict[str, Any], kinds: Collection[str] | None = None, rss: bool = True) -> str:
    """The environment, the command, the caveat if any, and one table row per (dataset, index, metric).

    ``kinds`` keeps the rows of those ``index`` values only (``encode``, ``exact MaxSim``, ``plaid``,
    ``plaid at target``; a ratio to PyLate's defaults still comes from the record's ``plaid`` rows);
    ``rss=False`` leaves out the ``index_corpus`` memory table, and ``kinds=()`` shows that table alone.
    """
    rows = report["rows"]
    peer = any(row.get("peer") for row in rows)
    lines = [f"**{report['note']}**", ""] if report.get("note") else []
    lines += [environment_line(report), ""]
    if kinds is not None and not kinds:
        return "\n".join([*lines, *_rss_rows(report.get("index_corpus_rss") or [])])
    header = "| dataset (docs, queries) | index | metric | ours |" + (
        " PyLate 1.6 | ours/PyLate |" if peer else ""
    )
    lines += [header, "|" + "---|" * (header.count("|") - 1)]
    defaults: dict[str, dict[str, Any]] = {}
    unrecorded: list[str] = []
    for row in rows:
        if row["index"] == "plaid" and row.get("peer"):
            defaults[row["dataset"]] = row
        if kinds is not None and row["index"] not in kinds:
            continue
        lines += _index_rows(row, peer, unrecorded)
        if row["index"] == "plaid at target" and defaults.get(row["dataset"], {}).get("peer", {}).get("qps"):
            base = defaults[row["dataset"]]
            note, _ = setup_note({**row, "peer": base["peer"]}, f"{row['dataset']} plaid at target")
            lines.append(
                f"| {row['dataset']} ({row['documents']}, {row['queries']}) | plaid at target | "
                f"QPS vs PyLate at its defaults | {row['ours']['qps']:.2f} | {base['peer']['qps']:.2f} | "
                f"{row['ours']['qps'] / base['peer']['qps']:.2f}{f' ({note})' if note else ''} |"
            )
    if unrecorded:
        lines += ["", NOT_RECORDED.format(rows="; ".join(unrecorded))]
    if rss and report.get("index_corpus_rss"):
        lines += ["", *_rss_rows(report["index_corpus_rss"])]
    return "\n".join(lines)


def _rss_rows(items: list[dict[str, Any]]) -> list[str]:
    """``index_corpus``'s peak RSS at each corpus size, and the ratio between the two sizes."""
    traced = any("peak_rss_after_chunk_mib" in item for item in items)
    precision = items[0].get("precision")  # how the documents were encoded (older records: float32)
    header = (
        f"| index_corpus ({precision or 'fp32'} encoding): documents | tokens | seconds | "
        "RSS after model load MiB | peak RSS MiB |"
    )
    lines = [header + (" peak RSS after each chunk MiB |" if traced else "")]
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
    return lines


def render_precision(report: dict[str, Any]) -> str:
    """An encoding-precision record: speed and nDCG@10 of each encoder against the first, same run."""
    lines = [
        f"{report['dataset']}: {report['documents']} documents, {report['queries']} test queries; "
        f"device: {report.get('device', 'cpu')}",
        "",
        environment_line(report),
        "",
        "| encoder | docs/s | vs float32 | nDCG@10 | vs float32 | recall@100 "
        "| nDCG@10 with float32 queries |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in report["rows"]:
        mixed = row.get("float32_queries", {}).get("ndcg@10")
        lines.append(
            f"| {row['variant']} | {row['encode_docs_per_s']:.1f} | {row['speed_ratio']:.2f}x "
            f"| {row['own_queries']['ndcg@10']:.4f} | {row['ndcg@10_delta']:+.4f} "
            f"| {row['own_queries']['recall@100']:.4f} | {'' if mixed is None else f'{mixed:.4f}'} |"
        )
    return "\n".join(lines)


def render_build(report: dict[str, Any]) -> str:
    """A PLAID build record: each k-means variant's build seconds and recall@10 (and tuned QPS, if any)."""
    lines = [f"**{report['note']}**", ""] if report.get("note") else []
    lines += [
        f"{report['dataset']}: {report['documents']} documents, {report['tokens']} tokens, "
        f"{report['queries']} queries",
        "",
        environment_line(report),
        "",
        "| variant | build s | recall@10 (n_full_scores 1024) | tuned | tuned QPS | tuned recall@10 |",
        "|---|---|---|---|---|---|",
    ]
    for name, row in report["variants"].items():
        tuned = row.get("tuned", {})
        qps, recall = tuned.get("qps"), tuned.get("recall@10")
        lines.append(
            f"| {name} | {row['build_s']:.1f} | {row['recall@10']:.3f} | {tuned.get('description', '')} "
            f"| {_cell(qps, '{:.1f}') if tuned else ''} | {_cell(recall, '{:.3f}') if tuned else ''} |"
        )
    return "\n".join(lines)


def render_update_time(report: dict[str, Any]) -> str:
    """An in-place update against a rebuild of the same corpus, through the index stage
    (``python -m bench.index.updates --time``)."""
    change = report["change"]
    lines = [
        f"{report['dataset']}: {report['documents']} documents (the first {report['words']} words of each), "
        f"then {change['added']} added, {change['removed']} removed and {change['changed']} changed",
        "",
        environment_line(report),
        "",
        "| run | mode | documents | encoded | encode + index write s | stage wall s |",
        "|---|---|---|---|---|---|",
    ]
    labels = {"build": "first build", "update": "the change, in place", "rebuild": "the change, rebuilt"}
    for name, run in report["runs"].items():
        lines.append(
            f"| {labels.get(name, name)} | {run['mode']} | {run['documents']} | {run['encoded']} "
            f"| {run['build_seconds']:.1f} | {run['wall_seconds']:.1f} |"
        )
    lines += [
        "",
        f"The update took {report['update_over_rebuild_build']:.2f} of the rebuild's encode + index write "
        f"time, and {report['update_over_rebuild_wall']:.2f} of its stage wall time (process start, model "
        "load, search tuning or re-check, and the latency probe included).",
    ]
    return "\n".join(lines)


def render_update_recall(report: dict[str, Any]) -> str:
    """Recall@10 of an index updated step by step against a fresh build's
    (``python -m bench.index.updates --recall``)."""
    settings = list(report["steps"][0]["updated"])
    lines = [
        f"{report['dataset']}: {report['documents']} documents (the first {report['words']} words of each), "
        f"{report['queries']} test queries; recall@10 against exact MaxSim over the current corpus",
        "",
        environment_line(report),
        "",
        "| step | corpus replaced | update s | "
        + " | ".join(f"{name}: updated | {name}: fresh build" for name in settings)
        + " |",
        "|---|---|---|" + "---|---|" * len(settings),
    ]
    for row in report["steps"]:
        cells = [f"{row['updated'][n]:.3f} | {row['fresh'][n]:.3f}" for n in settings]
        lines.append(
            f"| {row['step']} | {row['replaced']:.0%} | {_cell(row['update_seconds'], '{:.1f}')} | "
            + " | ".join(cells)
            + " |"
        )
    worst = report["worst_updated_minus_fresh"] + 0.0  # + 0.0: no "-0.000"
    lines += ["", f"Worst step and setting, updated minus fresh build: {worst:+.3f}."]
    return "\n".join(lines)


def render_trainers(report: dict[str, Any]) -> str:
    """A trainer-throughput record: the median samples/s of the train stage (and PyLate) per data set; each
    ratio's runs' setups checked (:func:`setup_note`) under the record's comparison label."""
    peer = any("peer" in row for row in report["samples_per_s_median"].values())
    settings = report.get("train") or {}
    # Each at its defaults: each side's own precision (the record's "precision" by system).
    precision = report.get("precision")
    if isinstance(precision, dict):
        settings = {**settings, "precision": f"{precision['stage']} (stage), {precision['peer']} (PyLate)"}
    shown = ", ".join(
        f"{key} {settings[key]}" for key in ("device", "precision", "batch_size") if key in settings
    )
    lines = [environment_line(report), ""] + ([f"Settings: {shown}.", ""] if shown else [])
    lines.append(
        f"| documents | stage samples/s |{' PyLate 1.6 samples/s | stage / PyLate |' if peer else ''}"
    )
    lines.append(f"|---|---|{'---|---|' if peer else ''}")
    unrecorded = []
    for name, row in report["samples_per_s_median"].items():
        extra = ""
        if peer:
            runs = {r["system"]: r.get("setup") for r in report.get("runs", []) if r.get("data") == name}
            note, recorded = setup_note(report, f"training on {name}", runs.get("stage"), runs.get("peer"))
            unrecorded += [] if recorded else [name]
            extra = f" {row['peer']:.2f} | {row['stage_vs_peer']:.2f}{f' ({note})' if note else ''} |"
        lines.append(f"| {name} | {row['stage']:.2f} |{extra}")
    if unrecorded:
        lines += ["", NOT_RECORDED.format(rows=", ".join(unrecorded))]
    return "\n".join(lines)


#: The seeds' training code against PyLate (issue 37): the least ratio each data set must reach.
SEEDS_REQUIRED = {"scifact": 1.0, "short": 1.2}


def render_seeds(report: dict[str, Any]) -> str:
    """The seeds' training code (``python -m bench.train --seeds``): its median samples/s against
    ``pipeline`` and against PyLate 1.6 per data set, each run's figure, and the ratio against what is
    required (:data:`SEEDS_REQUIRED`)."""
    settings = report.get("train") or {}
    timed = report["runs"][0]["timed_steps"]
    lines = [
        environment_line(report),
        "",
        f"The same script (PyLate's documented training example) against each library, fp32, batch "
        f"{settings.get('batch_size')}, seed {settings.get('seed')}, {timed} timed steps after the warm-up, "
        "runs interleaved.",
        "",
        "| documents | pipeline samples/s | PyLate 1.6 samples/s | pipeline / PyLate | required | "
        "runs (pipeline; PyLate) |",
        "|---|---|---|---|---|---|",
    ]
    for name, row in report["samples_per_s_median"].items():
        runs = {
            system: ", ".join(
                f"{r['samples_per_s']:.2f}"
                for r in report["runs"]
                if r["data"] == name and r["system"] == system
            )
            for system in ("pipeline", "pylate")
        }
        required = SEEDS_REQUIRED.get(name)
        lines.append(
            f"| {name} | {row['pipeline']:.2f} | {row['pylate']:.2f} | {row['pipeline_vs_pylate']:.2f} | "
            f"{_cell(required, '>= {:.1f}')} | {runs['pipeline']}; {runs['pylate']} |"
        )
    return "\n".join(lines)


def _settings_text(settings: dict[str, Any] | None) -> str:
    if not settings:
        return "n/a"
    if settings.get("mode") == "exact":
        return f"exact MaxSim, batch {settings.get('batch_size')}"
    return ", ".join(f"{key}={value}" for key, value in settings.items())


def render_serve(report: dict[str, Any]) -> str:
    """A serving load record (``python -m bench.serve``): latency per concurrency, RSS, the time split."""
    champion, settings = report["champion"], report["settings"]
    lines = [
        environment_line(report),
        "",
        f"Champion: {champion['corpus']}, {champion['model']}; search settings the index stage chose: "
        f"{_settings_text(champion.get('search_settings'))}. k={settings['k']}; each level at most "
        f"{settings['requests_per_level']} requests and {settings['seconds_per_level']:.0f} s, "
        "one query per request, loopback, the client on the same cores.",
        "",
        "| batching | concurrency | requests | errors | req/s | p50 ms | p95 ms | p99 ms | mean batch |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in report["runs"]:
        cells = [_cell(row.get(key), "{:.1f}") for key in ("rps", "p50_ms", "p95_ms", "p99_ms")]
        lines.append(
            f"| {'on' if row['batching'] else 'off'} | {row['concurrency']} | {row['requests']} | "
            f"{row['errors']} | {' | '.join(cells)} | {row['mean_batch']:.2f} |"
        )
    rss = report.get("rss") or {}
    if rss:
        reached = "" if rss.get("reached_target") else " (the time bound came first)"
        samples = ", ".join(f"{n}: {mib:.0f}" for n, mib in rss["samples"])
        lines += [
            "",
            f"Server RSS (batching on): {rss['before_mib']:.0f} MiB before the first request, "
            f"{rss['after_mib']:.0f} MiB after {rss['requests']} requests{reached}, {rss['errors']} errors "
            f"(requests: MiB after them: {samples}).",
        ]
    split = report.get("breakdown") or {}
    if split:
        lines += [
            "",
            "Where a query's time goes in the served model (in process, no server; ms per query, the fastest "
            f"of {split.get('repeats', 'n')} calls, its parts timed inside it; encoding in "
            f"{split.get('precision')}):",
            "",
            "| queries per call | encode | search | rest of the pyfunc | whole pyfunc | JSON answer "
            "| whole pyfunc, median call |",
            "|---|---|---|---|---|---|---|",
        ]
        for label, name in (("single", "1"), ("batch16", "16")):
            row = split[label]
            keys = ("encode_ms", "search_ms", "other_ms", "pyfunc_ms", "json_ms", "median_pyfunc_ms")
            lines.append(f"| {name} | {' | '.join(_cell(row.get(key), '{:.2f}') for key in keys)} |")
    fit = split.get("search_fit")
    if fit:
        times = fit["ms_per_query"]
        lines += [
            "",
            f"Search settings the server fitted at warm-up (ms per query, tuned / exact MaxSim): one query "
            f"{times['single_tuned']:.0f} / {times['single_exact']:.0f}, so {fit['single']}; "
            f"a batch of 16 {times.get('batch_tuned', 0):.0f} / {times.get('batch_exact', 0):.0f}, "
            f"so {fit['batch']}.",
        ]
    decision = report.get("batching") or {}
    if decision.get("lowers_p95") is not None:
        p95 = decision["p95_ms_at_max_concurrency"]
        verdict = "lowers" if decision["lowers_p95"] else "does not lower"
        lines += [
            "",
            f"Batching {verdict} p95 at the highest concurrency: "
            f"{p95['on']:.0f} ms on, {p95['off']:.0f} ms off.",
        ]
    return "\n".join(lines)


#: How to tell a record's kind (a key only it has), and its renderer.
RENDERERS: list[tuple[Callable[[dict[str, Any]], bool], Callable[[dict[str, Any]], str]]] = [
    (lambda r: r.get("benchmark") == "serve_load", render_serve),
    (lambda r: r.get("benchmark") == "index_growth", render_growth),
    (lambda r: r.get("benchmark") == SWEEP, render_sweep),
    (lambda r: r.get("benchmark") == LIMIT, render_limit),
    (lambda r: r.get("benchmark") == PRECISION_SEEDS, render_precision_seeds),
    (lambda r: str(r.get("benchmark", "")).startswith("library defaults"), render_library),
    (lambda r: isinstance(r.get("shards"), dict), render_shards),
    (lambda r: r.get("benchmark") == "index_update_time", render_update_time),
    (lambda r: r.get("benchmark") == "index_update_recall", render_update_recall),
    (lambda r: r.get("benchmark") == "train_seeds", render_seeds),
    (lambda r: "samples_per_s_median" in r, render_trainers),
    (lambda r: isinstance(r.get("variants"), dict), render_build),
    (lambda r: any("variant" in row for row in r.get("rows", [])), render_precision),
    (lambda r: any("index" in row for row in r.get("rows", [])), render_index),
]


def render(report: dict[str, Any], **options: Any) -> str:
    """A record as Markdown, by its kind (see :data:`RENDERERS`); ``options`` go to an index record's
    renderer (:func:`render_index`: ``kinds``, ``rss``)."""
    for recognizes, renderer in RENDERERS:
        if recognizes(report):
            return renderer(report, **options) if options else renderer(report)
    raise ValueError("not a benchmark record this module renders")


def markers(name: str = MARKER) -> tuple[str, str]:
    """The begin and end markers named ``name``."""
    return f"<!-- {name}:begin -->", f"<!-- {name}:end -->"


def replace_in_readme(readme: Path, markdown: str, marker: str = MARKER) -> None:
    """Put ``markdown`` between the markers named ``marker`` of ``readme`` (both must be there, in order)."""
    from pipeline.project.io import replace_between_markers

    replace_between_markers(readme, *markers(marker), markdown)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("records", nargs="*", type=Path, help="JSON records (default: bench/records/*.json)")
    parser.add_argument("--readme", type=Path, default=None, help="replace the tables in this file")
    parser.add_argument(
        "--marker",
        default=MARKER,
        help="the markers' name (default: index-bench)",
    )
    args = parser.parse_args()
    if args.readme and len(args.records) != 1:
        parser.error("--readme takes one record")
    from pipeline.project.io import read_json

    for path in args.records or sorted(RECORDS.glob("*.json")):
        try:
            record = read_json(path)
        except (OSError, ValueError) as error:
            raise SystemExit(str(error)) from None
        try:
            markdown = render(record)
        except (ValueError, KeyError) as error:
            if args.records:
                raise SystemExit(f"{path}: {error}") from None
            continue  # a record of another kind (e.g. batch dependence alone)
        if args.readme:
            replace_in_readme(args.readme, markdown, args.marker)
        else:
            print(
                f"## {path.name}\n\n{markdown}\n" if not args.records or len(args.records) > 1 else markdown
            )


if __name__ == "__main__":
    main()
