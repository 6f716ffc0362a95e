"""What int8 dynamic quantization (CPU) or half precision (GPU) of the encoder buys in speed and costs in
nDCG@10, on a real test set.

Encodes a ``../shared/data`` corpus and its judged test queries with the offline MiniLM ColBERT as it is
(float32, the baseline) and with torch's dynamic int8 quantization (per-channel weights, activations
quantized on the fly) of the transformer's linear layers: all of them, or only the feed-forward ones. The
ColBERT projection stays float32. Each variant's documents are timed (docs/s, same process, one after the
other), then retrieved by exact MaxSim (top 100) and scored with trec_eval's nDCG@10 and recall@100 — with the
variant's own query embeddings, and with float32 queries (an index encoded in int8, searched by a float32
model). The issue's bar for an encoding backend is nDCG@10 within 0.005 of float32 on SciFact's test set.
On a GPU (``--device cuda --variants float32 float16 bfloat16``) the same table compares half precision,
how a GPU encodes; int8 dynamic quantization is a CPU kernel.

Usage (about 15 minutes on 2 cores for SciFact; the speeds want a quiet machine, the nDCG does not):
    .venv/bin/python -m bench.index.precision --record bench/records/quantized_encode.json
    .venv/bin/python -m bench.index.precision --max-docs 200   # quick look
    python3 -m bench.index.precision --device cuda --variants float32 float16 bfloat16   # on a GPU
    # float32 against bfloat16 autocast (index.precision: bf16) on this CPU:
    .venv/bin/python -m bench.index.precision --variants float32 "bfloat16 autocast" \
        --record bench/records/encode_precision_cpu.json
    # one text alone vs in a batch of 32 (seconds), added to the record:
    .venv/bin/python -m bench.index.precision --batch-dependence --record bench/records/quantized_encode.json
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path
from typing import Any

from bench.common import DATA, command_line, environment, write_record
from bench.index.corpus import as_float32, read_corpus
from bench.index.encode import timed_encode
from bench.render import render_precision

#: name -> which of the transformer's ``nn.Linear`` layers run in int8 (None: none, the float32 baseline),
#: the half precision the whole model is cast to, or ``autocast``: the float32 model encoding under
#: ``pipeline.models.precision.encoding_precision("bf16")``, what ``index.precision: bf16`` does.
VARIANTS: dict[str, str | None] = {
    "float32": None,
    "int8, every linear layer": "all",
    "int8, feed-forward layers only": "feed-forward",
    "float16": "float16",
    "bfloat16": "bfloat16",
    "bfloat16 autocast": "autocast",
}
#: What runs without ``--variants`` (the CPU comparison this benchmark was written for).
CPU_VARIANTS = ("float32", "int8, every linear layer", "int8, feed-forward layers only")


def _selected(name: str, which: str) -> bool:
    """Whether the linear layer ``name`` (e.g. ``encoder.layer.0.intermediate.dense``) is in ``which``."""
    feed_forward = name.endswith("intermediate.dense") or (
        name.endswith("output.dense") and "attention" not in name
    )
    return which == "all" or feed_forward


def quantized(model: Any, which: str | None) -> Any:
    """A copy of ``model`` whose transformer linear layers in ``which`` run in dynamic int8 (per channel),
    or, for ``which`` ``float16`` / ``bfloat16``, all of whose weights are in that precision."""
    import torch
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    if which in (None, "autocast"):
        return model  # the same weights; autocast's encode calls run under autocast
    copied = copy.deepcopy(model)
    if which in ("float16", "bfloat16"):
        return copied.to(getattr(torch, which))
    names = [
        name
        for name, module in copied[0].named_modules()
        if isinstance(module, torch.nn.Linear) and _selected(name, which)
    ]
    copied[0] = quantize_dynamic(
        copied[0], dict.fromkeys(names, per_channel_dynamic_qconfig), dtype=torch.qint8
    )
    return copied


def _encode_variants(
    base: Any, variants: tuple[str, ...], texts: list[str], queries: list[str], batch_size: int, device: str
) -> tuple[dict[str, tuple[list[Any], list[Any]]], list[dict[str, Any]]]:
    """Each variant's document and query embeddings (float32 arrays), and its docs/s."""
    from pipeline.models.precision import encoding_precision

    encoded: dict[str, tuple[list[Any], list[Any]]] = {}
    rows: list[dict[str, Any]] = []
    for name in variants:
        which = VARIANTS[name]
        model = quantized(base, which)
        with encoding_precision("bf16" if which == "autocast" else "fp32", device):
            documents, seconds = timed_encode(model, texts, batch_size, device)
            embedded = model.encode(queries, is_query=True, batch_size=batch_size, show_progress_bar=False)
        encoded[name] = ([as_float32(d) for d in documents], [as_float32(q) for q in embedded])
        rows.append({"variant": name, "encode_docs_per_s": len(texts) / seconds})
        print(f"{name}: {rows[-1]['encode_docs_per_s']:.1f} docs/s", flush=True)
    return encoded, rows


def measure(
    dataset: str,
    max_docs: int | None,
    batch_size: int,
    variants: tuple[str, ...] = CPU_VARIANTS,
    device: str = "cpu",
) -> dict[str, Any]:
    """Each variant's docs/s and its retrieval quality (own queries, and the first variant's queries)."""
    import torch

    from pipeline import models
    from pipeline.data.beir import load_beir
    from pipeline.indexes.indexing import exact_search
    from pipeline.project.runs import evaluate_run, hits_to_run

    torch.manual_seed(0)
    data = load_beir(DATA / dataset, "test")
    ids, texts = read_corpus(dataset, max_docs)
    query_ids = [q for q in data.queries if q in data.qrels]
    query_texts = [data.queries[q] for q in query_ids]
    base = models.ColBERT(device=device)
    encoded, rows = _encode_variants(base, variants, texts, query_texts, batch_size, device)
    float_queries = encoded[variants[0]][1]
    for row in rows:
        documents, queries = encoded[row["variant"]]
        for key, these in (("own_queries", queries), ("float32_queries", float_queries)):
            if key == "float32_queries" and row["variant"] == variants[0]:
                continue
            hits = exact_search(these, documents, ids, k=100, device=device)
            metrics = evaluate_run(hits_to_run(query_ids, hits), data.qrels)
            row[key] = {"ndcg@10": metrics["ndcg@10"], "recall@100": metrics["recall@100"]}
        print(row, flush=True)
    reference = rows[0]
    for row in rows:
        row["speed_ratio"] = row["encode_docs_per_s"] / reference["encode_docs_per_s"]
        row["ndcg@10_delta"] = row["own_queries"]["ndcg@10"] - reference["own_queries"]["ndcg@10"]
    return {
        "dataset": dataset,
        "device": device,
        "documents": len(ids),
        "queries": len(query_ids),
        "rows": rows,
    }


def batch_dependence(dataset: str, batch_size: int) -> dict[str, Any]:
    """How much each variant's embedding of a text depends on the texts batched with it: the largest
    element difference between the first document encoded alone and within a batch of the corpus's first
    ``batch_size`` documents (dynamic int8 takes its activation scale from the whole batch)."""
    import numpy as np
    import torch

    from pipeline import models
    from pipeline.models.precision import encoding_precision

    torch.manual_seed(0)
    _, texts = read_corpus(dataset, batch_size)
    base = models.ColBERT(device="cpu")
    differences = {}
    for name in (*CPU_VARIANTS, "bfloat16 autocast"):
        which = VARIANTS[name]
        model = quantized(base, which)
        with encoding_precision("bf16" if which == "autocast" else "fp32", "cpu"):
            alone = np.asarray(model.encode(texts[:1], is_query=False, batch_size=1)[0])
            batched = np.asarray(model.encode(texts, is_query=False, batch_size=batch_size)[0])
        differences[name] = float(np.abs(alone - batched).max())
        print(f"{name}: {differences[name]:.2e}", flush=True)
    return {"dataset": dataset, "batch_size": batch_size, "max_abs_difference": differences}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="scifact")
    parser.add_argument("--max-docs", type=int, default=None, help="the first N documents (default: all)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument(
        "--variants",
        nargs="+",
        choices=list(VARIANTS),
        default=list(CPU_VARIANTS),
        help="encoders to compare; the first is the baseline",
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--batch-dependence",
        action="store_true",
        help="only measure how a text's embedding changes with its batch (seconds); adds it to --record",
    )
    parser.add_argument("--record", type=Path, help="also write the report here (atomically), to commit")
    args = parser.parse_args(argv)
    command = command_line("bench.index.precision", argv)
    if args.batch_dependence:
        from pipeline.project.io import read_json

        report = read_json(args.record) if args.record and args.record.is_file() else {}
        report["batch_dependence"] = {"command": command, **batch_dependence(args.dataset, args.batch_size)}
    else:
        report = {"environment": environment(), "command": command}
        variants = tuple(args.variants)
        report.update(measure(args.dataset, args.max_docs, args.batch_size, variants, args.device))
        print(render_precision(report))
    if args.record:
        write_record(args.record, report)


if __name__ == "__main__":
    main()
