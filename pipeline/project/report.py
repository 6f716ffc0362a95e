"""The quality report: every system's scores on every dataset, as a Markdown table and PNG plots.

In this module: the report's records, their table and the plots drawn from the same records.

Each scored system leaves two files per retrieval under ``<output>/runs/<dataset>/`` (written by
:func:`save_system_result`, which the ``quality`` stage and ``python -m bench.quality`` both call):
``<system>.<retrieval>.json`` (the metrics and how they were obtained, :func:`save_result`) and
``<system>.<retrieval>.trec.gz`` (the run itself, which anyone can re-score with trec_eval). A training
curve, when there is one, is ``<system>.training_loss.json``.
:func:`write_report` reads them all and writes ``<output>/quality.md``, ``<output>/plots/*.png`` and the
``plots/*.json`` data that ``dvc plots show`` renders.

Example:
    >>> import tempfile, pathlib
    >>> from pipeline.project.report import save_result, write_report
    >>> out = pathlib.Path(tempfile.mkdtemp())
    >>> qrels = {"q1": {"d1": 1}, "q2": {"d2": 1}}
    >>> run = {"q1": {"d1": 2.0, "d2": 1.0}, "q2": {"d1": 2.0, "d2": 1.0}}
    >>> save_result(out / "runs" / "toy", dataset="toy", system="dense", retrieval="exact", run=run,
    ...             qrels=qrels)["metrics"]["mrr@10"]
    0.75
    >>> sorted(write_report(out))
    ['datasets', 'markdown', 'plots', 'systems']
"""

from __future__ import annotations

import json
import logging
import math
import os
import platform
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from pipeline.project.io import atomic_save_figure, atomic_write_json, atomic_write_text, read_json
from pipeline.project.runs import Run, evaluate_run, write_trec_run

logger = logging.getLogger(__name__)

__all__ = [
    "SYSTEMS",
    "load_results",
    "save_result",
    "save_system_result",
    "save_training_loss",
    "write_report",
]

#: Report order and labels of the systems a result file may name (others keep their own name, last).
SYSTEMS: dict[str, str] = {
    "dense": "MiniLM-L6 dense bi-encoder (cosine)",
    "colbert-base": "MiniLM-L6 as untrained ColBERT",
    "colbert-tuned": "fine-tuned ColBERT (this pipeline)",
    "pylate": "fine-tuned ColBERT (PyLate 1.6, same data and settings)",
}
#: Report order of retrieval methods.
RETRIEVALS = ("cosine", "plaid", "exact")
METRICS = ("ndcg@10", "mrr@10", "recall@100")
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_")


def _check_name(kind: str, value: str) -> str:
    # Names become file names: no separators, no dots (the file name's own separator), nothing hidden.
    if not value or not set(value) <= _NAME_CHARS or value.startswith("-"):
        raise ValueError(f"{kind} {value!r} must be letters, digits, '-' or '_' (it names a file)")
    return value


def environment() -> dict[str, Any]:
    """Where a result was measured: the date, the machine and the main library versions."""
    import torch

    return {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def save_result(
    folder: str | os.PathLike[str],
    *,
    dataset: str,
    system: str,
    retrieval: str,
    run: Run,
    qrels: Mapping[str, Mapping[str, int]],
    ignore_identical_ids: bool = True,
    details: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Score ``run`` against ``qrels`` and write ``<system>.<retrieval>.json`` and its ``.trec.gz`` run.

    Args:
        folder: The dataset's runs folder (``reports/runs/scifact``).
        dataset: The dataset's name in the report.
        system: A key of :data:`SYSTEMS` (or a new name, shown as given).
        retrieval: ``cosine``, ``plaid`` or ``exact`` (how the run was retrieved).
        run: Query id -> document id -> score, at least 100 deep for recall@100.
        qrels: The judgements the run is scored against.
        ignore_identical_ids: See :func:`pipeline.project.runs.evaluate_run`.
        details: Anything worth keeping beside the metrics: the model, timings, training settings.

    Returns:
        The record written: ``metrics``, ``dataset``, ``system``, ``retrieval``, ``details`` ...
    """
    folder = Path(folder)
    stem = f"{_check_name('system', system)}.{_check_name('retrieval', retrieval)}"
    _check_name("dataset", dataset)
    metrics = evaluate_run(run, qrels, ignore_identical_ids=ignore_identical_ids)
    write_trec_run(folder / f"{stem}.trec.gz", run, tag=f"{system}.{retrieval}")
    record = {
        "dataset": dataset,
        "system": system,
        "retrieval": retrieval,
        "metrics": metrics,
        "run_file": f"{stem}.trec.gz",
        "ignore_identical_ids": ignore_identical_ids,
        "details": dict(details or {}),
        "environment": environment(),
    }
    atomic_write_json(folder / f"{stem}.json", record)
    logger.info(
        "%s %s (%s): nDCG@10 %.4f, MRR@10 %.4f, recall@100 %.4f",
        dataset,
        system,
        retrieval,
        metrics["ndcg@10"],
        metrics["mrr@10"],
        metrics["recall@100"],
    )
    return record


def save_training_loss(folder: str | os.PathLike[str], system: str, steps: list[dict[str, float]]) -> None:
    """Write a training curve (``[{"step": 1, "loss": 2.3}, ...]``) as ``<system>.training_loss.json``."""
    points = [{"step": int(p["step"]), "loss": float(p["loss"])} for p in steps if "loss" in p]
    atomic_write_json(Path(folder) / f"{_check_name('system', system)}.training_loss.json", points)


def save_system_result(
    folder: str | os.PathLike[str],
    *,
    dataset: str,
    system: str,
    runs: Mapping[str, tuple[Run, Mapping[str, Any]]],
    qrels: Mapping[str, Mapping[str, int]],
    ignore_identical_ids: bool = True,
    training_loss: list[dict[str, float]] | None = None,
) -> dict[str, dict[str, Any]]:
    """What one system leaves for the report on one dataset: each retrieval's scored run and, when given,
    its model's training curve.

    Args:
        folder: The dataset's runs folder.
        dataset: The dataset's name in the report.
        system: A key of :data:`SYSTEMS` (or a new name, shown as given).
        runs: Retrieval (``cosine``, ``plaid``, ``exact``) -> (its run, its details), each written by
            :func:`save_result`.
        qrels: The judgements the runs are scored against.
        ignore_identical_ids: See :func:`pipeline.project.runs.evaluate_run`.
        training_loss: ``[{"step": 1, "loss": 2.3}, ...]``, written by :func:`save_training_loss`.

    Returns:
        Retrieval -> the record written.

    Example:
        >>> import tempfile, pathlib
        >>> out = pathlib.Path(tempfile.mkdtemp())
        >>> run = {"q1": {"d1": 2.0, "d2": 1.0}}
        >>> records = save_system_result(out, dataset="toy", system="pylate", runs={"plaid": (run, {})},
        ...                              qrels={"q1": {"d2": 1}}, training_loss=[{"step": 1, "loss": 0.5}])
        >>> records["plaid"]["metrics"]["mrr@10"], sorted(p.name for p in out.glob("*.json"))
        (0.5, ['pylate.plaid.json', 'pylate.training_loss.json'])
    """
    records = {
        retrieval: save_result(
            folder,
            dataset=dataset,
            system=system,
            retrieval=retrieval,
            run=run,
            qrels=qrels,
            ignore_identical_ids=ignore_identical_ids,
            details=details,
        )
        for retrieval, (run, details) in runs.items()
    }
    if training_loss:
        save_training_loss(folder, system, training_loss)
    return records


def load_results(runs_folder: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Every result record under ``runs_folder/<dataset>/``, in report order."""
    runs_folder = Path(runs_folder)
    records = []
    for path in sorted(runs_folder.glob("*/*.json")):
        if path.name.endswith(".training_loss.json"):
            continue
        record = read_json(path)
        missing = [key for key in ("dataset", "system", "retrieval", "metrics") if key not in record]
        if missing:
            raise ValueError(f"{path}: not a result record (missing {missing})")
        records.append(record)
    return in_report_order(records)


RecordT = TypeVar("RecordT", bound=Mapping[str, Any])


def in_report_order(records: Iterable[RecordT]) -> list[RecordT]:
    """``records`` sorted as the report lists them: by dataset, then system, then retrieval."""
    return sorted(records, key=_order)


def _order(record: Mapping[str, Any]) -> tuple:
    systems = list(SYSTEMS)
    system = record["system"]
    retrieval = record["retrieval"]
    return (
        record["dataset"],
        systems.index(system) if system in systems else len(systems),
        system,
        RETRIEVALS.index(retrieval) if retrieval in RETRIEVALS else len(RETRIEVALS),
    )


def _label(system: str) -> str:
    return SYSTEMS.get(system, system)


def _color(system: str) -> str:
    """A system's colour, the same in every plot: matplotlib's cycle in report order, others by name."""
    if system in SYSTEMS:
        return f"C{list(SYSTEMS).index(system)}"
    return f"C{len(SYSTEMS) + sum(map(ord, system)) % (10 - len(SYSTEMS))}"  # stable across runs


def markdown_table(records: list[Mapping[str, Any]]) -> str:
    """One row per (dataset, system, retrieval), with each metric and nDCG@10's change against dense."""
    dense = {
        r["dataset"]: r["metrics"]["ndcg@10"] for r in records if r["system"] == "dense"
    }  # the classic baseline every row is compared with
    lines = [
        "| dataset | system | retrieval | queries | nDCG@10 | MRR@10 | recall@100 | nDCG@10 vs dense |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for record in records:
        metrics = record["metrics"]
        base = dense.get(record["dataset"])
        delta = (
            f"{metrics['ndcg@10'] - base:+.4f}" if base is not None and record["system"] != "dense" else ""
        )
        lines.append(
            f"| {record['dataset']} | {_label(record['system'])} | {record['retrieval']} | "
            f"{metrics.get('queries', '-')} | {metrics['ndcg@10']:.4f} | {metrics['mrr@10']:.4f} | "
            f"{metrics['recall@100']:.4f} | {delta} |"
        )
    return "\n".join(lines)


def _headline(records: list[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The bar chart's rows: each system's nDCG@10 per dataset, by PLAID where it has an index."""

    # One bar per system: its deployable retrieval (cosine for dense, PLAID for ColBERT), exact otherwise.
    def rank(record: Mapping[str, Any]) -> int:
        retrieval = record["retrieval"]
        return RETRIEVALS.index(retrieval) if retrieval in RETRIEVALS else len(RETRIEVALS)

    best: dict[tuple[str, str], Mapping[str, Any]] = {}
    for record in records:
        key = (record["dataset"], record["system"])
        if key not in best or rank(record) < rank(best[key]):
            best[key] = record
    return [
        {
            "dataset": dataset,
            "system": system,
            "retrieval": record["retrieval"],
            "ndcg@10": record["metrics"]["ndcg@10"],
        }
        for (dataset, system), record in sorted(best.items(), key=lambda item: _order(item[1]))
    ]


def plot_ndcg(rows: list[Mapping[str, Any]], path: Path) -> None:
    """Grouped bars: nDCG@10 per dataset, one bar per system."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = list(dict.fromkeys(row["dataset"] for row in rows))
    systems = list(dict.fromkeys(row["system"] for row in rows))
    values = {(row["dataset"], row["system"]): row["ndcg@10"] for row in rows}
    width = 0.8 / max(len(systems), 1)
    # Wide enough for the legend's full system names even with a single dataset.
    figure, axes = plt.subplots(figsize=(max(6.4, 2.0 + 2.2 * len(datasets)), 4.2 + 0.25 * len(systems)))
    for offset, system in enumerate(systems):
        xs = [i + (offset - (len(systems) - 1) / 2) * width for i in range(len(datasets))]
        heights = [values.get((d, system), math.nan) for d in datasets]
        bars = axes.bar(xs, heights, width, label=_label(system), color=_color(system))
        axes.bar_label(bars, fmt="%.3f", fontsize=7, rotation=90, padding=2)
    axes.set_xticks(range(len(datasets)), datasets)
    axes.set_ylabel("nDCG@10")
    top = max((v for v in values.values() if math.isfinite(v)), default=1.0)
    axes.set_ylim(0, min(1.0, top * 1.35 + 0.02))
    axes.set_title("nDCG@10 per dataset (full test sets)")
    axes.legend(loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=1, frameon=False, fontsize=8)
    atomic_save_figure(figure, path)


def plot_recall(records: list[Mapping[str, Any]], path: Path) -> None:
    """recall@k against k, one panel per dataset, one line per (system, retrieval)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = list(dict.fromkeys(r["dataset"] for r in records))
    figure, panels = plt.subplots(
        1, len(datasets), figsize=(4.2 * len(datasets), 3.8), squeeze=False, sharey=True
    )
    for axes, dataset in zip(panels[0], datasets, strict=True):
        for record in (r for r in records if r["dataset"] == dataset):
            curve = {int(k): v for k, v in record["metrics"]["recall_curve"].items()}
            ks = sorted(curve)
            style = "--" if record["retrieval"] == "exact" else "-"
            axes.plot(
                ks,
                [curve[k] for k in ks],
                style,
                marker=".",
                color=_color(record["system"]),
                label=_curve_label(record),
            )
        axes.set_xscale("log")
        axes.set_xlabel("k")
        axes.set_title(dataset)
        axes.grid(alpha=0.3)
    panels[0][0].set_ylabel("recall@k")
    panels[0][-1].legend(fontsize=7, loc="lower right")
    atomic_save_figure(figure, path)


def _curve_label(record: Mapping[str, Any]) -> str:
    return f"{record['system']} ({record['retrieval']})"


def plot_loss(curves: Mapping[tuple[str, str], list[Mapping[str, float]]], path: Path) -> None:
    """Training loss per step, one line per (dataset, system), with a moving average to see the trend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6.4, 3.8))
    for (dataset, system), points in curves.items():
        steps = [p["step"] for p in points]
        losses = [p["loss"] for p in points]
        window = max(1, len(losses) // 10)  # per-step contrastive losses swing widely at batch 16
        smooth = [
            sum(losses[max(0, i - window + 1) : i + 1]) / len(losses[max(0, i - window + 1) : i + 1])
            for i in range(len(losses))
        ]
        (line,) = axes.plot(steps, smooth, label=f"{dataset}: {system}")
        axes.plot(steps, losses, alpha=0.2, color=line.get_color())
    axes.set_xlabel("step")
    axes.set_ylabel("training loss")
    axes.set_title("Training loss (faint: per step; bold: moving average)")
    axes.grid(alpha=0.3)
    if curves:
        axes.legend(fontsize=8)
    atomic_save_figure(figure, path)


def _training_curves(runs_folder: Path) -> dict[tuple[str, str], list[dict[str, float]]]:
    """Each system's training curve per dataset, keyed ``(dataset, system)``.

    A zero-shot set keeps a copy of its model's curve; identical curves of one system are drawn once,
    under every dataset that holds them (``"arguana / scifact"``), rather than hiding one under another.
    """
    curves: dict[tuple[str, str], list[dict[str, float]]] = {}
    for path in sorted(runs_folder.glob("*/*.training_loss.json")):
        points = read_json(path)
        if not points:
            continue
        dataset, system = path.parent.name, path.name.removesuffix(".training_loss.json")
        same = next((key for key, seen in curves.items() if key[1] == system and seen == points), None)
        if same is None:
            curves[(dataset, system)] = points
        else:
            curves[(f"{same[0]} / {dataset}", system)] = curves.pop(same)
    return curves


def write_report(output: str | os.PathLike[str], title: str = "Retrieval quality") -> dict[str, Any]:
    """Read ``<output>/runs/*/*.json`` and write ``<output>/quality.md`` and ``<output>/plots/``.

    Returns:
        ``{"markdown": path, "plots": [paths], "datasets": [...], "systems": [...]}``.

    Raises:
        FileNotFoundError: when there is no result to report (run ``colbert-pipeline quality`` first).
    """
    output = Path(output)
    runs_folder = output / "runs"
    records = load_results(runs_folder)
    if not records:
        raise FileNotFoundError(f"{runs_folder}: no results to report (run `colbert-pipeline quality` first)")
    plots = output / "plots"
    headline = _headline(records)
    curves = _training_curves(runs_folder)
    plot_ndcg(headline, plots / "ndcg.png")
    plot_recall(records, plots / "recall.png")
    written = [plots / "ndcg.png", plots / "recall.png"]
    atomic_write_json(plots / "ndcg.json", headline)
    atomic_write_json(
        plots / "recall.json",
        [
            {"dataset": r["dataset"], "system": _curve_label(r), "k": int(k), "recall": v}
            for r in records
            for k, v in sorted(r["metrics"]["recall_curve"].items(), key=lambda item: int(item[0]))
        ],
    )
    loss_rows = [
        {"run": f"{dataset}: {system}", "step": p["step"], "loss": p["loss"]}
        for (dataset, system), points in curves.items()
        for p in points
    ]
    atomic_write_json(plots / "loss.json", loss_rows)
    plot_loss(curves, plots / "loss.png")
    written.append(plots / "loss.png")
    atomic_write_text(output / "quality.md", _markdown(title, records, curves))
    return {
        "markdown": str(output / "quality.md"),
        "plots": [str(p) for p in written],
        "datasets": sorted({r["dataset"] for r in records}),
        "systems": sorted({r["system"] for r in records}),
    }


def _markdown(
    title: str, records: list[Mapping[str, Any]], curves: Mapping[tuple[str, str], list[Mapping[str, float]]]
) -> str:
    environments = {json.dumps(r.get("environment", {}), sort_keys=True) for r in records}
    lines = [
        f"# {title}",
        "",
        "Full test sets and full corpora; nDCG@10 (linear gains), MRR@10 and recall@100 from trec_eval "
        "(pytrec_eval) over every judged query. `plaid` is the system's PLAID index, `exact` is MaxSim "
        "over every document, `cosine` is exact dense search. A hit whose id equals the query's is "
        "ignored (BEIR's rule). This nDCG@10 is graded (the qrels grade is the gain); the promotion gate's "
        "(`register.metric`, sentence-transformers' NanoBEIR evaluator on the Nano benchmark) counts every "
        "relevant document 1, so the two differ on graded sets such as NFCorpus.",
        "",
        markdown_table(list(records)),
        "",
        "![nDCG@10 per dataset](plots/ndcg.png)",
        "",
        "![recall@k](plots/recall.png)",
        "",
    ]
    if curves:
        lines += ["![training loss](plots/loss.png)", ""]
    lines += ["## How each row was produced", ""]
    for record in records:
        details = record.get("details", {})
        shown = ", ".join(f"{k}={v}" for k, v in sorted(details.items()) if not isinstance(v, dict | list))
        lines.append(
            f"- {record['dataset']} / {record['system']} ({record['retrieval']}): {shown or 'no details'}"
        )
    lines += ["", "## Where it was measured", ""]
    lines += [f"- `{text}`" for text in sorted(environments)]
    return "\n".join(lines) + "\n"
