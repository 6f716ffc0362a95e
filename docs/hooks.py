"""The docs site's MkDocs hooks (``hooks:`` in mkdocs.yml), and the README's generated parts.

A page never carries a copied number: it holds a placeholder that this module replaces while the site builds,
from the committed records, so a page cannot drift from them.

    <!-- render: record index_bench.json -->   a record of bench/records/, as bench.render renders it;
        options: ``kinds=encode,plaid_at_target`` (those rows; ``_`` for a space), ``kinds=rss`` (the
        index_corpus memory table alone), ``rss=no`` (without that table)
    <!-- render: quality -->        the full-test-set quality table: the DVC experiments' scores
                                    (reports/quality-experiments.json) and PyLate's (bench/records/peer/runs),
                                    as ``colbert-pipeline experiments --quality`` prints it
    <!-- render: experiments -->    the sampler experiments (reports/experiments.json), as
                                    ``colbert-pipeline experiments --snapshot`` prints it
    <!-- render: params -->         the params reference: every key of pipeline.project.config.Params with its
                                    type, constraints, default and meaning (the field's description)
    <!-- render: headline -->       the README's headline table

The README is not built by MkDocs, so its headline table and its picture are generated files:
``.venv/bin/python docs/hooks.py readme`` (``make docs-assets``) rewrites the table between
``<!-- headline:begin -->`` and ``<!-- headline:end -->`` and draws ``docs/assets/quality-ndcg.png`` (with
the bars' values in ``quality-ndcg.json``); ``tests/docs/test_docs.py`` fails when either is stale.
"""

from __future__ import annotations

import json
import logging
import re
import shlex
import sys
import types
import typing
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # mkdocs loads this file by path; bench/ is not an installed package
    sys.path.insert(0, str(REPO))

RECORDS = REPO / "bench" / "records"
PEER_RUNS = RECORDS / "peer" / "runs"
QUALITY_SNAPSHOT = REPO / "reports" / "quality-experiments.json"
EXPERIMENTS_SNAPSHOT = REPO / "reports" / "experiments.json"
PARAMS_FILE = REPO / "params.yaml"
PLOT = REPO / "docs" / "assets" / "quality-ndcg.png"
README = REPO / "README.md"
HEADLINE_MARKERS = ("<!-- headline:begin -->", "<!-- headline:end -->")
#: Pages named in mkdocs.yml's nav that another change adds; until the file exists the entry is left out.
OPTIONAL_PAGES = {"stateless.md"}
PLACEHOLDER = re.compile(r"<!--\s*render:\s*(?P<kind>[\w-]+)(?P<arguments>[^>]*?)\s*-->")

log = logging.getLogger("mkdocs.hooks.colbert")


# -- MkDocs events ---------------------------------------------------------------------------------------


def on_config(config: Any) -> Any:
    """Leave out a nav entry of :data:`OPTIONAL_PAGES` whose file is not there yet (any other missing page
    still fails ``--strict``)."""
    docs = Path(config["docs_dir"])

    def keep(entry: Any) -> Any:
        if isinstance(entry, dict):
            kept = {title: keep(value) for title, value in entry.items()}
            return {title: value for title, value in kept.items() if value not in (None, [])} or None
        if isinstance(entry, list):
            return [item for item in (keep(value) for value in entry) if item is not None]
        if isinstance(entry, str) and entry in OPTIONAL_PAGES and not (docs / entry).is_file():
            log.info("docs/%s is not there yet: its nav entry is left out", entry)
            return None
        return entry

    if config.get("nav"):
        config["nav"] = keep(config["nav"])
    return config


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    """Replace every ``<!-- render: ... -->`` placeholder of a page by what it names."""
    return render_placeholders(markdown, where=page.file.src_uri)


# -- placeholders ----------------------------------------------------------------------------------------


def render_placeholders(markdown: str, where: str = "page") -> str:
    """``markdown`` with each placeholder replaced; an unknown one is an error naming the page."""

    def replace(match: re.Match[str]) -> str:
        kind, arguments = match["kind"], shlex.split(match["arguments"])
        renderer = RENDERERS.get(kind)
        if renderer is None:
            raise ValueError(f"{where}: unknown placeholder {match[0]!r} (known: {sorted(RENDERERS)})")
        try:
            return renderer(*arguments)
        except (OSError, KeyError, ValueError, TypeError) as error:
            raise ValueError(f"{where}: {match[0]!r} cannot be rendered: {error}") from error

    return PLACEHOLDER.sub(replace, markdown)


def render_record(name: str, *options: str) -> str:
    """A committed record's tables (:func:`bench.render.render`), optionally some of its rows only."""
    from bench import render

    record = json.loads((RECORDS / name).read_text(encoding="utf-8"))
    settings: dict[str, Any] = {}
    for option in options:
        key, _, value = option.partition("=")
        if key == "kinds":
            kinds = [kind.replace("_", " ") for kind in value.split(",")]
            settings["kinds"] = [] if kinds == ["rss"] else kinds
        elif key == "rss":
            settings["rss"] = value not in {"no", "false", "0"}
        else:
            raise ValueError(f"unknown option {option!r} (kinds=..., rss=no)")
    return render.render(record, **settings)


def quality_records() -> list[dict[str, Any]]:
    """The quality table's records: the experiments' scores, then PyLate's, in report order."""
    from pipeline.ops import experiments
    from pipeline.project import report

    records = experiments.quality_records(experiments.load_snapshot(QUALITY_SNAPSHOT))
    return report.in_report_order(records + report.load_results(PEER_RUNS))


def render_quality() -> str:
    """What ``colbert-pipeline experiments --snapshot reports/quality-experiments.json --quality --results
    bench/records/peer/runs`` prints."""
    from pipeline.project import report

    return report.markdown_table(quality_records())


def render_experiments() -> str:
    """What ``colbert-pipeline experiments --snapshot reports/experiments.json`` prints."""
    from pipeline.ops import experiments
    from pipeline.project.params_file import load_params

    rows = experiments.load_snapshot(EXPERIMENTS_SNAPSHOT)
    metric = f"eval.{load_params(PARAMS_FILE).register.metric}"
    return experiments.experiment_table(rows, experiments.default_metrics(rows, metric))


# -- the params reference --------------------------------------------------------------------------------


def _type_name(annotation: Any) -> str:
    origin, arguments = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Literal:
        return "one of " + ", ".join(f"`{json.dumps(value)}`" for value in arguments)
    if origin in (typing.Union, types.UnionType):
        named = [_type_name(argument) for argument in arguments if argument is not type(None)]
        return " or ".join(named) + (" or `null`" if type(None) in arguments else "")
    if origin is list:
        return f"list of ({_type_name(arguments[0])})"
    return getattr(annotation, "__name__", str(annotation))


def _constraints(field: Any) -> str:
    words = []
    for item in field.metadata:
        for name, symbol in (("ge", "≥"), ("gt", ">"), ("le", "≤"), ("lt", "<")):
            if getattr(item, name, None) is not None:
                words.append(f"{symbol} {getattr(item, name)}")
        if getattr(item, "min_length", None) is not None:
            words.append(f"at least {item.min_length} long")
        if getattr(item, "pattern", None) is not None:
            words.append(f"matching `{item.pattern}`")
    return ", ".join(words)


def _default(field: Any) -> str:
    value = field.get_default(call_default_factory=True)
    text = json.dumps(value) if isinstance(value, list | bool) or value is None else str(value)
    return f"`{text}`"


def params_keys(model: Any = None, prefix: str = "") -> list[tuple[str, Any]]:
    """Every leaf key of the params schema, dotted (``prepare.beir.folder``), with its pydantic field."""
    from pipeline.project.config import Params, Section

    model = model or Params
    keys: list[tuple[str, Any]] = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, Section):
            keys += params_keys(annotation, f"{prefix}{name}.")
        else:
            keys.append((f"{prefix}{name}", field))
    return keys


def render_params() -> str:
    """One section per params.yaml section (and sub-section), one table row per key."""
    from pipeline.project.config import Params, Section

    def section(model: type, dotted: str, level: int) -> list[str]:
        doc = " ".join((model.__doc__ or "").split())
        lines = [
            f"{'#' * level} `{dotted}`",
            "",
            doc,
            "",
            "| key | type | default | meaning |",
            "|---|---|---|---|",
        ]
        nested = []
        for name, field in model.model_fields.items():
            key = f"{dotted}.{name}"
            if isinstance(field.annotation, type) and issubclass(field.annotation, Section):
                nested.append((field.annotation, key))
                lines.append(f"| `{name}` | section | | see [`{key}`](#{key.replace('.', '')}) |")
                continue
            kind = _type_name(field.annotation)
            limits = _constraints(field)
            meaning = (field.description or "").replace("<", "&lt;")
            kind = (kind + (f" ({limits})" if limits else "")).replace("|", "\\|")
            lines.append(f"| `{name}` | {kind} | {_default(field)} | {meaning.replace('|', '/')} |")
        lines.append("")
        for child, key in nested:
            lines += section(child, key, level + 1)
        return lines

    out: list[str] = []
    for name, field in Params.model_fields.items():
        out += section(field.annotation, name, 2)
    return "\n".join(out).rstrip() + "\n"


# -- the README's headline table and picture -------------------------------------------------------------


def _record(name: str) -> dict[str, Any]:
    return json.loads((RECORDS / name).read_text(encoding="utf-8"))


def render_headline() -> str:
    """A small table of the headline results (SciFact unless named), each linking to its docs page."""
    scores = {
        (r["dataset"], r["system"]): r["metrics"]["ndcg@10"]
        for r in quality_records()
        if r["retrieval"] == "plaid"
    }
    lines = [
        "| result | this pipeline | PyLate 1.6 | ours vs PyLate | more |",
        "|---|---|---|---|---|",
    ]
    for dataset, label in (
        ("scifact", "SciFact"),
        ("nfcorpus", "NFCorpus"),
        ("arguana", "ArguAna (zero-shot)"),
    ):
        ours, theirs = scores[(dataset, "colbert-tuned")], scores[(dataset, "pylate")]
        lines.append(
            f"| nDCG@10 on {label}, both fine-tuned alike, through PLAID | {ours:.4f} | {theirs:.4f} | "
            f"{ours - theirs:+.4f} | [quality](docs/benchmarks.md#retrieval-quality) |"
        )
    # Speed: like for like first (same precision, same search settings, same run), then each library at
    # its defaults; both from the one same-run record of what a library user gets.
    library = _record("library_defaults_scifact.json")
    alike, ours, peer = (library["summary"][row] for row in ("ours-like-pylate", "ours", "pylate"))
    link = "[library](docs/benchmarks.md#the-library-at-its-defaults-same-run)"
    perf = [
        (
            "encoding docs/s, CPU, like for like (fp32 both)",
            alike["encode_docs_per_s"],
            peer["encode_docs_per_s"],
            "{:.1f}",
            link,
        ),
        (
            f"encoding docs/s, CPU, each at its defaults ({ours['precision']} / {peer['precision']})",
            ours["encode_docs_per_s"],
            peer["encode_docs_per_s"],
            "{:.1f}",
            link,
        ),
        (
            f"search QPS, CPU, like for like (PLAID 8 / 8,192 both; recall@10 {alike['recall@10']:.3f} / "
            f"{peer['recall@10']:.3f})",
            alike["qps"],
            peer["qps"],
            "{:.2f}",
            link,
        ),
        (
            f"search QPS, CPU, each at its defaults (ours: {ours['search'].split(' (batch')[0]}; recall@10 "
            f"{ours['recall@10']:.3f} / {peer['recall@10']:.3f})",
            ours["qps"],
            peer["qps"],
            "{:.2f}",
            link,
        ),
        ("PLAID build seconds, CPU, like for like", alike["build_s"], peer["build_s"], "{:.1f}", link),
        (
            "PLAID build seconds, CPU, each at its defaults (ours: half the centroids)",
            ours["build_s"],
            peer["build_s"],
            "{:.1f}",
            link,
        ),
    ]
    train_record = _record("train_throughput.json")
    train = train_record["samples_per_s_median"]["scifact"]
    perf.append(
        (
            "training samples/s, CPU, the train stage against PyLate, fp32 both",
            train["stage"],
            train["peer"],
            "{:.2f}",
            "[training](docs/benchmarks.md#like-for-like)",
        )
    )
    for label, ours, theirs, fmt, link in perf:
        lines.append(
            f"| {label} | {fmt.format(ours)} | {fmt.format(theirs)} | {ours / theirs:.2f}x | {link} |"
        )
    env = library["environment"]
    lines += [
        "",
        f"Quality: whole BEIR test sets, one seed each. Speed: SciFact, {library['documents']:,} "
        f"documents and {library['queries']} test queries, both libraries in one run ({library['rounds']} "
        f"round) on a CPU ({env['cores']} cores, {env.get('cpu_model', env['cpu'])}, Python "
        f"{env['python']}, torch {env['torch']}, {env['date'][:10]}); training: SciFact abstracts, batch 16 "
        f"(measured {train_record['environment']['date'][:10]}). The GPU's figures are in the docs.",
    ]
    return "\n".join(lines)


def quality_plot_rows() -> list[dict[str, Any]]:
    """The picture's bars: each system's nDCG@10 per dataset, through PLAID where it has an index."""
    from pipeline.project import report

    return report._headline(quality_records())


def write_readme_parts() -> None:
    """Rewrite the README's headline table and draw the quality plot (with its values beside it)."""
    from pipeline.project import report
    from pipeline.project.io import atomic_write_json, replace_between_markers

    replace_between_markers(README, *HEADLINE_MARKERS, render_headline())
    rows = quality_plot_rows()
    report.plot_ndcg(rows, PLOT)
    atomic_write_json(PLOT.with_suffix(".json"), rows)


RENDERERS = {
    "record": render_record,
    "quality": render_quality,
    "experiments": render_experiments,
    "params": render_params,
    "headline": render_headline,
}


if __name__ == "__main__":
    if sys.argv[1:] != ["readme"]:
        raise SystemExit(
            "usage: python docs/hooks.py readme   (rewrites README's headline table and the plot)"
        )
    write_readme_parts()
    print(f"wrote {README.relative_to(REPO)} (headline table) and {PLOT.relative_to(REPO)}")
