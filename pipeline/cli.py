"""The ``colbert-pipeline`` command line.

Example:
    $ colbert-pipeline demo          # encode a few texts with the offline model and rerank them
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence

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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="colbert-pipeline", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True)

    demo_parser = commands.add_parser("demo", help="encode a few texts and print a MaxSim ranking")
    demo_parser.add_argument("--model", default=None, help="model folder or Hub id (default: offline MiniLM)")
    demo_parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: auto)")
    demo_parser.set_defaults(handler=demo)
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
    except (ValueError, OSError) as error:  # bad input: one line, no traceback
        print(f"colbert-pipeline {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
