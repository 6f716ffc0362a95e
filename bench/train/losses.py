"""Training throughput and peak memory: ``losses.Contrastive`` vs ``losses.CachedContrastive``.

Each loss runs in its own process (so its peak memory is its own) and does what the trainer does per step:
collate with ``utils.ColBERTCollator``, forward the loss, backward, clip, AdamW step. The first ``--warmup``
steps are not timed. Contrastive is the baseline; the table gives each row's ratio to it.

Data: the real triplets of ``../shared/data/kd-sample-flagembedding`` when present, else generated texts.
Peak memory: on CUDA ``torch.cuda.max_memory_allocated``; on CPU the peak resident set size of the
process above its size before the first step (sampled every 5 ms).

    .venv/bin/python -m bench.train --batch-size 16 --mini-batch-size 4 --steps 4
    .venv/bin/python -m bench.train --device cuda --dtype bf16 --batch-size 128
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import threading
import time

from bench.common import die_with_parent, logger, run_worker, write_record
from bench.train.data import shuffled_rows
from bench.train.step import loss_inputs

NAMES = {"plain": "Contrastive", "cached": "CachedContrastive"}
#: The options a loss run takes, forwarded to its worker process.
OPTIONS = ("batch_size", "mini_batch_size", "steps", "warmup", "document_length", "device", "dtype", "seed")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--mini-batch-size", type=int, default=4, help="CachedContrastive chunk size")
    parser.add_argument("--steps", type=int, default=4, help="timed steps per configuration")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--document-length", type=int, default=180, help="document token cap (model default)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=["fp32", "fp16", "bf16"], default="fp32", help="autocast dtype")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--progress", action="store_true", help="show a progress bar per configuration")


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
    """One loss, in this process; returns its measurements."""
    import torch
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
    rows, data_name = shuffled_rows(total * args.batch_size, args.seed)
    autocast_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(args.dtype)
    device_type = "cuda" if str(args.device).startswith("cuda") else "cpu"
    use_cuda = device_type == "cuda"

    def step(batch_rows: list[dict]) -> float:
        features = loss_inputs(collator(batch_rows), args.device)
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device_type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            value = loss(features, None)
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


def compare_losses(args: argparse.Namespace) -> None:
    """Both losses, each in a fresh process; prints the environment and the table."""
    forwarded = [f"--{name.replace('_', '-')}={getattr(args, name)}" for name in OPTIONS]
    forwarded += ["--progress"] if args.progress else []
    results = [
        run_worker(sys.executable, "bench.train.losses", [*forwarded, "--loss", name]) for name in NAMES
    ]
    first = results[0]
    print(
        f"\nenvironment: python {platform.python_version()}, torch {first['torch']}, device {args.device} "
        f"({first['device_name']}), {os.cpu_count()} CPUs, torch threads {first['threads']}, "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    print(
        f"data: {first['data']}; batch {args.batch_size}, cached mini-batch {args.mini_batch_size}, "
        f"{args.steps} timed steps after {args.warmup} warm-up, document length {args.document_length}, "
        f"dtype {args.dtype}"
    )
    memory = "peak CUDA MiB" if str(args.device).startswith("cuda") else "peak RSS delta MiB"
    print(f"\n| loss | samples/s | {memory} | speed vs Contrastive | memory vs Contrastive |")
    print("|---|---|---|---|---|")
    labels = {**NAMES, "cached": f"CachedContrastive(mini_batch_size={args.mini_batch_size})"}
    for result in results:
        speed = result["samples_per_s"] / first["samples_per_s"]
        memory_ratio = result["peak_mib"] / first["peak_mib"] if first["peak_mib"] > 0 else float("nan")
        print(
            f"| {labels[result['loss']]} | {result['samples_per_s']:.2f} | {result['peak_mib']:.0f} | "
            f"{speed:.2f} | {memory_ratio:.2f} |"
        )


def main() -> None:
    """One loss's run: ``python -m bench.train.losses --loss plain|cached ... --result FILE``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    parser.add_argument("--loss", choices=sorted(NAMES), required=True)
    parser.add_argument("--result", required=True)
    args = parser.parse_args()
    die_with_parent()
    logger.info("%s: %d steps of %d rows", NAMES[args.loss], args.steps, args.batch_size)
    write_record(args.result, run_one(args))


if __name__ == "__main__":
    main()
