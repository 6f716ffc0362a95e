"""Tools: a demo ranking with the offline model, and ``dvc.yaml``'s code dependencies."""

from __future__ import annotations

import argparse
from pathlib import Path

DEMO_QUERIES = ["how does late interaction score documents?", "what compresses token vectors?"]
DEMO_DOCUMENTS = [
    "ColBERT keeps one vector per token and scores a document by summing, over query tokens, the best match.",
    "PLAID compresses token vectors with centroids and residual quantization to shrink the index.",
    "The weather in the mountains changes quickly in spring.",
]


def add_commands(commands: argparse._SubParsersAction) -> None:
    demo_parser = commands.add_parser("demo", help="encode a few texts and print a MaxSim ranking")
    demo_parser.add_argument("--model", default=None, help="model folder or Hub id (default: offline MiniLM)")
    demo_parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: auto)")
    demo_parser.set_defaults(handler=demo)
    deps_parser = commands.add_parser(
        "dvc-deps", help="rewrite each dvc.yaml stage's code deps as the files its process imports"
    )
    deps_parser.add_argument("--project", default=".", help="the project folder (default: .)")
    deps_parser.add_argument(
        "--check", action="store_true", help="change nothing; exit 1 when dvc.yaml is not current"
    )
    deps_parser.set_defaults(handler=dvc_deps)


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


def dvc_deps(args: argparse.Namespace) -> int:
    """Rewrite (or with ``--check`` compare) ``dvc.yaml``'s code deps against the package's imports."""
    from pipeline.project.codedeps import sync_dvc_yaml

    current = sync_dvc_yaml(Path(args.project), check=args.check)
    where = Path(args.project) / "dvc.yaml"
    if current:
        print(f"{where}: every stage's code deps are current")
        return 0
    if args.check:
        print(f"{where}: code deps are stale; run `colbert-pipeline dvc-deps` to rewrite them")
        return 1
    print(f"{where}: code deps rewritten")
    return 0
