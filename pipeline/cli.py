"""The ``colbert-pipeline`` command line.

One cohesive module: one thin handler per subcommand (the work lives in stages/ and ops/) and their parsers.

Example:
    $ colbert-pipeline prepare                     # one stage, as dvc.yaml runs it, configured by params.yaml
    $ colbert-pipeline train --set train.epochs=2  # with an override, validated like params.yaml
    $ colbert-pipeline validate                    # check params.yaml and print the resolved settings
    $ colbert-pipeline quality --config configs/scifact.yaml  # score systems on SciFact's full test set
    $ colbert-pipeline report                      # reports/quality.md and plots from every scored result
    $ colbert-pipeline demo                        # encode a few texts with the offline model and rerank them
    $ colbert-pipeline search "who wrote Dune?"    # top hits from the registry's champion and its index
    $ colbert-pipeline status                      # the champion: version, metrics, data/model/index hashes
    $ colbert-pipeline reproduce champion --into /tmp/champion   # its run's checkout, pulled and verified
    $ colbert-pipeline experiments                 # DVC experiments: differing params and nDCG@10
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pipeline.project.errors import EXIT_CODES, InputError, classify
from pipeline.project.layout import RESULT_FILE_ENV

# The CLI is offline unless the user says otherwise: the default model ships with the package.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

DEMO_QUERIES = ["how does late interaction score documents?", "what compresses token vectors?"]
DEMO_DOCUMENTS = [
    "ColBERT keeps one vector per token and scores a document by summing, over query tokens, the best match.",
    "PLAID compresses token vectors with centroids and residual quantization to shrink the index.",
    "The weather in the mountains changes quickly in spring.",
]


def demo(args: argparse.Namespace) -> int:
    """Encode the demo texts with a ColBERT model and print each query's ranking."""
    from pipeline import models, rank

    model = models.ColBERT(model_name_or_path=args.model, device=args.device)
    queries_embeddings = model.encode(DEMO_QUERIES, is_query=True, show_progress_bar=True)
    documents_embeddings = model.encode([DEMO_DOCUMENTS] * len(DEMO_QUERIES), is_query=False)
    ids = [list(range(len(DEMO_DOCUMENTS)))] * len(DEMO_QUERIES)
    ranking = rank.rerank(ids, queries_embeddings, documents_embeddings)
    for query, results in zip(DEMO_QUERIES, ranking, strict=True):
        print(f"\nquery: {query}")
        for place, result in enumerate(results, start=1):
            text = DEMO_DOCUMENTS[result["id"]]
            print(f"  {place}. score={result['score']:.3f}  [{result['id']}] {text[:70]}")
    return 0


def _load(args: argparse.Namespace):
    from pipeline.project.config import load_params, parse_override

    overrides = dict(parse_override(text) for text in args.set or [])
    return load_params(args.params, overrides, overlays=args.config or [])


def run_stage(args: argparse.Namespace) -> int:
    """Validate params, then run one stage in this process; print its outputs and write its result file."""
    from pipeline.project.layout import STAGE_IO, Layout

    params = _load(args)
    project = Path(args.params).resolve().parent
    if os.environ.get("DVC_STAGE"):  # run by `dvc repro`: DVC must watch every input this stage reads
        from pipeline.project.config import check_tracked_inputs

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
    params = _load(args)
    print(json.dumps(params.model_dump(mode="json"), indent=2))
    return 0


def summary(args: argparse.Namespace) -> int:
    """Print what the last pipeline run produced: metrics, index, registry decision, how to look further."""
    from pipeline.data.benchmark import PRIMARY_METRIC as PRIMARY
    from pipeline.project.layout import Layout

    project = Path(args.params).resolve().parent
    params = _load(args)
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


def search(args: argparse.Namespace) -> int:
    """Answer one query from a registered model (the champion by default) and print the hits."""
    from pipeline.ops import serving

    params = _load(args)
    project = Path(args.params).resolve().parent
    uri = args.model_uri or serving.default_model_uri(params)
    answer = serving.search(params, project, [args.text], k=args.k, model_uri=uri)
    print(f"{uri}: {args.text}")
    for place, (doc_id, score) in enumerate(zip(answer["ids"][0], answer["scores"][0], strict=True), start=1):
        print(f"  {place:>3}. {doc_id}  score={score:.3f}")
    return 0


def status(args: argparse.Namespace) -> int:
    """Print the registry's champion and challenger: version, metrics, benchmark and lineage hashes."""
    from pipeline.ops import registry

    params = _load(args)
    print(json.dumps(registry.status(params, Path(args.params).resolve().parent), indent=2, default=str))
    return 0


def reproduce(args: argparse.Namespace) -> int:
    """Check out a registered version's run in a new folder, pull its outputs, verify their hashes."""
    from pipeline.ops import reproduce as reproducing
    from pipeline.ops import tracking

    params = _load(args)
    project = Path(args.params).resolve().parent
    report = reproducing.reproduce(
        args.reference,
        Path(args.repo or project),
        Path(args.into),
        model_name=params.register.model_name,
        tracking_uri=tracking.tracking_uri(params, project),
        remote_url=args.remote,
        rerun_stages=reproducing.LINEAGE_STAGES if args.rerun else (),
    )
    print(json.dumps(report, indent=2))
    where = f"{report['ref']} ({report['commit'][:12]})"
    print(f"\n{report['model']} v{report['version']} from {where} in {args.into}:")
    for check in report["checks"]:
        print(
            f"  {check['artifact']:<12} {check['path']:<32} {check['actual']}  identical to its lineage tag"
        )
    for path, same in (report.get("rerun") or {}).items():
        print(f"  re-run: {path:<32} {'bit-identical' if same else 'DIFFERENT from the recorded run'}")
    return 0


def experiments(args: argparse.Namespace) -> int:
    """Print DVC's experiments (``dvc exp show``) as a Markdown table, or a config's ``dvc exp run`` args."""
    from pipeline.ops import experiments as exps

    if args.set_arguments:
        from pipeline.project.config import flatten, parse_override, read_params_file

        # A later config replaces an earlier one's keys, and --set replaces both's (e.g. where a
        # real-data experiment writes its runs).
        overlay: dict[str, Any] = {}
        for config in args.set_arguments:
            overlay.update(flatten(read_params_file(config)))
        overlay.update(parse_override(text) for text in args.set or [])
        print(" ".join(exps.set_arguments(overlay)))
        return 0
    params = _load(args)
    if args.snapshot:
        rows = exps.load_snapshot(Path(args.snapshot))
    else:
        rows = exps.show(Path(args.params).resolve().parent)
    if args.experiment:
        rows = exps.select(rows, args.experiment)
    if args.save:
        saved = Path(args.save)
        kept = exps.load_snapshot(saved) if saved.is_file() else []
        exps.save_snapshot(exps.merged(kept, rows), saved)
    if args.quality:
        from pipeline.project import report

        records = exps.quality_records(rows)
        for folder in args.results or ():  # rows scored outside DVC, e.g. PyLate's (bench/quality_peer.py)
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


def _add_params_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--params", default="params.yaml", help="params file (default: ./params.yaml)")
    parser.add_argument(
        "--config",
        action="append",
        metavar="FILE",
        help="a YAML overlay of params, e.g. configs/scifact.yaml (repeatable, applied in order)",
    )
    parser.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="override a param, e.g. train.epochs=2 (repeatable)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="colbert-pipeline", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True)

    demo_parser = commands.add_parser("demo", help="encode a few texts and print a MaxSim ranking")
    demo_parser.add_argument("--model", default=None, help="model folder or Hub id (default: offline MiniLM)")
    demo_parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: auto)")
    demo_parser.set_defaults(handler=demo)

    from pipeline.project.layout import REPORT_STAGES, STAGES

    for stage in (*STAGES, *REPORT_STAGES):
        stage_parser = commands.add_parser(stage, help=f"run the {stage} stage")
        _add_params_arguments(stage_parser)
        stage_parser.set_defaults(handler=run_stage)
    validate_parser = commands.add_parser(
        "validate", help="check params.yaml and print the resolved settings"
    )
    _add_params_arguments(validate_parser)
    validate_parser.set_defaults(handler=validate)
    summary_parser = commands.add_parser(
        "summary", help="print the last run's metrics, index and registry decision"
    )
    _add_params_arguments(summary_parser)
    summary_parser.set_defaults(handler=summary)
    search_parser = commands.add_parser("search", help="answer a query from the champion model and its index")
    search_parser.add_argument("text", help="the query")
    search_parser.add_argument("--k", type=int, default=None, help="hits to return (default: register.k)")
    search_parser.add_argument(
        "--model-uri",
        default=None,
        help="a registered model (default: models:/<register.model_name>@champion)",
    )
    _add_params_arguments(search_parser)
    search_parser.set_defaults(handler=search)
    status_parser = commands.add_parser("status", help="the champion: version, metrics, data/index hashes")
    _add_params_arguments(status_parser)
    status_parser.set_defaults(handler=status)
    reproduce_parser = commands.add_parser(
        "reproduce", help="check out a model version's run, dvc pull it and verify its lineage hashes"
    )
    reproduce_parser.add_argument("reference", help="a version number or alias (champion), or models:/name/3")
    reproduce_parser.add_argument("--into", required=True, help="a new (or empty) folder for the checkout")
    reproduce_parser.add_argument("--rerun", action="store_true", help="also re-run prepare, train and index")
    reproduce_parser.add_argument(
        "--repo", default=None, help="git repository holding the run refs (default: here)"
    )
    reproduce_parser.add_argument(
        "--remote", default=None, help="DVC remote URL (default: the version's tag)"
    )
    _add_params_arguments(reproduce_parser)
    reproduce_parser.set_defaults(handler=reproduce)
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
    _add_params_arguments(experiments_parser)
    experiments_parser.set_defaults(handler=experiments)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except Exception as error:
        kind = classify(error)
        if kind == "internal":  # a crash: the traceback is what a developer needs
            logging.getLogger("pipeline.cli").exception("colbert-pipeline %s crashed", args.command)
        else:  # bad input or a failing service: one line that names the cause
            label = "error" if kind == "input" else "unavailable"
            print(f"colbert-pipeline {args.command}: {label}: {error}", file=sys.stderr)
        write_result(
            {
                "stage": args.command,
                "ok": False,
                "kind": kind,
                "exit_code": EXIT_CODES[kind],
                "message": f"{type(error).__name__}: {error}",
            }
        )
        return EXIT_CODES[kind]


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
