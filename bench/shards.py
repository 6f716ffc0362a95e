"""``python -m bench.shards``: an index built from shards of its corpus's encoding against an unsharded one.

What ``index.shards`` claims (docs/stateless.md): the index built from N shards holds the same documents as
the unsharded build, and its recall@10 against exact MaxSim is within 0.005 of the unsharded build's. Both
builds take the index stage's path through the library, on a BEIR corpus's first ``--max-docs`` documents:

- the offline MiniLM ColBERT (seeded projection) encodes in the precision the index stage resolves for
  ``auto``, ``--chunk-size`` documents at a time (the index stage's ``index.chunk_size``);
- unsharded: :func:`pipeline.indexes.indexing.index_corpus` into a PLAID at the index stage's settings;
- sharded: each of ``--shards`` contiguous slices encoded on its own and written as a shard
  (:func:`pipeline.indexes.shards.write_shard`, as ``colbert-pipeline index --shard I/N`` writes it), then
  :func:`pipeline.indexes.shards.index_shards` into another PLAID at the same settings.

Recall is PLAID's own search at several settings (its defaults first; no tuned settings), on the dataset's
test queries, against exact MaxSim over the unsharded encoding (every document scored).

Example:
    $ python -m bench.shards --dataset scifact --max-docs 1000 --record bench/records/index_shards.json
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.common import command_line, environment, write_record
from bench.index.corpus import read_corpus, read_queries

logger = logging.getLogger("bench.shards")

#: PLAID search settings measured (n_ivf_probe, n_full_scores): its defaults, then two far from exact.
SEARCH_SETTINGS = ((8, 8192), (2, 256), (1, 32))


def encode_chunks(
    model: Any, ids: list[str], texts: list[str], start: int, stop: int, chunk_size: int, batch_size: int
) -> Iterator[tuple[list[str], list[Any]]]:
    """The documents ``[start, stop)`` encoded ``chunk_size`` at a time, as float32 arrays."""
    from pipeline.models import as_numpy

    for first in range(start, stop, chunk_size):
        last = min(first + chunk_size, stop)
        encoded = model.encode(
            texts[first:last], is_query=False, batch_size=batch_size, show_progress_bar=False
        )
        yield ids[first:last], as_numpy(encoded)


def plaid(folder: Path, name: str, **search: int) -> Any:
    """A PLAID at the index stage's default build settings (``search``: explicit search settings)."""
    from pipeline import indexes
    from pipeline.project.config import Params

    options = Params().index.plaid_options()
    return indexes.PLAID(
        index_folder=str(folder), index_name=name, device="cpu", show_progress=False, **options, **search
    )


def build_both(model: Any, ids: list[str], texts: list[str], scratch: Path, args: Any) -> dict[str, Any]:
    """Build the unsharded index and the one from ``args.shards`` shards; timings and the embeddings."""
    from pipeline.indexes import shards
    from pipeline.indexes.indexing import index_corpus

    embeddings: list[Any] = []
    started = time.perf_counter()
    index_corpus(
        model,
        texts,
        ids,
        plaid(scratch, "unsharded"),
        chunk_size=args.chunk_size,
        batch_size=args.batch_size,
        show_progress=False,
        on_chunk=lambda _, chunk: embeddings.extend(chunk),
    )
    unsharded = time.perf_counter() - started
    folders, encode_seconds = [], []
    for shard in range(args.shards):  # one worker each in a stateless run; one after the other here
        start, stop = shards.shard_bounds(len(ids), shard, args.shards)
        started = time.perf_counter()
        chunks = encode_chunks(model, ids, texts, start, stop, args.chunk_size, args.batch_size)
        shards.write_shard(scratch / f"shard-{shard}", chunks, {"shard": shard, "shards": args.shards})
        encode_seconds.append(round(time.perf_counter() - started, 2))
        folders.append(scratch / f"shard-{shard}")
    started = time.perf_counter()
    shards.index_shards(folders, plaid(scratch, "sharded"), chunk_size=args.chunk_size, show_progress=False)
    return {
        "embeddings": embeddings,
        "seconds": {
            "unsharded_encode_and_build": round(unsharded, 2),
            "shards_encode": encode_seconds,
            "build_from_shards": round(time.perf_counter() - started, 2),
        },
    }


def measure(args: argparse.Namespace, scratch: Path) -> dict[str, Any]:
    """Both builds and their recall at every setting of :data:`SEARCH_SETTINGS`."""
    import torch

    from pipeline import models
    from pipeline.indexes.indexing import exact_search, recall_at_k
    from pipeline.models.precision import resolve_precision

    torch.manual_seed(0)
    model = models.ColBERT(device="cpu")
    model.encode_precision = resolve_precision(args.precision, "cpu")  # as the index stage encodes
    ids, texts = read_corpus(args.dataset, args.max_docs)
    queries = model.encode(
        read_queries(args.dataset, args.max_queries), is_query=True, show_progress_bar=False
    )
    built = build_both(model, ids, texts, scratch, args)
    reference = exact_search(queries, built["embeddings"], ids, k=10)
    rows, same = [], True
    for probe, full in SEARCH_SETTINGS:
        row: dict[str, Any] = {"n_ivf_probe": probe, "n_full_scores": full}
        for name in ("unsharded", "sharded"):
            index = plaid(scratch, name, n_ivf_probe=probe, n_full_scores=full)
            same = same and list(index.documents_ids) == ids
            row[f"recall_{name}"] = round(recall_at_k(index.search(queries, k=10), reference, k=10), 4)
        row["recall_difference"] = round(row["recall_sharded"] - row["recall_unsharded"], 4)
        rows.append(row)
        logger.info("recall@10 at %s", row)
    return {
        "dataset": args.dataset,
        "documents": len(ids),
        "queries": len(queries),
        "shards": args.shards,
        "chunk_size": args.chunk_size,
        "precision": model.encode_precision,
        "same_documents_in_order": same,
        "seconds": built["seconds"],
        "recall": rows,
    }


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="scifact")
    parser.add_argument("--max-docs", type=int, default=1000)
    parser.add_argument("--max-queries", type=int, default=300)
    parser.add_argument("--shards", type=int, default=2)
    parser.add_argument("--chunk-size", type=int, default=2000, help="index.chunk_size (its default: 2000)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    parser.add_argument(
        "--scratch", type=Path, help="where the indexes and shards go (default: a temp folder)"
    )
    parser.add_argument("--record", type=Path, help="write the record here (JSON)")
    return parser


def main() -> None:
    args = parser().parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.shards < 2:
        parser().error("--shards must be at least 2")
    if args.scratch:
        args.scratch.mkdir(parents=True, exist_ok=True)
    measured_in = environment()  # the load at the start, as the index records name it
    with tempfile.TemporaryDirectory(prefix="bench-shards-", dir=args.scratch) as scratch:
        result = measure(args, Path(scratch))
    record = {"environment": measured_in, "command": command_line("bench.shards"), "shards": result}
    if args.record:
        write_record(args.record, record)
    from bench.render import render

    print(render(record))


if __name__ == "__main__":
    main()
