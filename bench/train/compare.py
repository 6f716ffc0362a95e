"""Training throughput: the train stage against PyLate 1.6 (``--peer``) or alone (``--stage``), or
``losses.Contrastive`` against ``losses.CachedContrastive`` (neither flag, :mod:`bench.train.losses`).

**The train stage against PyLate**: the stage's trainer and PyLate 1.6's (``bench/.peer-venv``, see
:func:`bench.common.ensure_peer_venv`) each train in a fresh process (:mod:`bench.train.trainers`) on the
same rows with the same settings, on long documents (SciFact's prepared triplets, or SciFact's train qrels
with seeded random negatives: the cost of a step depends on the texts' lengths, not on how hard the
negatives are) and on short passages (``../shared/data/kd-sample-flagembedding``). Runs are interleaved
(stage then PyLate, then the other way round) so load drift hits both. PyLate is given the batch sampler the
stage resolves for the rows (``no_duplicates`` where a query repeats), so both see batches alike; such
batches can hold fewer rows than ``--batch-size``, which is why rows are counted. ``--profile DIR`` writes
each run's cProfile top entries. The record goes to ``--output`` (default
``bench/records/train_throughput.json``). On a GPU machine: ``bench/gpu_pass.sh``.

**The seeds' code** (``--seeds``): what a library user runs, PyLate's documented training example
(:func:`bench.train.trainers.worker_seeds`), the same text once against ``pipeline`` and once against PyLate
1.6, each in a fresh process, on the same rows, batch size, seed and threads, fp32, interleaved as above;
the record is ``bench/records/train_seeds.json``.

**Each at its defaults** (``--peer --defaults``): the stage at ``precision: auto`` (bf16 autocast on a CPU
with native bf16) against PyLate's trainer at its own (``fp16=False, bf16=False``: fp32), the difference
declared in the record (``comparison: defaults``); the record is
``bench/records/train_throughput_defaults.json``.

    .venv/bin/python -m bench.train --peer --steps 8 --warmup 2 --repeats 2     # or: make bench-train
    .venv/bin/python -m bench.train --peer --defaults --steps 8 --warmup 2 --repeats 2
    .venv/bin/python -m bench.train --stage --steps 2 --warmup 1 --output /tmp/stage.json
    .venv/bin/python -m bench.train --seeds --steps 8 --warmup 2 --repeats 2   # train_seeds.json
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.common import (
    PEER_PINNED,
    PEER_REQUIREMENT,
    RECORDS,
    command_line,
    ensure_peer_venv,
    environment,
    logger,
    run_worker,
    setup_logging,
    write_record,
)
from bench.render import render
from bench.train import losses
from bench.train.data import long_and_short


def train_settings(args: argparse.Namespace) -> dict[str, Any]:
    """What both trainers train with; the precision resolved here (auto: bf16/fp16 on CUDA, bf16 on a
    bf16-native CPU, else fp32) so the stage and PyLate get the same one."""
    from pipeline.training.trainer import precision_flags

    flags = precision_flags(args.precision, args.device)
    return {
        "batch_size": args.batch_size,
        "max_steps": args.warmup + args.steps,
        "learning_rate": 3e-5,
        "temperature": 1.0,
        "seed": args.seed,
        "device": args.device,
        "save_steps": 100,
        "precision": next((name for name, on in flags.items() if on), "fp32"),
    }


#: PyLate's training precision at its defaults (``SentenceTransformerTrainingArguments``: fp16, bf16 off).
PEER_DEFAULT_PRECISION = "fp32"


def per_system_train(train: dict[str, Any], defaults: bool) -> dict[str, dict[str, Any]]:
    """What each of the stage and PyLate trains with: the same settings, except that with ``defaults``
    PyLate keeps its own precision (:data:`PEER_DEFAULT_PRECISION`) where the stage resolved ``auto``.

    Example:
        >>> train = {"batch_size": 16, "precision": "bf16"}
        >>> per_system_train(train, defaults=True)["peer"]["precision"]
        'fp32'
        >>> per_system_train(train, defaults=False)["peer"]["precision"]
        'bf16'
    """
    peer = {**train, "precision": PEER_DEFAULT_PRECISION} if defaults else dict(train)
    return {"stage": dict(train), "peer": peer}


#: A system: the interpreter, the worker (:mod:`bench.train.trainers`), what its job adds, whether PyLate's.
System = tuple[str, str, dict[str, Any], bool]


def systems_for(args: argparse.Namespace) -> dict[str, System]:
    """The systems a run compares: the stage (and PyLate's trainer with ``--peer``), or, with ``--seeds``, the
    seeds' code against ``pipeline`` and against ``pylate``."""
    if args.seeds:
        peer = str(ensure_peer_venv())
        return {
            "pipeline": (sys.executable, "seeds", {"library": "pipeline"}, False),
            "pylate": (peer, "seeds", {"library": "pylate"}, True),
        }
    systems: dict[str, System] = {"stage": (sys.executable, "stage", {}, False)}
    if args.peer:
        systems["peer"] = (str(ensure_peer_venv()), "peer", {}, True)
    return systems


def compare_trainers(args: argparse.Namespace) -> dict[str, Any]:
    """Interleaved runs of the systems (:func:`systems_for`) on long and short documents."""
    from datasets import Dataset

    from pipeline.models import resolve_model_name
    from pipeline.training import samplers

    systems = systems_for(args)
    train = train_settings(args)
    trains = per_system_train(train, args.defaults)
    data = long_and_short(args.long, args.short, (args.warmup + args.steps) * args.batch_size, args.seed)
    runs = []
    with tempfile.TemporaryDirectory(prefix="train-throughput-") as workdir:
        for repeat in range(args.repeats):
            for name, source, rows in data:
                sampler = samplers.choose_batch_sampler("auto", Dataset.from_list(rows), "triplets").value
                spec = {
                    "rows": rows,
                    "train": train,
                    "warmup": args.warmup,
                    "workdir": workdir,
                    "base_model_path": resolve_model_name(None),
                    "batch_sampler": sampler,
                }
                for system in list(systems) if repeat % 2 == 0 else list(reversed(systems)):
                    python, worker, extra, peer = systems[system]
                    logger.info("repeat %d, %s, %s", repeat + 1, name, system)
                    job = Path(workdir) / f"{system}-job.json"
                    profile = Path(args.profile).resolve() / f"{name}-{system}.txt" if args.profile else None
                    own = {"train": trains[system]} if system in trains else {}
                    job_spec = {**spec, **own, **extra, "profile": str(profile) if profile else None}
                    write_record(job, job_spec)
                    result = run_worker(
                        python,
                        "bench.train.trainers",
                        [worker, "--job", str(job)],
                        peer=peer,
                        timeout=args.timeout,
                    )
                    runs.append(
                        {"repeat": repeat + 1, "data": name, "source": source, "system": system, **result}
                    )
                    logger.info("  %.3f samples/s", result["samples_per_s"])
    # Same settings and precision on both sides (each library's pinned versions differ, and are declared),
    # or, with --defaults, each library's own precision, declared too.
    if args.defaults:
        label = {
            "comparison": "defaults",
            "declared": [*PEER_PINNED, "precision"],
            "precision": {system: trains[system]["precision"] for system in systems},
        }
    else:
        label = {"comparison": "like for like", "declared": list(PEER_PINNED)}
    return {"runs": runs, "samples_per_s_median": medians(runs, list(systems)), "train": train, **label}


def medians(runs: list[dict[str, Any]], systems: list[str]) -> dict[str, dict[str, float]]:
    """Per data set, each system's median samples/s, and the first system's ratio to the second's
    (``stage_vs_peer``, or ``pipeline_vs_pylate`` for the seeds)."""
    summary = {}
    for name in dict.fromkeys(run["data"] for run in runs):
        row = {
            system: statistics.median(
                r["samples_per_s"] for r in runs if r["data"] == name and r["system"] == system
            )
            for system in systems
        }
        if len(systems) == 2:
            row[f"{systems[0]}_vs_{systems[1]}"] = row[systems[0]] / row[systems[1]]
        summary[name] = row
    return summary


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    losses.add_arguments(parser)
    parser.add_argument("--peer", action="store_true", help="the train stage against PyLate 1.6, interleaved")
    parser.add_argument("--stage", action="store_true", help="the train stage alone (no PyLate)")
    parser.add_argument(
        "--seeds",
        action="store_true",
        help="the seeds' training code (PyLate's documented usage) against pipeline and against PyLate 1.6",
    )
    parser.add_argument("--repeats", type=int, default=1, help="--peer/--stage: runs per system and data")
    parser.add_argument("--long", help="--peer/--stage: long documents (prepared train folder or JSONL)")
    parser.add_argument("--short", help="--peer/--stage: short passages (prepared train folder or JSONL)")
    parser.add_argument("--timeout", type=float, default=None, help="seconds per trainer run")
    parser.add_argument(
        "--precision",
        choices=["auto", "fp32", "fp16", "bf16"],
        default="auto",
        help="--peer/--stage: the train stage's precision (auto: as the stage resolves it), PyLate's too",
    )
    parser.add_argument(
        "--defaults",
        action="store_true",
        help="--peer: each at its defaults, the stage at precision auto, PyLate at its own (fp32)",
    )
    parser.add_argument(
        "--output", default=str(RECORDS / "train_throughput.json"), help="--peer/--stage: the record (JSON)"
    )
    parser.add_argument(
        "--profile", help="--peer/--stage: a folder for each run's cProfile top entries (<data>-<system>.txt)"
    )
    return parser


def main() -> None:
    args = parser().parse_args()
    setup_logging()
    if args.seeds and (args.peer or args.stage):
        raise SystemExit("--seeds compares the seeds' code alone: leave out --peer and --stage")
    if args.seeds and args.precision not in ("auto", "fp32"):
        raise SystemExit("--seeds trains in fp32, as the seeds' code does (fp16=False, bf16=False)")
    if args.defaults and not (args.peer and args.precision == "auto"):
        raise SystemExit("--defaults: each trainer at its defaults; use it with --peer, without --precision")
    if args.seeds:
        args.precision = "fp32"
    if args.seeds and args.output == parser().get_default("output"):
        args.output = str(RECORDS / "train_seeds.json")
    if args.defaults and args.output == parser().get_default("output"):
        args.output = str(RECORDS / "train_throughput_defaults.json")
    if not (args.peer or args.stage or args.seeds):
        losses.compare_losses(args)
        return
    if args.steps < 1 or args.warmup < 1:
        raise SystemExit("--steps and --warmup must be at least 1")
    result = compare_trainers(args)
    # The environment as the runs end: the load average then is the one they ran under.
    env = environment()
    env["load_avg_1m_at_end"] = env.pop("load_avg_1m")
    record = {
        **({"benchmark": "train_seeds"} if args.seeds else {}),
        "command": command_line("bench.train"),
        "environment": env,
        **result,
        "peer": PEER_REQUIREMENT if args.peer or args.seeds else None,
    }
    output = write_record(args.output, record)
    print(f"\nenvironment: {record['environment']}\n{render(record)}\n\nresults: {output}")


if __name__ == "__main__":
    main()
