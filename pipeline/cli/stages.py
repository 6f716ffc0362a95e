"""Run one pipeline stage, check params, and summarise what the last run produced."""

from __future__ import annotations

import argparse
import importlib
import json
import os
from pathlib import Path

from pipeline.cli.common import add_params_arguments, load, project_of
from pipeline.project.layout import RESULT_FILE_ENV


def add_commands(commands: argparse._SubParsersAction) -> None:
    from pipeline.project.layout import REPORT_STAGES, STAGES

    for stage in (*STAGES, *REPORT_STAGES):
        stage_parser = commands.add_parser(stage, help=f"run the {stage} stage")
        add_params_arguments(stage_parser)
        stage_parser.set_defaults(handler=run_stage)
    validate_parser = commands.add_parser(
        "validate", help="check params.yaml and print the resolved settings"
    )
    add_params_arguments(validate_parser)
    validate_parser.set_defaults(handler=validate)
    summary_parser = commands.add_parser(
        "summary", help="print the last run's metrics, index and registry decision"
    )
    add_params_arguments(summary_parser)
    summary_parser.set_defaults(handler=summary)


def run_stage(args: argparse.Namespace) -> int:
    """Validate params, then run one stage in this process; print its outputs and write its result file."""
    from pipeline.project.io import mark_stage_started
    from pipeline.project.layout import STAGE_IO, Layout

    mark_stage_started(args.command)  # tests/faults: a kill after this landed inside the stage

    params = load(args)
    project = project_of(args)
    if os.environ.get("DVC_STAGE"):  # run by `dvc repro`: DVC must watch every input this stage reads
        from pipeline.project.params_file import check_tracked_inputs

        check_tracked_inputs(params, project, args.params)
    module = importlib.import_module(f"pipeline.stages.{args.command}")
    summary = module.run(params, project)
    print(json.dumps({"stage": args.command, **summary}, indent=2, default=str))
    layout = Layout(params, project)
    produced = STAGE_IO.get(args.command, ((), ()))[1]
    write_result(
        {
            "stage": args.command,
            "ok": True,
            "outputs": {layout.relative(layout.artifacts()[name]): "" for name in produced},
            "mlflow_run_id": summary.get("mlflow_run_id"),
            "summary": summary,
        }
    )
    return 0


def write_result(result: dict) -> None:
    """Write the stage's result where the orchestrator asked (``COLBERT_PIPELINE_RESULT_FILE``), atomically.

    This file, not the printed output, is how a stage tells the process that started it what happened.
    """
    from pipeline.project.io import atomic_write_text

    path = os.environ.get(RESULT_FILE_ENV)
    if path:
        atomic_write_text(path, json.dumps(result, indent=2, default=str))


def validate(args: argparse.Namespace) -> int:
    """Validate params.yaml (and overrides) and print the resolved settings."""
    params = load(args)
    print(json.dumps(params.model_dump(mode="json"), indent=2))
    return 0


def summary(args: argparse.Namespace) -> int:
    """Print what the last pipeline run produced: metrics, index, registry decision, how to look further."""
    from pipeline.data.benchmark import PRIMARY_METRIC as PRIMARY
    from pipeline.project.layout import Layout

    project = project_of(args)
    params = load(args)
    layout = Layout(params, project)

    def read(path: Path) -> dict:
        return json.loads(path.read_text()) if path.is_file() else {}

    base, tuned, index, registry = (
        read(path)
        for path in (
            layout.baseline_metrics,
            layout.eval_metrics,
            layout.index_metrics,
            layout.registry_decision,
        )
    )
    lines = ["", "colbert-pipeline summary", "========================"]
    benchmark_keys = sorted(k for k in tuned if k.endswith("_MaxSim_ndcg@10") and k != PRIMARY)
    for key in [*benchmark_keys, PRIMARY]:
        if key in tuned:
            before = base.get(key)
            shown = f"{before:.4f}" if isinstance(before, float) else "n/a"
            lines.append(f"{key:<40} base {shown}  ->  fine-tuned {tuned[key]:.4f}")
    lines.append(f"model:    {layout.model}")
    if index:
        where = layout.index
        size = f"{index['documents']} documents, {index['tokens']} tokens, {index['bytes']:,} bytes"
        lines.append(f"index:    {where} ({size})")
        if search := index.get("search"):
            lines.append(
                f"search:   {search['description']}: recall@10 {search['recall@10']} vs exact MaxSim "
                f"(target {search['target']}), {search['qps']} QPS on {search['probe_queries']} queries"
            )
    if registry:
        verdict = "promoted to champion" if registry.get("promoted") else "kept the current champion"
        name = registry.get("model_name", params.register.model_name)
        lines.append(f"registry: {name} version {registry.get('version')}: {verdict}")
        if registry.get("reason"):
            lines.append(f"          ({registry['reason']})")
    if (project / ".dvc").is_dir():
        from pipeline.ops.versioning import find_remote

        remote = find_remote(project)
        lines.append(
            f"outputs:  .venv/bin/dvc push  (to DVC remote {remote.name!r}: {remote.url})"
            if remote
            else "outputs:  not pushed: no DVC remote (dvc remote add -d storage <url>, then dvc push)"
        )
    from pipeline.ops.tracking import tracking_uri

    lines.append(
        f"MLflow:   .venv/bin/mlflow ui --backend-store-uri {tracking_uri(params, project)} --host 127.0.0.1"
    )
    print("\n".join(lines))
    return 0
