"""Training throughput and peak memory: ``losses.Contrastive`` vs ``losses.CachedContrastive``.

Each configuration runs in its own process (so its peak memory is its own) and does what the trainer does
per step: collate with ``utils.ColBERTCollator``, forward the loss, backward, clip, AdamW step. The first
``--warmup`` steps are not timed. Contrastive is the baseline; the table gives each row's ratio to it.

Data: the real triplets of ``../shared/data/kd-sample-flagembedding`` when present, else generated texts.
Peak memory: on CUDA ``torch.cuda.max_memory_allocated``; on CPU the peak resident set size of the
process above its size before the first step (sampled every 5 ms).

Example:
    .venv/bin/python bench/train_throughput.py --batch-size 16 --mini-batch-size 4 --steps 4
    .venv/bin/python bench/train_throughput.py --device cuda --dtype bf16 --batch-size 128
"""

from __future__ import annotations

import argparse
import gzip
import json
import logging
import os
import platform
import random
import subprocess
import sys
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
SHARED_TRIPLETS = REPO.parent / "shared" / "data" / "kd-sample-flagembedding" / "triplets.jsonl.gz"
logger = logging.getLogger("train_throughput")


def load_rows(n: int, seed: int) -> tuple[list[dict], str]:
    if SHARED_TRIPLETS.is_file():
        with gzip.open(SHARED_TRIPLETS, "rt", encoding="utf-8") as handle:
            rows = [json.loads(line) for line in handle]
        random.Random(seed).shuffle(rows)
        picked = [{"query": r["query"], "positive": r["positive"], "negative": r["negative"]} for r in rows]
        return (picked * (n // len(picked) + 1))[:n], f"kd-sample triplets ({SHARED_TRIPLETS.parent.name})"
    words = [
        "late",
        "interaction",
        "retrieval",
        "token",
        "vector",
        "index",
        "query",
        "document",
        "score",
        "model",
        "train",
    ]
    rng = random.Random(seed)
    rows = [
        {
            "query": " ".join(rng.choices(words, k=8)),
            "positive": " ".join(rng.choices(words, k=120)),
            "negative": " ".join(rng.choices(words, k=120)),
        }
        for _ in range(n)
    ]
    return rows, "generated texts (../shared/data absent)"


class PeakRSS:
    """Samples the process's resident set size in a thread; ``peak`` is the highest value seen."""

    def __init__(self) -> None:
        import psutil

        self._process = psutil.Process()
        self.peak = self._process.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self._process.memory_info().rss)

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def run_one(args: argparse.Namespace) -> dict:
    """One configuration, in this process; returns its measurements."""
    import torch
    from sentence_transformers.base.trainer import BaseTrainer
    from tqdm import tqdm

    from pipeline import losses, models, utils

    torch.manual_seed(args.seed)
    model = models.ColBERT(device=args.device)
    model.transformer.document_length = args.document_length
    model.train()
    if args.loss == "cached":
        loss = losses.CachedContrastive(model=model, mini_batch_size=args.mini_batch_size, temperature=0.02)
    else:
        loss = losses.Contrastive(model=model, temperature=0.02)
    collator = utils.ColBERTCollator(tokenize_fn=model.tokenize)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-6)
    total = args.warmup + args.steps
    rows, data_name = load_rows(total * args.batch_size, args.seed)
    autocast_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(args.dtype)
    device_type = "cuda" if str(args.device).startswith("cuda") else "cpu"
    use_cuda = device_type == "cuda"

    def step(batch_rows: list[dict]) -> float:
        features, labels = BaseTrainer.collect_features(None, collator(batch_rows))  # type: ignore[arg-type]
        features = [{k: v.to(args.device) if hasattr(v, "to") else v for k, v in f.items()} for f in features]
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device_type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            value = loss(features, labels)
        value.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        return value.item()

    batches = [rows[i * args.batch_size : (i + 1) * args.batch_size] for i in range(total)]
    for batch in batches[: args.warmup]:
        step(batch)
    if use_cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    with PeakRSS() as rss:
        base_rss = rss.peak
        start = time.perf_counter()
        for batch in tqdm(batches[args.warmup :], desc=f"{args.loss} steps", disable=not args.progress):
            step(batch)
        if use_cuda:
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - start
    peak = (torch.cuda.max_memory_allocated() - base) if use_cuda else (rss.peak - base_rss)
    return {
        "loss": args.loss,
        "samples_per_s": args.steps * args.batch_size / elapsed,
        "seconds": elapsed,
        "peak_mib": peak / 2**20,
        "data": data_name,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "device_name": torch.cuda.get_device_name()
        if use_cuda
        else platform.processor() or platform.machine(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--mini-batch-size", type=int, default=4, help="CachedContrastive chunk size")
    parser.add_argument("--steps", type=int, default=4, help="timed steps per configuration")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--document-length", type=int, default=180, help="document token cap (model default)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=["fp32", "fp16", "bf16"], default="fp32", help="autocast dtype")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--progress", action="store_true", help="show a progress bar per configuration")
    parser.add_argument("--loss", choices=["plain", "cached"], help=argparse.SUPPRESS)  # child-process mode
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    if args.loss:
        print(json.dumps(run_one(args)))
        return

    results = []
    for loss_name in ("plain", "cached"):
        command = [sys.executable, __file__, *sys.argv[1:], "--loss", loss_name]
        logger.info("running %s", " ".join(command[1:]))
        completed = subprocess.run(command, capture_output=True, text=True, check=False, cwd=REPO)
        if completed.returncode != 0:
            sys.stderr.write(completed.stderr[-4000:])
            raise SystemExit(f"{loss_name} run failed (exit {completed.returncode})")
        results.append(json.loads(completed.stdout.strip().splitlines()[-1]))

    first = results[0]
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"\nenvironment: python {platform.python_version()}, torch {first['torch']}, device {args.device} "
        f"({first['device_name']}), {os.cpu_count()} CPUs, torch threads {first['threads']}, "
        f"load average {load:.1f}"
    )
    print(
        f"data: {first['data']}; batch {args.batch_size}, cached mini-batch {args.mini_batch_size}, "
        f"{args.steps} timed steps after {args.warmup} warm-up, document length {args.document_length}, "
        f"dtype {args.dtype}"
    )
    memory = "peak CUDA MiB" if str(args.device).startswith("cuda") else "peak RSS delta MiB"
    print(f"\n| loss | samples/s | {memory} | speed vs Contrastive | memory vs Contrastive |")
    print("|---|---|---|---|---|")
    names = {"plain": "Contrastive", "cached": f"CachedContrastive(mini_batch_size={args.mini_batch_size})"}
    for result in results:
        speed = result["samples_per_s"] / first["samples_per_s"]
        memory_ratio = result["peak_mib"] / first["peak_mib"] if first["peak_mib"] > 0 else float("nan")
        print(
            f"| {names[result['loss']]} | {result['samples_per_s']:.2f} | {result['peak_mib']:.0f} | "
            f"{speed:.2f} | {memory_ratio:.2f} |"
        )


if __name__ == "__main__":
    main()
