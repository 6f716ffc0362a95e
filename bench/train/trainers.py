"""The train stage's trainer and PyLate's, each timed in its own process on the rows of a job file.

``stage`` runs ``pipeline.training.trainer.build_trainer`` (its arguments, batch sampler, collator and
per-step MLflow callback, inside an MLflow run); ``peer`` runs PyLate 1.6's model, loss and collator with the
stage's trainer arguments, in PyLate's venv (so nothing here imports ``pipeline`` at module level).
samples/s counts the rows collated in the timed steps after the warm-up steps, from the end of the last
warm-up step to the end of the last step (data loading, collation, forward, backward, optimizer step and
callbacks included). ``seeds`` runs the seeds' training code (PyLate's documented usage) against the
library the job names, ``pipeline`` or ``pylate``. Started by :mod:`bench.train.compare`:
``python -m bench.train.trainers stage|peer|seeds --job FILE --result FILE``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import die_with_parent, profiled, setup, write_record


def step_timer() -> Any:
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        """Wall-clock time at the end of each optimizer step (callbacks of that step included), and the
        rows collated by then: a no-duplicates sampler can yield batches under ``batch_size`` rows."""

        def __init__(self) -> None:
            self.ends: list[float] = []
            # The process's CPU seconds (all threads) at each step end: a machine shared with other jobs
            # stretches wall time, much less the work a step does.
            self.cpu: list[float] = []
            self.rows: list[int] = []
            self.sizes: list[int] = []  # rows of each collated batch, in order

        def counting(self, collator: Any) -> Any:
            timer = self

            class Counting:
                """The collator, noting each batch's rows (the trainer reads its attributes too)."""

                def __call__(self, features: list[dict]) -> Any:
                    timer.sizes.append(len(features))
                    return collator(features)

                def __getattr__(self, name: str) -> Any:
                    return getattr(collator, name)

            return Counting()

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.ends.append(time.perf_counter())
            self.cpu.append(time.process_time())
            # The data loader collates a batch ahead: the rows trained on are the first batches, one per step.
            self.rows.append(sum(self.sizes[: len(self.ends)]))

    return StepTimer()


def rate(timer: Any, warmup: int) -> dict[str, Any]:
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
        "cpu_seconds": timer.cpu[-1] - timer.cpu[warmup - 1],
        "rows_per_step": samples / timed,
        "samples_per_s": samples / seconds,
    }


def worker_stage(spec: dict) -> dict:
    """The train stage's trainer (``build_trainer``) with its MLflow callback, inside an MLflow run (where
    MLflow is installed: not on the GPU machine, see ``bench/gpu_pass.sh``)."""
    import torch
    from datasets import Dataset
    from transformers import set_seed

    from pipeline import models
    from pipeline.project.params_file import load_params
    from pipeline.training.trainer import build_loss, build_trainer

    overrides = {f"train.{key}": value for key, value in spec["train"].items()}
    config = load_params(Path(spec["workdir"]) / "params.yaml", overrides, check_paths=False).train
    dataset = Dataset.from_list(spec["rows"])
    set_seed(config.seed)
    model = models.ColBERT(
        model_name_or_path=config.base_model, device=config.device, query_length=config.query_length
    )
    loss = build_loss(model, config, "triplets")
    timer = step_timer()
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
        checkpoints = stack.enter_context(tempfile.TemporaryDirectory(dir=spec["workdir"]))
        # As the train stage logs: transformers' own MLflow integration, into the run opened above.
        trainer = build_trainer(
            config,
            model,
            loss,
            dataset,
            "triplets",
            Path(checkpoints),
            callbacks=callbacks,
            report_to=["mlflow"] if mlflow is not None else "none",
        )
        trainer.data_collator = timer.counting(trainer.data_collator)
        trainer.train()
        chosen = trainer.args.batch_sampler  # a BatchSamplers value, or a sampler class
        sampler = getattr(chosen, "value", getattr(chosen, "__name__", str(chosen)))
    return {
        **rate(timer, spec["warmup"]),
        "batch_sampler": sampler,
        "mlflow_callback": mlflow is not None,
        "threads": torch.get_num_threads(),
        "setup": setup("pipeline", spec["train"]["precision"]),
    }


def worker_peer(spec: dict) -> dict:
    """PyLate 1.6's model, loss and collator, with the stage's trainer arguments (runs in the peer venv)."""
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
    timer = step_timer()
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
            # the precision the stage resolved (bench.train.compare), so both train alike on a GPU
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
        **rate(timer, spec["warmup"]),
        "batch_sampler": spec["batch_sampler"],
        "threads": torch.get_num_threads(),
        "setup": setup("pylate", settings["precision"]),
    }


def worker_seeds(spec: dict) -> dict:
    """The seeds' training code (PyLate's documented usage, ``../shared/seeds``) as a library user runs it:
    ``SentenceTransformerTrainer`` + ``losses.Contrastive`` + ``utils.ColBERTCollator`` + ``models.ColBERT``
    at their defaults, one text for both libraries: ``spec["library"]`` picks ``pipeline`` or ``pylate``
    (the import is the only difference). fp32 (``fp16=False, bf16=False`` as the seed writes), the default
    batch sampler, no evaluator (the seed's evaluator runs every tenth of an epoch, not per step)."""
    import torch
    from datasets import Dataset
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from transformers import set_seed

    if spec["library"] == "pipeline":
        from pipeline import losses, models, utils
    else:
        from pylate import losses, models, utils
    settings = spec["train"]
    set_seed(settings["seed"])
    timer = step_timer()
    # From here on, the seed's script with the job's rows, batch size, steps and seed.
    model = models.ColBERT(model_name_or_path=spec["base_model_path"])
    train_loss = losses.Contrastive(model=model)
    with tempfile.TemporaryDirectory(dir=spec["workdir"]) as output_dir:
        args = SentenceTransformerTrainingArguments(
            output_dir=output_dir,
            max_steps=settings["max_steps"],
            per_device_train_batch_size=settings["batch_size"],
            fp16=False,
            bf16=False,
            save_strategy="steps",
            save_steps=5000,
            learning_rate=3e-6,
            seed=settings["seed"],
            report_to="none",
        )
        trainer = SentenceTransformerTrainer(
            model=model,
            args=args,
            train_dataset=Dataset.from_list(spec["rows"]),
            loss=train_loss,
            data_collator=timer.counting(utils.ColBERTCollator(tokenize_fn=model.tokenize)),
            callbacks=[timer],
        )
        trainer.train()
    return {**rate(timer, spec["warmup"]), "library": spec["library"], "threads": torch.get_num_threads()}


WORKERS = {"stage": worker_stage, "peer": worker_peer, "seeds": worker_seeds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("system", choices=sorted(WORKERS))
    parser.add_argument("--job", required=True, help="the job's JSON: rows, settings, warm-up, workdir")
    parser.add_argument("--result", required=True)
    args = parser.parse_args()
    die_with_parent()
    spec = json.loads(Path(args.job).read_text(encoding="utf-8"))
    worker = WORKERS[args.system]
    if spec.get("profile"):  # the top entries by cumulative and by own time, to <data>-<system>.txt
        result, text = profiled(lambda: worker(spec), 40)
        Path(spec["profile"]).parent.mkdir(parents=True, exist_ok=True)
        Path(spec["profile"]).write_text(text, encoding="utf-8")
    else:
        result = worker(spec)
    write_record(args.result, result)


if __name__ == "__main__":
    main()
