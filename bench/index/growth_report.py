"""The growth record (``python -m bench.index.growth``) as Markdown: per size, each library's PLAID at its
defaults beside brute-force exact MaxSim; ours/PyLate ratios (through :func:`bench.common.check_setups`);
single-query latency over fp32 brute force's (the goal: at most 0.2x at recall@10 >= 0.95); each metric's
growth exponent."""

from __future__ import annotations

from typing import Any

from bench.common import check_setups, differences_text

SIDES = {"ours": "ours (PLAID defaults)", "peer": "PyLate 1.6 (PLAID defaults)"}
#: The latency goal (CLARIFICATIONS, issue 37): one query through the default index, at recall@10 >= 0.95,
#: in at most this fraction of fp32 brute force's time.
LATENCY_GOAL = 0.2
RECALL_GOAL = 0.95


def _f(value: Any, fmt: str) -> str:
    return "" if value is None else fmt.format(value)


def _size_lines(size: dict[str, Any], sides: list[str]) -> list[str]:
    where = f"| {size['documents']:,} ({size['real_documents']:,} real) | {size['tokens']:,} |"
    brute = size["brute"]["fp32"]["p50_ms"]
    lines = []
    for side in sides:
        row = size.get(side) or {}
        single = row.get("single", {})
        over = single.get("p50_ms") / brute if single.get("p50_ms") else None
        cells = [
            _f(row.get("build_s"), "{:.1f}"),
            _f(row.get("disk_mib"), "{:.1f}"),
            _f(row.get("build_peak_rss_mib"), "{:.0f}"),
            _f(row.get("search_peak_rss_mib"), "{:.0f}"),
            _f(row.get("qps"), "{:.2f}"),
            _f(single.get("p50_ms"), "{:.0f}"),
            _f(single.get("p95_ms"), "{:.0f}"),
            _f(row.get("recall@10"), "{:.3f}"),
            _f(over, "{:.2f}"),
        ]
        lines.append(f"{where} {SIDES[side]} | {' | '.join(cells)} |")
    for precision in ("fp32", "bf16"):
        b = size["brute"][precision]
        recall = b.get("recall@10", 1.0)  # fp32 is the reference
        cells = [
            "",
            "",
            "",
            "",
            f"{b['qps']:.2f}",
            f"{b['p50_ms']:.0f}",
            f"{b['p95_ms']:.0f}",
            f"{recall:.3f}",
        ]
        lines.append(
            f"{where} brute-force MaxSim {precision} | {' | '.join(cells)} | {b['p50_ms'] / brute:.2f} |"
        )
    return lines


def _ratio_lines(report: dict[str, Any]) -> list[str]:
    """ours/PyLate per size, each pair of setups checked against the record's comparison label first."""
    comparison, declared = report.get("comparison", "like for like"), report.get("declared", ())
    lines = [
        "| documents | build s | QPS (batched) | one query p50 | peak RSS building | declared differences |"
    ]
    lines.append("|---|---|---|---|---|---|")
    for size in report["sizes"]:
        ours, peer = size.get("ours"), size.get("peer")
        if not (ours and peer):
            continue
        what = f"index_growth, {size['documents']} documents"
        differing = check_setups(ours["setup"], peer["setup"], comparison, declared, what=what)
        ratios = [
            ours["build_s"] / peer["build_s"],
            ours["qps"] / peer["qps"],
            ours["single"]["p50_ms"] / peer["single"]["p50_ms"],
            ours["build_peak_rss_mib"] / peer["build_peak_rss_mib"],
        ]
        cells = " | ".join(f"{r:.2f}" for r in ratios)
        lines.append(f"| {size['documents']:,} | {cells} | {differences_text(differing) or 'none'} |")
    return lines if len(lines) > 2 else []


def _exponent_lines(report: dict[str, Any]) -> list[str]:
    fitted = report.get("exponents") or {}
    sides = [s for s in fitted if fitted[s] and any(v is not None for v in fitted[s].values())]
    if not sides:
        return []
    names = {**SIDES, "brute fp32": "brute force fp32", "brute bf16": "brute force bf16"}
    metrics = list(dict.fromkeys(m for side in sides for m in fitted[side]))
    lines = ["| metric | " + " | ".join(names.get(s, s) for s in sides) + " |"]
    lines.append("|---|" + "---|" * len(sides))
    for metric in metrics:
        cells = [_f(fitted[side].get(metric), "{:.2f}") for side in sides]
        lines.append(f"| {metric} | {' | '.join(cells)} |")
    return lines


def _goal_lines(report: dict[str, Any]) -> list[str]:
    lines = []
    for size in report["sizes"]:
        brute = size["brute"]["fp32"]["p50_ms"]
        for side in ("ours", "peer"):
            single = (size.get(side) or {}).get("single")
            if not single:
                continue
            ratio = single["p50_ms"] / brute
            met = ratio <= LATENCY_GOAL and single["recall@10"] >= RECALL_GOAL
            lines.append(
                f"- {size['documents']:,} documents, {SIDES[side]}: one query p50 {single['p50_ms']:.0f} ms, "
                f"{ratio:.2f} times fp32 brute force's ({brute:.0f} ms), at recall@10 "
                f"{single['recall@10']:.3f}: {'meets' if met else 'misses'} the goal (at most {LATENCY_GOAL} "
                f"times at recall@10 >= {RECALL_GOAL})."
            )
    return lines


def render_growth(report: dict[str, Any]) -> str:
    """The whole growth record: sizes table, ratios, the latency goal, exponents."""
    from bench.render import environment_line

    sides = [s for s in SIDES if any(size.get(s) for size in report["sizes"])]
    documents = report["documents"]
    lines = [f"**{report['note']}**", ""] if report.get("note") else []
    lines += [environment_line(report), ""]
    lines += [
        f"Documents: {documents['real']}; {documents['synthetic']}. {report['queries']} queries. Embeddings: "
        f"ours, {report['encoding']['setup']['precision']}, cached as float32; the same for both libraries. "
        "Brute force answers one query after another (its QPS is that rate); recall@10 is against fp32 "
        "brute force's top 10.",
        "",
        "| documents | tokens | system | build s | disk MiB | peak RSS building MiB "
        "| peak RSS searching MiB | QPS batched | one query p50 ms | one query p95 ms | recall@10 vs exact "
        "| one query p50 / brute fp32 |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for size in report["sizes"]:
        lines += _size_lines(size, sides)
    ratios = _ratio_lines(report)
    if ratios:
        lines += [
            "",
            f"ours / PyLate, comparison: {report.get('comparison')} (below 1: ours faster or smaller, except "
            "for QPS, where above 1 is; the differences each library's defaults and pins bring are named):",
            "",
            *ratios,
        ]
    lines += ["", "Latency goal (one query through the default index against fp32 brute force):", ""]
    lines += _goal_lines(report)
    exponents = _exponent_lines(report)
    if exponents:
        lines += ["", "Growth exponents (slope of log metric over log documents):", "", *exponents]
    return "\n".join(lines)
