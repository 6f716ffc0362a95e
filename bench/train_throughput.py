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

**The train stage against PyLate** (``--peer``): the stage's trainer
(``pipeline.training.trainer.build_trainer``: its arguments, batch sampler, collator and per-step MLflow
callback, inside an MLflow run) and PyLate 1.6's (``bench/.peer-venv``, installed by
``bench/index_bench.py``'s ``ensure_peer_venv``) each train in a fresh process on the same rows with the same
settings, on long documents (SciFact's prepared triplets: ``data/scifact/prepared/train`` from
``colbert-pipeline prepare --config configs/scifact.yaml``, or, when that is absent, SciFact's train qrels
from ``../shared/data/scifact`` with seeded random negatives: the cost of a step depends on the texts'
lengths, not on how hard the negatives are) and on short passages
(``../shared/data/kd-sample-flagembedding``). Runs are interleaved (stage then PyLate, then the other way
round) so load drift hits both; samples/s counts the rows collated in the timed steps after ``--warmup``
steps, from the end of the last warm-up step to the end of the last step (data loading, collation, forward,
backward, optimizer step and callbacks included). PyLate is given the batch sampler the stage resolves for the
rows (``no_duplicates`` where a query repeats), so both see batches alike; such batches can hold fewer rows
than ``--batch-size``, which is why rows are counted. ``--stage`` runs the stage alone (no PyLate);
``--profile DIR`` writes each run's cProfile top entries. Results go to ``--output`` (JSON). On a GPU machine:
``bench/gpu_pass.sh``.

    .venv/bin/python bench/train_throughput.py --peer --steps 8 --warmup 2 --repeats 2
"""

from __future__ import annotations

import argparse
import contextlib
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
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
#: ``../shared/data``, or ``COLBERT_BENCH_DATA`` (the GPU machine gets a copy: ``bench/gpu_pass.sh``).
SHARED_DATA = Path(os.environ.get("COLBERT_BENCH_DATA") or REPO.parent / "shared" / "data")
SHARED_TRIPLETS = SHARED_DATA / "kd-sample-flagembedding" / "triplets.jsonl.gz"
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


# ------------------------------------------------------------------------------------------ stage vs PyLate
SCIFACT_PREPARED = REPO / "data" / "scifact" / "prepared" / "train"
SHARED_SCIFACT = SHARED_DATA / "scifact"
RESULTS = REPO / "bench" / "results"


def _read_triplets(path: Path) -> list[dict]:
    """``query, positive, negative`` rows from a prepared train folder, a JSONL file or a ``.jsonl.gz``."""
    if (path / "dataset").is_dir():
        from datasets import load_from_disk

        dataset = load_from_disk(str(path / "dataset"))
        negative = next((c for c in dataset.column_names if c.startswith("negative")), None)
        if negative is None:
            raise SystemExit(f"{path}: the prepared rows have no negative column ({dataset.column_names})")
        return [{"query": r["query"], "positive": r["positive"], "negative": r[negative]} for r in dataset]
    opener = gzip.open if path.suffix == ".gz" else open
    rows = []
    with opener(path, "rt", encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            row = json.loads(line)
            if not all(isinstance(row.get(k), str) for k in ("query", "positive", "negative")):
                raise SystemExit(f"{path}:{number}: needs string fields query, positive, negative")
            rows.append({k: row[k] for k in ("query", "positive", "negative")})
    return rows


def _scifact_from_qrels(folder: Path, seed: int) -> list[dict]:
    """SciFact's train (query, positive) pairs with a seeded random negative each."""
    from pipeline.data.beir import load_beir

    data = load_beir(folder, split="train")
    rng = random.Random(seed)
    ids = sorted(data.corpus)
    return [
        {"query": data.queries[q], "positive": data.corpus[d], "negative": data.corpus[rng.choice(ids)]}
        for q, judged in sorted(data.qrels.items())
        for d, grade in sorted(judged.items())
        if grade > 0
    ]


def bench_datasets(args: argparse.Namespace) -> list[tuple[str, str, list[dict]]]:
    """(name, where from, rows) for the long and the short documents."""
    if args.long:
        long_rows, long_from = _read_triplets(Path(args.long)), str(args.long)
    elif SCIFACT_PREPARED.is_dir():
        long_rows, long_from = _read_triplets(SCIFACT_PREPARED), str(SCIFACT_PREPARED.relative_to(REPO))
    elif SHARED_SCIFACT.is_dir():
        long_rows = _scifact_from_qrels(SHARED_SCIFACT, args.seed)
        long_from = f"{SHARED_SCIFACT.name} train qrels, seeded random negatives"
    else:
        raise SystemExit("no long documents: pass --long, or prepare configs/scifact.yaml, or add ../shared")
    short_path = Path(args.short) if args.short else SHARED_TRIPLETS
    if not short_path.is_file() and not (short_path / "dataset").is_dir():
        raise SystemExit(f"{short_path}: no short passages (pass --short)")
    short_rows = _read_triplets(short_path)
    need = (args.warmup + args.steps) * args.batch_size
    picked = []
    for name, source, rows in (("scifact", long_from, long_rows), ("short", str(short_path), short_rows)):
        if len(rows) < need:
            raise SystemExit(f"{source}: {len(rows)} rows, the run needs {need} (batch x steps)")
        shuffled = rows[:]
        random.Random(args.seed).shuffle(shuffled)
        # Exactly one epoch of these rows: both trainers see the same texts (each in its own order).
        picked.append((name, source, shuffled[:need]))
    return picked


def _step_timer_class():
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        """Wall-clock time at the end of each optimizer step (callbacks of that step included), and the
        rows collated by then: a no-duplicates sampler can yield batches under ``batch_size`` rows."""

        def __init__(self) -> None:
            self.ends: list[float] = []
            self.rows: list[int] = []
            self.sizes: list[int] = []  # rows of each collated batch, in order

        def counting(self, collator):
            timer = self

            class Counting:
                """The collator, noting each batch's rows (the trainer reads its attributes too)."""

                def __call__(self, features):
                    timer.sizes.append(len(features))
                    return collator(features)

                def __getattr__(self, name):
                    return getattr(collator, name)

            return Counting()

        def on_step_end(self, args, state, control, **kwargs):
            self.ends.append(time.perf_counter())
            # The data loader collates a batch ahead: the rows trained on are the first batches, one per step.
            self.rows.append(sum(self.sizes[: len(self.ends)]))

    return StepTimer()


def _rate(timer: Any, warmup: int) -> dict:
    """Samples/s over the steps after ``warmup`` (>= 1), timed from the end of the last warm-up step;
    samples are the rows actually collated in those steps."""
    ends, rows = timer.ends, timer.rows
    if len(ends) <= warmup:
        raise RuntimeError(f"only {len(ends)} steps ran; {warmup} are warm-up")
    timed = len(ends) - warmup
    seconds = ends[-1] - ends[warmup - 1]
    samples = rows[-1] - rows[warmup - 1]
    return {
        "timed_steps": timed,
        "seconds": seconds,
        "rows_per_step": samples / timed,
        "samples_per_s": samples / seconds,
    }


def worker_stage(spec: dict) -> dict:
    """The train stage's trainer (``build_trainer``) with its MLflow callback, inside an MLflow run (where
    MLflow is installed: not on the GPU machine, see ``bench/gpu_pass.sh``)."""
    import tempfile

    import torch
    from datasets import Dataset
    from transformers import set_seed

    from pipeline import models
    from pipeline.project.params_file import load_params
    from pipeline.training.trainer import MlflowLossCallback, build_loss, build_trainer

    overrides = {f"train.{key}": value for key, value in spec["train"].items()}
    config = load_params(Path(spec["workdir"]) / "params.yaml", overrides, check_paths=False).train
    dataset = Dataset.from_list(spec["rows"])
    set_seed(config.seed)
    model = models.ColBERT(
        model_name_or_path=config.base_model, device=config.device, query_length=config.query_length
    )
    loss = build_loss(model, config, "triplets")
    timer = _step_timer_class()
    callbacks: list[Any] = [timer]
    with contextlib.ExitStack() as stack:
        try:
            import mlflow
        except ImportError:  # no MLflow on the GPU machine (nothing installs there); the result says so
            mlflow = None
        if mlflow is not None:
            mlflow.set_tracking_uri(f"sqlite:///{Path(spec['workdir']) / 'mlruns.db'}")
            # Its own store and experiment: an inherited MLFLOW_EXPERIMENT_ID names another store's.
            mlflow.set_experiment("train-throughput")
            stack.enter_context(mlflow.start_run())
            callbacks.insert(0, MlflowLossCallback())
        checkpoints = stack.enter_context(tempfile.TemporaryDirectory(dir=spec["workdir"]))
        trainer = build_trainer(
            config, model, loss, dataset, "triplets", Path(checkpoints), callbacks=callbacks
        )
        trainer.data_collator = timer.counting(trainer.data_collator)
        trainer.train()
        chosen = trainer.args.batch_sampler  # a BatchSamplers value, or a sampler class
        sampler = getattr(chosen, "value", getattr(chosen, "__name__", str(chosen)))
    return {
        **_rate(timer, spec["warmup"]),
        "batch_sampler": sampler,
        "mlflow_callback": mlflow is not None,
        "threads": torch.get_num_threads(),
    }


def worker_peer(spec: dict) -> dict:
    """PyLate 1.6's model, loss and collator, with the stage's trainer arguments (runs in the peer venv)."""
    import tempfile

    import torch
    from datasets import Dataset
    from pylate import losses, models, utils
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from transformers import set_seed

    settings = spec["train"]
    dataset = Dataset.from_list(spec["rows"])
    set_seed(settings["seed"])
    model = models.ColBERT(model_name_or_path=spec["base_model_path"], device=settings["device"])
    loss = losses.Contrastive(model=model, temperature=settings["temperature"])
    timer = _step_timer_class()
    with tempfile.TemporaryDirectory(dir=spec["workdir"]) as checkpoints:
        args = SentenceTransformerTrainingArguments(
            output_dir=checkpoints,
            max_steps=settings["max_steps"],
            per_device_train_batch_size=settings["batch_size"],
            learning_rate=settings["learning_rate"],
            seed=settings["seed"],
            save_strategy="steps",
            save_steps=settings["save_steps"],
            logging_steps=1,
            report_to="none",
            use_cpu=settings["device"] == "cpu",
            # the precision the stage resolved (compare_trainers), so both train alike on a GPU
            fp16=settings["precision"] == "fp16",
            bf16=settings["precision"] == "bf16",
            # the sampler the stage resolves for these rows (no query twice in a batch where they repeat)
            batch_sampler=spec["batch_sampler"],
        )
        trainer = SentenceTransformerTrainer(
            model=model,
            args=args,
            train_dataset=dataset,
            loss=loss,
            data_collator=timer.counting(utils.ColBERTCollator(model.tokenize)),
            callbacks=[timer],
        )
        trainer.train()
    return {
        **_rate(timer, spec["warmup"]),
        "batch_sampler": spec["batch_sampler"],
        "threads": torch.get_num_threads(),
    }


def _run_trainer_worker(
    python: str, system: str, spec: dict, timeout: float | None, env: dict[str, str]
) -> dict:
    job = Path(spec["workdir"]) / f"{system}-job.json"
    job.write_text(json.dumps(spec), encoding="utf-8")
    command = [python, str(Path(__file__).resolve()), "--trainer-worker", system, "--job", str(job)]
    completed = subprocess.run(
        command, capture_output=True, text=True, env=env, cwd=REPO, timeout=timeout, check=False
    )
    if completed.returncode != 0:
        sys.stderr.write(completed.stderr[-4000:])
        raise SystemExit(f"{system} trainer run failed (exit {completed.returncode})")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def _write_json_atomic(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.tmp")
    temp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    os.replace(temp, path)


def compare_trainers(args: argparse.Namespace) -> dict:
    """Interleaved runs of the stage (and PyLate with ``--peer``) on long and short documents."""
    import importlib.util
    import tempfile

    from datasets import Dataset

    from pipeline.models import resolve_model_name
    from pipeline.training import samplers
    from pipeline.training.trainer import precision_flags

    spec_module = importlib.util.spec_from_file_location("index_bench", REPO / "bench" / "index_bench.py")
    assert spec_module is not None and spec_module.loader is not None
    index_bench = importlib.util.module_from_spec(spec_module)
    spec_module.loader.exec_module(index_bench)
    systems = {"stage": sys.executable}
    if args.peer:
        systems["peer"] = str(index_bench.ensure_peer_venv())
    train = {
        "batch_size": args.batch_size,
        "max_steps": args.warmup + args.steps,
        "learning_rate": 3e-5,
        "temperature": 1.0,
        "seed": args.seed,
        "device": args.device,
        "save_steps": 100,
        # resolved here (auto: bf16/fp16 on CUDA, else fp32) so the stage and PyLate get the same one
        "precision": next(
            (name for name, on in precision_flags(args.precision, args.device).items() if on), "fp32"
        ),
    }
    runs = []
    with tempfile.TemporaryDirectory(prefix="train-throughput-") as workdir:
        for repeat in range(args.repeats):
            for name, source, rows in bench_datasets(args):
                order = list(systems) if repeat % 2 == 0 else list(reversed(systems))
                for system in order:
                    spec = {
                        "rows": rows,
                        "train": train,
                        "warmup": args.warmup,
                        "workdir": workdir,
                        "base_model_path": resolve_model_name(None),
                        "batch_sampler": samplers.choose_batch_sampler(
                            "auto", Dataset.from_list(rows), "triplets"
                        ).value,
                        "profile": (
                            str(Path(args.profile) / f"{name}-{system}.txt") if args.profile else None
                        ),
                    }
                    logger.info("repeat %d, %s, %s", repeat + 1, name, system)
                    env = index_bench.worker_env(peer=system == "peer")
                    result = _run_trainer_worker(systems[system], system, spec, args.timeout, env)
                    runs.append(
                        {"repeat": repeat + 1, "data": name, "source": source, "system": system, **result}
                    )
                    logger.info("  %.3f samples/s", result["samples_per_s"])
    summary = {}
    for name in dict.fromkeys(run["data"] for run in runs):
        row = {
            system: _median([r["samples_per_s"] for r in runs if r["data"] == name and r["system"] == system])
            for system in systems
        }
        if "peer" in row:
            row["stage_vs_peer"] = row["stage"] / row["peer"]
        summary[name] = row
    return {"runs": runs, "samples_per_s_median": summary, "train": train}


def report_trainers(args: argparse.Namespace, result: dict) -> None:
    import psutil
    import torch

    environment = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "ram_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "load_avg_1m_at_end": round(os.getloadavg()[0], 1),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        **({"gpu": torch.cuda.get_device_name()} if str(args.device).startswith("cuda") else {}),
    }
    command = "bench/train_throughput.py " + " ".join(sys.argv[1:])
    record = {
        "command": command,
        "environment": environment,
        **result,
        "peer": "pylate==1.6.*" if args.peer else None,
    }
    output = Path(args.output)
    _write_json_atomic(output, record)
    peer = args.peer
    print(f"\ncommand: {command}\nenvironment: {json.dumps(environment)}")
    print(f"\n| documents | stage samples/s |{' PyLate 1.6 samples/s | stage / PyLate |' if peer else ''}")
    print(f"|---|---|{'---|---|' if peer else ''}")
    for name, row in result["samples_per_s_median"].items():
        extra = f" {row['peer']:.2f} | {row['stage_vs_peer']:.2f} |" if peer else ""
        print(f"| {name} | {row['stage']:.2f} |{extra}")
    print(f"\nresults: {output}")


def _profiled(worker: Any, spec: dict, path: Path) -> dict:
    """``worker(spec)`` under cProfile; its top entries (cumulative and own time) go to ``path``."""
    import cProfile
    import io
    import pstats

    profiler = cProfile.Profile()
    result = profiler.runcall(worker, spec)
    text = io.StringIO()
    stats = pstats.Stats(profiler, stream=text)
    stats.sort_stats("cumulative").print_stats(45)
    stats.sort_stats("tottime").print_stats(30)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text.getvalue(), encoding="utf-8")
    return result


def _die_with_parent() -> None:
    """Worker processes end with the process that started them (Linux: ``PR_SET_PDEATHSIG``)."""
    if sys.platform != "linux":
        return
    import ctypes
    import signal

    parent = os.getppid()
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the parent died before the call
        raise SystemExit("the bench's orchestrator is gone")


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
    parser.add_argument("--peer", action="store_true", help="the train stage against PyLate 1.6, interleaved")
    parser.add_argument("--stage", action="store_true", help="the train stage alone (no PyLate)")
    parser.add_argument("--repeats", type=int, default=1, help="--peer/--stage: runs per system and data")
    parser.add_argument("--long", help="--peer/--stage: long documents (prepared train folder or JSONL)")
    parser.add_argument("--short", help="--peer/--stage: short passages (prepared train folder or JSONL)")
    parser.add_argument("--timeout", type=float, default=None, help="seconds per trainer run")
    parser.add_argument(
        "--precision",
        choices=["auto", "fp32", "fp16", "bf16"],
        default="auto",
        help="--peer/--stage: the train stage's precision setting (auto: bf16/fp16 on CUDA), PyLate's too",
    )
    parser.add_argument(
        "--output", default=str(RESULTS / "train_throughput.json"), help="--peer/--stage: results JSON"
    )
    parser.add_argument(
        "--profile", help="--peer/--stage: a folder for each run's cProfile top entries (<data>-<system>.txt)"
    )
    parser.add_argument("--trainer-worker", choices=["stage", "peer"], help=argparse.SUPPRESS)
    parser.add_argument("--job", help=argparse.SUPPRESS)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    if args.trainer_worker or args.loss:
        _die_with_parent()
    if args.trainer_worker:
        spec = json.loads(Path(args.job).read_text(encoding="utf-8"))
        worker = worker_stage if args.trainer_worker == "stage" else worker_peer
        if spec.get("profile"):
            print(json.dumps(_profiled(worker, spec, Path(spec["profile"]))))
        else:
            print(json.dumps(worker(spec)))
        return
    if args.peer or args.stage:
        if args.steps < 1 or args.warmup < 1:
            raise SystemExit("--steps and --warmup must be at least 1")
        report_trainers(args, compare_trainers(args))
        return

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
