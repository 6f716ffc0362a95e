"""The ``colbert-pipeline`` command line.

Example:
    $ colbert-pipeline prepare                     # one stage, as dvc.yaml runs it, configured by params.yaml
    $ colbert-pipeline train --set train.epochs=2  # with an override, validated like params.yaml
    $ colbert-pipeline validate                    # check params.yaml and print the resolved settings
    $ colbert-pipeline quality --config configs/scifact.yaml  # score systems on SciFact's full test set
    $ colbert-pipeline report                      # reports/quality.md and plots from every scored result
    $ colbert-pipeline demo                        # encode a few texts with the offline model and rerank them
    $ colbert-pipeline search "who wrote Dune?"    # top hits from the registry's champion and its index
    $ colbert-pipeline status                      # the champion: version, metrics, data/model/index hashes
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
    from pipeline.config import load_params, parse_override

    overrides = dict(parse_override(text) for text in args.set or [])
    return load_params(args.params, overrides, overlays=args.config or [])


def run_stage(args: argparse.Namespace) -> int:
    """Validate params, then run one stage in this process and print its outputs."""
    params = _load(args)
    module = importlib.import_module(f"pipeline.stages.{args.command}")
    outputs = module.run(params, Path(args.params).resolve().parent)
    print(json.dumps({"stage": args.command, **outputs}, indent=2, default=str))
    return 0


def validate(args: argparse.Namespace) -> int:
    """Validate params.yaml (and overrides) and print the resolved settings."""
    params = _load(args)
    print(json.dumps(params.model_dump(mode="json"), indent=2))
    return 0


def summary(args: argparse.Namespace) -> int:
    """Print what the last pipeline run produced: metrics, index, registry decision, how to look further."""
    from pipeline.stages.evaluate import PRIMARY

    project = Path(args.params).resolve().parent
    params = _load(args)
    metrics = project / "metrics"

    def read(name: str) -> dict:
        path = metrics / name
        return json.loads(path.read_text()) if path.is_file() else {}

    base, tuned, index, registry = (
        read(n) for n in ("baseline.json", "eval.json", "index.json", "registry.json")
    )
    lines = ["", "colbert-pipeline summary", "========================"]
    benchmark_keys = sorted(k for k in tuned if k.endswith("_MaxSim_ndcg@10") and k != PRIMARY)
    for key in [*benchmark_keys, PRIMARY]:
        if key in tuned:
            before = base.get(key)
            shown = f"{before:.4f}" if isinstance(before, float) else "n/a"
            lines.append(f"{key:<40} base {shown}  ->  fine-tuned {tuned[key]:.4f}")
    lines.append(f"model:    {project / params.train.output}")
    if index:
        where = project / params.index.folder / params.index.name
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
    from pipeline.tracking import tracking_uri

    lines.append(
        f"MLflow:   .venv/bin/mlflow ui --backend-store-uri {tracking_uri(params, project)} --host 127.0.0.1"
    )
    print("\n".join(lines))
    return 0


def search(args: argparse.Namespace) -> int:
    """Answer one query from a registered model (the champion by default) and print the hits."""
    from pipeline import serving

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
    from pipeline import registry

    params = _load(args)
    print(json.dumps(registry.status(params, Path(args.params).resolve().parent), indent=2, default=str))
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

    from pipeline.stages import REPORT_STAGES, STAGES

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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    handler: Callable[[argparse.Namespace], int] = args.handler
    from pipeline.tracking import TrackingUnavailableError

    try:
        return handler(args)
    except TrackingUnavailableError as error:  # transient: orchestrators retry it (not an "error:" line)
        print(f"colbert-pipeline {args.command}: tracking server unavailable: {error}", file=sys.stderr)
        return 3
    except (ValueError, OSError) as error:  # bad input: one line, no traceback
        print(f"colbert-pipeline {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
