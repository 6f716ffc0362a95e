"""Ask the registry: search the champion, show its status, reproduce a version's run."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pipeline.cli.common import add_params_arguments, load, project_of


def add_commands(commands: argparse._SubParsersAction) -> None:
    search_parser = commands.add_parser("search", help="answer a query from the champion model and its index")
    search_parser.add_argument("text", help="the query")
    search_parser.add_argument("--k", type=int, default=None, help="hits to return (default: register.k)")
    search_parser.add_argument(
        "--model-uri",
        default=None,
        help="a registered model (default: models:/<register.model_name>@champion)",
    )
    add_params_arguments(search_parser)
    search_parser.set_defaults(handler=search)
    status_parser = commands.add_parser("status", help="the champion: version, metrics, data/index hashes")
    add_params_arguments(status_parser)
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
    add_params_arguments(reproduce_parser)
    reproduce_parser.set_defaults(handler=reproduce)


def search(args: argparse.Namespace) -> int:
    """Answer one query from a registered model (the champion by default) and print the hits."""
    from pipeline.ops import serving

    params = load(args)
    project = project_of(args)
    uri = args.model_uri or serving.default_model_uri(params)
    answer = serving.search(params, project, [args.text], k=args.k, model_uri=uri)
    print(f"{uri}: {args.text}")
    for place, (doc_id, score) in enumerate(zip(answer["ids"][0], answer["scores"][0], strict=True), start=1):
        print(f"  {place:>3}. {doc_id}  score={score:.3f}")
    return 0


def status(args: argparse.Namespace) -> int:
    """Print the registry's champion and challenger: version, metrics, benchmark and lineage hashes."""
    from pipeline.ops import registry

    params = load(args)
    print(json.dumps(registry.status(params, project_of(args)), indent=2, default=str))
    return 0


def reproduce(args: argparse.Namespace) -> int:
    """Check out a registered version's run in a new folder, pull its outputs, verify their hashes."""
    from pipeline.ops import reproduce as reproducing
    from pipeline.ops import tracking

    params = load(args)
    project = project_of(args)
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
