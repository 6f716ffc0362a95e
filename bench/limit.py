"""``python -m bench.limit``: how close encoding and exact scoring come to what this machine can do.

The ceilings are measured in the same process, with the same torch threads: the best GFLOP/s of a square
``torch.mm`` in float32 and in bfloat16, and the read bandwidth of summing a tensor far larger than the
caches. The work measured against them:

- **Encoding** ``--documents`` real SciFact documents with :class:`pipeline.models.ColBERT` (batch 32) in
  fp32 and in bf16 (``encode_precision``). Its FLOPs are counted by torch's ``FlopCounterMode`` on one pass
  with eager attention (the default SDPA kernel is not counted by it; the arithmetic is the same, padding
  included), and its time is a second pass as users run it.
- **Exact MaxSim** (:func:`pipeline.indexes.indexing.exact_search`) of ``--queries`` queries over those
  documents, batched (compute-bound: useful FLOPs, ``2 x query tokens x document tokens x dim``, against the
  fp32 matmul ceiling) and one query at a time (memory-bound: the document embeddings' bytes read per query
  against the read bandwidth).

Run it on a quiet machine (about 3 minutes on 2 cores):
    .venv/bin/python -m bench.limit --record bench/records/machine_limit.json
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

from bench.common import command_line, environment, setup_logging, write_record

BENCHMARK = "machine_limit"


def best_seconds(work: Callable[[], Any], repeats: int) -> float:
    """The fastest of ``repeats`` timed calls of ``work`` (after one untimed call)."""
    work()
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        work()
        best = min(best, time.perf_counter() - started)
    return best


def matmul_gflops(dtype: str, size: int = 2048, repeats: int = 5) -> float:
    """Best GFLOP/s of ``size`` x ``size`` matrix products in ``dtype`` (``float32`` or ``bfloat16``)."""
    import torch

    generator = torch.Generator().manual_seed(0)
    a, b = (torch.randn(size, size, generator=generator).to(getattr(torch, dtype)) for _ in range(2))
    return 2 * size**3 / best_seconds(lambda: torch.mm(a, b), repeats) / 1e9


def read_gbps(gib: float = 1.0, repeats: int = 5) -> float:
    """Best GB/s reading a ``gib`` GiB float32 tensor (a sum: one pass over memory, no write)."""
    import torch

    data = torch.ones(int(gib * 2**30 / 4))
    return data.numel() * 4 / best_seconds(lambda: data.sum(), repeats) / 1e9


def encode_rate(texts: list[str], precision: str) -> dict[str, Any]:
    """Counted FLOPs of encoding ``texts`` at ``precision`` and the time of the same encode at defaults."""
    from torch.utils.flop_counter import FlopCounterMode

    from pipeline import models

    def encoder(**extra: Any) -> Any:
        return models.ColBERT(device="cpu", encode_precision=precision, **extra)

    eager = encoder(model_kwargs={"attn_implementation": "eager"})  # loading computes too: not counted
    with FlopCounterMode(display=False) as counter:
        eager.encode(texts, is_query=False, batch_size=32, show_progress_bar=False)
    flops = counter.get_total_flops()
    model = encoder()
    seconds = best_seconds(lambda: model.encode(texts, is_query=False, batch_size=32), repeats=1)
    return {"flops": flops, "seconds": seconds, "gflops": flops / seconds / 1e9}


def exact_rates(documents: list[Any], queries: list[Any]) -> dict[str, Any]:
    """Exact MaxSim of every query over every document: batched (FLOP rate) and one query at a time (bytes
    of document embeddings read per second)."""
    from pipeline.indexes.indexing import exact_search

    ids = list(range(len(documents)))
    document_tokens = sum(len(d) for d in documents)
    dim = documents[0].shape[1]
    useful = 2 * sum(len(q) for q in queries) * document_tokens * dim
    batched = best_seconds(lambda: exact_search(queries, documents, ids, k=10), repeats=2)
    single = best_seconds(lambda: [exact_search([q], documents, ids, k=10) for q in queries], repeats=1)
    per_query = single / len(queries)
    return {
        "document_tokens": document_tokens,
        "batched_seconds": batched,
        "batched_gflops": useful / batched / 1e9,
        "single_query_ms": per_query * 1e3,
        "single_query_gbps": document_tokens * dim * 4 / per_query / 1e9,
    }


def measure(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from bench.index.corpus import read_corpus, read_queries
    from pipeline import models

    torch.set_num_threads(args.threads)
    where = environment()  # before the work: its load average is the machine's, not this run's
    ceilings = {
        "matmul_gflops": {dtype: matmul_gflops(dtype) for dtype in ("float32", "bfloat16")},
        "read_gbps": read_gbps(),
    }
    _, texts = read_corpus("scifact", args.documents)
    encoding = {precision: encode_rate(texts, precision) for precision in ("fp32", "bf16")}
    model = models.ColBERT(device="cpu", encode_precision="fp32")
    documents = model.encode(texts, is_query=False, batch_size=32, show_progress_bar=False)
    queries = model.encode(read_queries("scifact", args.queries), is_query=True, batch_size=32)
    return {
        "benchmark": BENCHMARK,
        "command": command_line("bench.limit"),
        "environment": where,
        "documents": len(texts),
        "queries": len(queries),
        "ceilings": ceilings,
        "encoding": encoding,
        "exact": exact_rates(documents, queries),
    }


def _percent(value: float, ceiling: float) -> str:
    return f"{100 * value / ceiling:.0f}%"


def render_limit(report: dict[str, Any]) -> str:
    """The record as Markdown: each measured rate beside the ceiling it is held to, as a percentage."""
    from bench.render import environment_line

    ceilings, encoding, exact = report["ceilings"], report["encoding"], report["exact"]
    # The same useful FLOPs per query as the batched row, over one query's time.
    per_query_flops = exact["batched_gflops"] * exact["batched_seconds"] / report["queries"]
    single_gflops = per_query_flops / (exact["single_query_ms"] / 1e3)
    matmul = ceilings["matmul_gflops"]
    balance = matmul["float32"] / ceilings["read_gbps"]  # FLOPs the bandwidth feeds per byte
    docs = f"{report['documents']:,} SciFact documents"
    rows = [
        (
            f"encode {docs}, fp32",
            f"{encoding['fp32']['gflops']:.1f} GFLOP/s",
            "fp32 matmul",
            matmul["float32"],
        ),
        (
            f"encode {docs}, bf16",
            f"{encoding['bf16']['gflops']:.1f} GFLOP/s",
            "bf16 matmul",
            matmul["bfloat16"],
        ),
        (
            f"exact MaxSim, {report['queries']} queries at once, fp32",
            f"{exact['batched_gflops']:.1f} GFLOP/s",
            "fp32 matmul",
            matmul["float32"],
        ),
        (
            "exact MaxSim, one query at a time, fp32",
            f"{single_gflops:.1f} GFLOP/s",
            "fp32 matmul",
            matmul["float32"],
        ),
        (
            "exact MaxSim, one query at a time, fp32",
            f"{exact['single_query_gbps']:.1f} GB/s",
            "read bandwidth",
            ceilings["read_gbps"],
        ),
    ]
    values = [
        encoding["fp32"]["gflops"],
        encoding["bf16"]["gflops"],
        exact["batched_gflops"],
        single_gflops,
        exact["single_query_gbps"],
    ]
    lines = [
        environment_line(report),
        "",
        f"Ceilings measured in the same run: fp32 matmul {matmul['float32']:.1f} GFLOP/s, bf16 matmul "
        f"{matmul['bfloat16']:.1f} GFLOP/s, read bandwidth {ceilings['read_gbps']:.1f} GB/s.",
        "",
        "| work | achieved | held to | share of it |",
        "|---|---|---|---|",
    ]
    for (work, achieved, held_to, ceiling), value in zip(rows, values, strict=True):
        unit = "GB/s" if held_to == "read bandwidth" else "GFLOP/s"
        lines.append(
            f"| {work} | {achieved} | {held_to} ({ceiling:.1f} {unit}) | {_percent(value, ceiling)} |"
        )
    lines += [
        "",
        f"One query at a time takes {exact['single_query_ms']:.1f} ms over {exact['document_tokens']:,} "
        "document tokens. With 32 query tokens it does 64 FLOPs per 4-byte document value read "
        f"(16 per byte), more than this machine's {balance:.1f} FLOPs per byte of bandwidth: the matmul "
        "rate, not the bandwidth, is its ceiling.",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--documents", type=int, default=1000, help="first N SciFact documents")
    parser.add_argument("--queries", type=int, default=100, help="first N SciFact test queries")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (the records' other runs: 2)")
    parser.add_argument("--record", default=None, help="write the record here (to commit)")
    args = parser.parse_args()
    setup_logging()
    record = measure(args)
    if args.record:
        write_record(args.record, record)
    print(render_limit(record))


if __name__ == "__main__":
    main()
