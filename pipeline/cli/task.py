"""``colbert-pipeline task``: one stage of one run on any worker, through the shared remotes only.

The command an orchestrator's task runs where workers share no folder (Celery workers on several hosts,
Kubernetes pods, a ``DockerOperator``): :mod:`pipeline.ops.stateless` does the work; this module parses and
prints. Started in a clone whose git remote, DVC remote and ``MLFLOW_TRACKING_URI`` are the run's, or with no
clone (a container of the project's image), where settings name all three (:mod:`pipeline.ops.task_origin`).

Example:
    $ colbert-pipeline task prepare --run nightly-42 --set train.max_steps=200
    $ colbert-pipeline task train --run nightly-42 --set train.max_steps=200
    $ colbert-pipeline task index --shard 0/2 --run nightly-43 --set index.shards=2  # a shard of the corpus
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_commands(commands: argparse._SubParsersAction) -> None:
    task_parser = commands.add_parser(
        "task",
        help="run one stage of one run in a throwaway checkout of its ref (refs/colbert-runs/<run>): "
        "pull its inputs, push its outputs and the ref",
    )
    task_parser.add_argument("stage", help="a stage of dvc.yaml, e.g. prepare or train")
    task_parser.add_argument("--run", required=True, dest="run_id", help="the run's id (names its ref)")
    task_parser.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="the run's Params, e.g. train.max_steps=200 (repeatable; the same for every task of a run)",
    )
    task_parser.add_argument(
        "--shard",
        metavar="I/N",
        help="index only: encode shard I (from 0) of N = index.shards and record it on the run's ref; the "
        "index task then builds from all N",
    )
    task_parser.add_argument(
        "--clone",
        default=".",
        help="the clone whose remotes the run uses (default: the current folder; no clone there: "
        "settings name the remotes)",
    )
    task_parser.set_defaults(handler=task)


def task(args: argparse.Namespace) -> int:
    """Run the stage for the run, record it on the run's ref, print what was done."""
    from pipeline.ops import stateless
    from pipeline.project.params_file import parse_override

    overrides = dict(parse_override(text) for text in args.set or [])
    shard = None
    if args.shard:
        from pipeline.project.layout import parse_shard

        if args.stage != "index":
            raise stateless.TaskRefused(f"--shard {args.shard}: only the index stage's encoding has shards")
        try:
            shard = parse_shard(args.shard)
        except ValueError as error:
            raise stateless.TaskRefused(str(error)) from None
    settings = stateless.TaskSettings.resolve(Path(args.clone))
    if shard is not None:
        from pipeline.ops import shard_task

        result = shard_task.run_shard_task(*shard, args.run_id, overrides, settings)
    else:
        result = stateless.run_task(args.stage, args.run_id, overrides, settings)
    from pipeline.cli.stages import write_result

    # An orchestrator that started this task reads COLBERT_PIPELINE_RESULT_FILE, not stdout.
    write_result({"ok": True, **result.as_dict()})
    print(json.dumps(result.as_dict(), indent=2))
    return 0
