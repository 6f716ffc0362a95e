"""DVC experiments as Markdown tables (and a config's ``dvc exp run`` arguments)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from pipeline.cli.common import add_params_arguments, load, project_of
from pipeline.project.errors import InputError


def add_commands(commands: argparse._SubParsersAction) -> None:
    experiments_parser = commands.add_parser(
        "experiments", help="DVC experiments as a Markdown table of differing params and metrics"
    )
    experiments_parser.add_argument(
        "--metric", action="append", help="a metrics key, e.g. eval.NanoBEIR_mean_MaxSim_ndcg@10 (repeatable)"
    )
    experiments_parser.add_argument(
        "--param", action="append", help="a params key to show (default: those that differ)"
    )
    experiments_parser.add_argument(
        "--experiment", action="append", help="only this experiment, in this order (repeatable)"
    )
    experiments_parser.add_argument(
        "--save",
        metavar="FILE",
        help="also add the rows to FILE, JSON to commit beside a README table (a row of the same "
        "experiment name is replaced, other rows kept)",
    )
    experiments_parser.add_argument(
        "--snapshot", metavar="FILE", help="read the rows from a --save file instead of `dvc exp show`"
    )
    experiments_parser.add_argument(
        "--readme",
        metavar="FILE",
        help="also put the table between <!-- experiments:begin --> and <!-- experiments:end --> in FILE",
    )
    experiments_parser.add_argument(
        "--quality",
        action="store_true",
        help="render the quality stage's full-test-set scores of the experiments (one row per system and "
        "retrieval) instead; with --readme, between <!-- quality-experiments:begin/end -->",
    )
    experiments_parser.add_argument(
        "--results",
        action="append",
        metavar="FOLDER",
        help="with --quality: add the result records under FOLDER/<dataset>/ (e.g. PyLate's rows)",
    )
    experiments_parser.add_argument(
        "--set-arguments",
        nargs="+",
        metavar="CONFIG",
        help="print `dvc exp run -S ...` arguments for configs/*.yaml overlays (a later one wins)",
    )
    add_params_arguments(experiments_parser)
    experiments_parser.set_defaults(handler=experiments)


def experiments(args: argparse.Namespace) -> int:
    """Print DVC's experiments (``dvc exp show``) as a Markdown table, or a config's ``dvc exp run`` args."""
    from pipeline.ops import experiments as exps

    if args.set_arguments:
        from pipeline.project.params_file import flatten, parse_override, read_params_file

        # A later config replaces an earlier one's keys, and --set replaces both's (e.g. where a
        # real-data experiment writes its runs).
        overlay: dict[str, Any] = {}
        for config in args.set_arguments:
            overlay.update(flatten(read_params_file(config)))
        overlay.update(parse_override(text) for text in args.set or [])
        print(" ".join(exps.set_arguments(overlay)))
        return 0
    params = load(args)
    rows = exps.load_snapshot(Path(args.snapshot)) if args.snapshot else exps.show(project_of(args))
    if args.experiment:
        rows = exps.select(rows, args.experiment)
    if args.save:
        saved = Path(args.save)
        kept = exps.load_snapshot(saved) if saved.is_file() else []
        exps.save_snapshot(exps.merged(kept, rows), saved)
    if args.quality:
        from pipeline.project import report

        records = exps.quality_records(rows)
        for folder in args.results or ():  # rows scored outside DVC, e.g. PyLate's (bench/records/peer/runs)
            records += report.load_results(folder)
        if not records:
            raise InputError("no quality scores: none of these experiments ran the quality stage")
        table = report.markdown_table(report.in_report_order(records))
        markers = (exps.QUALITY_BEGIN, exps.QUALITY_END)
    else:
        metrics = args.metric or exps.default_metrics(rows, f"eval.{params.register.metric}")
        table = exps.experiment_table(rows, metrics, args.param or ())
        markers = (exps.README_BEGIN, exps.README_END)
    if args.readme:
        from pipeline.project.io import replace_between_markers

        replace_between_markers(args.readme, *markers, table)
    print(table)
    return 0
