"""Ask the registry: search the champion, show its status, reproduce a version's run."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pipeline.cli.common import add_params_arguments, load, project_of


def add_commands(commands: argparse._SubParsersAction) -> None:
    search_parser = commands.add_parser(
        "search", help="answer queries from the champion model and its index: ids, scores and texts"
    )
    search_parser.add_argument("text", nargs="+", help="the query (several: one answer each)")
    search_parser.add_argument(
        "-k", "--k", dest="k", type=int, default=None, help="hits to return (default: register.k)"
    )
    search_parser.add_argument(
        "--json",
        action="store_true",
        help='print one JSON array [{"id", "score", "text"}, ...] per query, one per line',
    )
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
    """Answer queries from a registered model (the champion by default) and print the hits.

    Text: per query a header, then per hit its rank, id and score, and under it its text cut to one line.
    ``--json``: per query one line, a JSON array of ``{"id", "score", "text"}`` (``text`` whole, as served;
    ``null`` for a version packed without texts), for scripts.
    """
    from pipeline.ops import serving

    if args.k is not None and args.k < 1:
        raise ValueError(f"-k: must be at least 1, got {args.k}")
    params = load(args)
    project = project_of(args)
    uri = args.model_uri or serving.default_model_uri(params)
    answer = serving.search(params, project, args.text, k=args.k, model_uri=uri)
    for row, query in zip(serving.hits(answer), args.text, strict=True):
        if args.json:
            print(json.dumps(row, ensure_ascii=False))
            continue
        print(f"{uri}: {query}")
        for place, hit in enumerate(row, start=1):
            print(f"  {place:>3}. {hit['id']}  score={hit['score']:.3f}")
            if hit["text"] is not None:
                print(f"       {one_line(hit['text'])}")
    return 0


def one_line(text: str, width: int = 100) -> str:
    """``text`` on one line: whitespace runs collapsed, cut to ``width`` characters with an ellipsis.

    Example:
        >>> one_line("a  long   text", width=8)
        'a long …'
    """
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1].rstrip() + " …"


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
