"""``python -m bench.train.precision_seeds``: does bf16 training on a CPU keep SciFact's quality?

The decision it records (issue 37): the train stage's ``precision: auto`` may pick bf16 autocast on a CPU with
native bf16 only if SciFact nDCG@10, mean over the same seeds, stays within :data:`TOLERANCE` of fp32's.

It runs the stages as a user would (``colbert-pipeline prepare|train|quality --config
configs/scifact.yaml``): one prepare, then for each seed an fp32 and a bf16 training, interleaved, each scored
on SciFact's full test set by exact MaxSim (encoding in fp32 for both, so only the training precision
differs). Every finished run is kept in ``--work`` and the record is rewritten after each, so an interrupted
run resumes where it stopped.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import REPO, command_line, environment, setup_logging, write_record

#: The largest mean nDCG@10 loss bf16 training may cost against fp32 and still become the CPU default.
TOLERANCE = 0.005
BENCHMARK = "train_precision_seeds"
PRECISIONS = ("fp32", "bf16")
RECORD = REPO / "bench" / "records" / "train_precision_seeds.json"
CONFIG = "configs/scifact.yaml"
EVALUATION = "SciFact test set (300 queries, 5,183 documents), exact MaxSim, fp32 encoding"


def cli() -> Path:
    """The project's ``colbert-pipeline`` beside this interpreter."""
    found = Path(sys.executable).with_name("colbert-pipeline")
    if not found.exists():
        raise SystemExit(f"{found} is missing: run `make install` first")
    return found


def stage(command: str, work: Path, *overrides: str) -> float:
    """Run one stage on the SciFact config with its outputs under ``work``; return its wall seconds."""
    arguments = [str(cli()), command, "--config", CONFIG, "--set", f"prepare.output={work / 'prepared'}"]
    for override in overrides:
        arguments += ["--set", override]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlruns.db'}"}
    started = time.perf_counter()
    subprocess.run(arguments, cwd=REPO, env=env, check=True)
    return time.perf_counter() - started


def run_one(work: Path, precision: str, seed: int) -> dict[str, Any]:
    """Train at ``precision`` with ``seed``, score it, and return (and keep) its row."""
    name = f"{precision}-seed{seed}"
    row_file = work / "rows" / f"{name}.json"
    if row_file.is_file():
        return json.loads(row_file.read_text(encoding="utf-8"))
    model = work / "models" / name
    reports = work / "reports" / name
    train_seconds = stage(
        "train", work, f"train.seed={seed}", f"train.precision={precision}", f"train.output={model}"
    )
    stage(
        "quality",
        work,
        f"train.seed={seed}",
        f"quality.model={model}",
        f"quality.output={reports}",
        "quality.systems=[colbert-tuned]",
    )
    scored = json.loads(
        (reports / "runs" / "scifact" / "colbert-tuned.exact.json").read_text(encoding="utf-8")
    )
    metrics = scored["metrics"]
    row = {
        "precision": precision,
        "seed": seed,
        "ndcg@10": metrics["ndcg@10"],
        "mrr@10": metrics["mrr@10"],
        "recall@100": metrics["recall@100"],
        "queries": metrics["queries"],
        "train_seconds": round(train_seconds, 1),
    }
    write_record(row_file, row)
    return row


def summarise(rows: list[dict[str, Any]], seeds: list[int]) -> dict[str, Any]:
    """Means per precision over the seeds both have, the difference, and the decision it supports.

    Example:
        >>> scores = [("fp32", 1, 0.70), ("bf16", 1, 0.698), ("fp32", 2, 0.69), ("bf16", 2, 0.689)]
        >>> rows = [{"precision": p, "seed": s, "ndcg@10": v, "train_seconds": 1.0} for p, s, v in scores]
        >>> summary = summarise(rows, [1, 2])
        >>> summary["difference"], summary["holds"]
        (-0.0015, True)
    """
    done = {(row["precision"], row["seed"]) for row in rows}
    paired = [seed for seed in seeds if all((p, seed) in done for p in PRECISIONS)]
    means: dict[str, Any] = {}
    for precision in PRECISIONS:
        chosen = [r for r in rows if r["precision"] == precision and r["seed"] in paired]
        means[precision] = {
            "ndcg@10": round(statistics.fmean(r["ndcg@10"] for r in chosen), 4) if chosen else None,
            "train_seconds": round(statistics.fmean(r["train_seconds"] for r in chosen), 1)
            if chosen
            else None,
        }
    if len(paired) < len(seeds):
        return {"paired_seeds": paired, "means": means, "complete": False}
    difference = round(means["bf16"]["ndcg@10"] - means["fp32"]["ndcg@10"], 4)
    return {
        "paired_seeds": paired,
        "means": means,
        "complete": True,
        "difference": difference,
        "tolerance": TOLERANCE,
        "holds": difference >= -TOLERANCE,
        # The median of each seed's ratio: a run slowed by other work on the machine moves a mean of
        # seconds, not this.
        "train_speedup": round(statistics.median(_speedups(rows, paired)), 2),
    }


def _speedups(rows: list[dict[str, Any]], seeds: list[int]) -> list[float]:
    """Each seed's fp32 train seconds over its bf16 ones."""
    seconds = {(row["precision"], row["seed"]): row["train_seconds"] for row in rows}
    return [seconds["fp32", seed] / seconds["bf16", seed] for seed in seeds]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 43, 44])
    parser.add_argument("--work", type=Path, default=REPO / "bench" / ".cache" / "precision_seeds")
    parser.add_argument(
        "--record", type=Path, default=REPO / "bench" / "records" / "train_precision_seeds.json"
    )
    args = parser.parse_args(argv)
    setup_logging()
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    if not (work / "prepared").is_dir():
        stage("prepare", work)
    rows: list[dict[str, Any]] = []
    for seed in args.seeds:
        for precision in PRECISIONS:
            rows.append(run_one(work, precision, seed))
            write_record(
                args.record,
                {
                    "benchmark": BENCHMARK,
                    "command": command_line("bench.train.precision_seeds", argv),
                    "config": CONFIG,
                    "evaluation": EVALUATION,
                    "environment": environment(),
                    "rows": rows,
                    "summary": summarise(rows, args.seeds),
                },
            )


if __name__ == "__main__":
    main()


def render_precision_seeds(report: dict[str, Any]) -> str:
    """The record as Markdown: each seed's nDCG@10 in both precisions, the means and the decision."""
    from bench.render import environment_line

    by_seed: dict[int, dict[str, dict[str, Any]]] = {}
    for row in report["rows"]:
        by_seed.setdefault(row["seed"], {})[row["precision"]] = row
    lines = [
        environment_line(report),
        "",
        f"Scored on the {report['evaluation']}.",
        "",
        "| seed | fp32 nDCG@10 | bf16 nDCG@10 | bf16 - fp32 | fp32 train s | bf16 train s |",
        "|---|---|---|---|---|---|",
    ]

    def cell(row: dict[str, Any] | None, key: str, fmt: str) -> str:
        return format(row[key], fmt) if row else "not run"

    for seed, pair in sorted(by_seed.items()):
        fp32, bf16 = pair.get("fp32"), pair.get("bf16")
        gap = f"{bf16['ndcg@10'] - fp32['ndcg@10']:+.4f}" if fp32 and bf16 else ""
        lines.append(
            f"| {seed} | {cell(fp32, 'ndcg@10', '.4f')} | {cell(bf16, 'ndcg@10', '.4f')} | {gap} "
            f"| {cell(fp32, 'train_seconds', '.0f')} | {cell(bf16, 'train_seconds', '.0f')} |"
        )
    summary = report["summary"]
    means = summary["means"]
    if not summary["complete"]:
        lines += ["", f"Incomplete: seeds {summary['paired_seeds']} have both runs; no decision is drawn."]
        return "\n".join(lines)
    verdict = (
        "holds: bf16 is within the tolerance"
        if summary["holds"]
        else f"misses by {-summary['difference'] - summary['tolerance']:.4f}"
    )
    lines += [
        f"| mean | {means['fp32']['ndcg@10']:.4f} | {means['bf16']['ndcg@10']:.4f} | "
        f"{summary['difference']:+.4f} | {means['fp32']['train_seconds']:.0f} | "
        f"{means['bf16']['train_seconds']:.0f} |",
        "",
        f"Decision (bf16's mean at most {summary['tolerance']} below fp32's): {verdict}. bf16 trained "
        f"{summary['train_speedup']:.2f}x as fast (the median over seeds of the train stage's wall "
        "time, fp32 over bf16).",
    ]
    return "\n".join(lines)
