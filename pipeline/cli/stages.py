"""Run one pipeline stage, check params, and summarise what the last run produced."""

from __future__ import annotations

import argparse
import ast
import importlib
import json
import os
import re
from pathlib import Path
from typing import Any

from pipeline.cli.common import DEFAULT_PARAMS, add_params_arguments, load, params_path, project_of
from pipeline.project.layout import RESULT_FILE_ENV

STAGES_DIR = Path(__file__).resolve().parents[1] / "stages"


def add_commands(commands: argparse._SubParsersAction) -> None:
    from pipeline.project.layout import REPORT_STAGES, STAGES

    for stage in (*STAGES, *REPORT_STAGES):
        purpose, files = stage_help(stage)
        stage_parser = commands.add_parser(
            stage,
            help=purpose,
            description=f"The {stage} stage: {purpose}",
            epilog=files,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        add_params_arguments(stage_parser)
        if stage == "index":
            stage_parser.add_argument(
                "--shard",
                metavar="I/N",
                help="only encode shard I (from 0) of N = index.shards into index-shards/<index.name>/ "
                "(what a stateless shard task runs); the index stage then builds from the shards",
            )
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


def stage_help(stage: str) -> tuple[str, str]:
    """A stage's purpose and the files and params it reads and writes, for its ``--help``.

    Both come from where they are defined, so the help cannot drift: the purpose is the first line of the
    stage module's docstring (read, not imported: a stage imports torch), the files are
    :meth:`~pipeline.project.layout.Layout.stage_files` and the params
    :data:`~pipeline.project.layout.STAGE_PARAMS` (a test checks both against dvc.yaml).
    """
    from pipeline.project.config import Params
    from pipeline.project.layout import STAGE_PARAMS, Layout

    docstring = ast.get_docstring(ast.parse((STAGES_DIR / f"{stage}.py").read_text(encoding="utf-8"))) or ""
    first = docstring.split("\n", 1)[0].replace("``", "")
    purpose = re.sub(rf"^{stage}: ", "", first).rstrip(".")
    layout = Layout(Params(), Path.cwd())
    reads, writes = (", ".join(map(layout.relative, paths)) for paths in layout.stage_files(stage))
    params = ", ".join(STAGE_PARAMS[stage])
    files = [
        f"reads:   {reads or '-'}",
        f"params:  {params} (a change re-runs the stage under dvc repro)" if params else "params:  -",
        f"writes:  {writes or '-'} and an MLflow run",
        f"Paths as the default {DEFAULT_PARAMS} sets them: {layout.relative(layout.inputs)} is prepare.data "
        "(the local inputs); the others follow prepare.output, train.output, index.folder, quality.output.",
    ]
    return purpose, "\n".join(files)


def run_stage(args: argparse.Namespace) -> int:
    """Validate params, then run one stage in this process; print its outputs and write its result file."""
    from pipeline.project.io import mark_stage_started
    from pipeline.project.layout import STAGE_IO, Layout

    mark_stage_started(args.command)  # tests/faults: a kill after this landed inside the stage

    params = load(args)
    project = project_of(args)
    if os.environ.get("DVC_STAGE"):  # run by `dvc repro`: DVC must watch every input this stage reads
        from pipeline.project.params_file import check_tracked_inputs

        check_tracked_inputs(params, project, params_path(args))
    module = importlib.import_module(f"pipeline.stages.{args.command}")
    if getattr(args, "shard", None):
        return encode_shard(module, params, project, args.shard)
    summary = module.run(params, project)
    if not _writes_results():
        return 0  # torchrun's other ranks: rank 0 prints and reports the stage's result
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


def _writes_results() -> bool:
    """Rank 0 under torchrun (``RANK``), every process otherwise."""
    from pipeline.training.distributed import is_main_process

    return is_main_process()


def encode_shard(module: Any, params: Any, project: Path, text: str) -> int:
    """``index --shard I/N``: encode that shard only; print and report the shard's folder."""
    from pipeline.project.config import ConfigError
    from pipeline.project.layout import Layout, parse_shard

    try:
        shard, shards = parse_shard(text)
    except ValueError as error:
        raise ConfigError(str(error)) from None
    summary = module.encode_shard(params, project, shard, shards)
    print(json.dumps({"stage": "index", **summary}, indent=2, default=str))
    folder = Layout(params, project).relative(Path(summary["folder"]))
    write_result({"stage": "index", "ok": True, "outputs": {folder: ""}, "summary": summary})
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
            f"outputs:  dvc push  (to DVC remote {remote.name!r}: {remote.url})"
            if remote
            else "outputs:  not pushed: no DVC remote (dvc remote add -d storage <url>, then dvc push)"
        )
    from pipeline.ops.tracking import tracking_uri

    lines.append(f"MLflow:   mlflow ui --backend-store-uri {tracking_uri(params, project)} --host 127.0.0.1")
    if hint := activation_hint(project):
        lines.append(f"          ({hint})")
    print("\n".join(lines))
    return 0


def activation_hint(project: Path) -> str | None:
    """How to get the commands above on PATH, when this environment's are not (None when they are).

    The commands are printed as a user types them, not as ``.venv/bin/...`` paths; where this interpreter's
    scripts are not what the shell finds (``.venv/bin/colbert-pipeline summary`` without the venv active),
    the line says how to activate it.
    """
    import shutil
    import sys

    scripts = Path(os.path.abspath(sys.executable)).parent  # not resolved: .venv may be a link, say so
    found = shutil.which("mlflow")
    if not (scripts / "activate").is_file() or (found and Path(found).parent.resolve() == scripts.resolve()):
        return None  # not a venv (nothing to activate), or its scripts are already what PATH finds
    try:
        shown = scripts.relative_to(project.resolve())
    except ValueError:
        shown = scripts
    return f"run them in this environment: source {shown / 'activate'}"
