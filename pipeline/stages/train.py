"""``train``: fine-tune a ColBERT model on the prepared training set.

Runs sentence-transformers' trainer with the configured loss (contrastive, cached contrastive or
distillation), checkpoints every ``train.save_steps`` steps to ``<output>-checkpoints/`` and, when re-run
after a crash with the same params, resumes from the last checkpoint. The finished model replaces
``train.output`` (default ``models/colbert``) in one rename. Precision ``auto`` picks bf16 (or fp16) on a
GPU and fp32 on the CPU. Per-step loss goes to the stage's MLflow run.

Batches keep a query out of its own in-batch negatives (``train.batch_sampler``, see ``pipeline.samplers``).
With ``train.dev_fraction`` > 0, whole training queries are held out as a dev split: the dev loss is logged
every ``train.eval_steps`` steps and the model saved is the checkpoint with the lowest one
(``train.early_stopping_patience`` stops training early). ``train.query_length`` sets the query tokens.

Example:
    $ colbert-pipeline train --set train.max_steps=20
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import Any

from pipeline import tracking
from pipeline.config import Params, TrainParams, resolve_path
from pipeline.io import atomic_directory, atomic_write_json, read_json

logger = logging.getLogger(__name__)

#: Saved in the model folder: the per-step loss, which the quality report plots.
TRAINING_LOSS_FILE = "training_loss.json"
#: Saved in the model folder when a dev split is used: the dev loss per evaluation.
DEV_LOSS_FILE = "dev_loss.json"


def precision_flags(precision: str, device: str | None = None) -> dict[str, bool]:
    """``fp16``/``bf16`` trainer flags for a precision setting; ``auto`` uses bf16/fp16 only on CUDA.

    Example:
        >>> precision_flags("auto", "cpu")
        {'fp16': False, 'bf16': False}
    """
    import torch

    if precision == "fp16":
        return {"fp16": True, "bf16": False}
    if precision == "bf16":
        return {"fp16": False, "bf16": True}
    on_cuda = torch.cuda.is_available() and (device is None or str(device).startswith("cuda"))
    if precision == "auto" and on_cuda:
        bf16 = torch.cuda.is_bf16_supported()
        return {"fp16": not bf16, "bf16": bf16}
    return {"fp16": False, "bf16": False}


def build_loss(model: Any, config: TrainParams, kind: str) -> Any:
    """The loss for ``train.loss``, checked against the prepared data's kind."""
    from pipeline import losses

    if config.loss == "distillation" and kind != "kd":
        raise ValueError("train.loss is 'distillation' but prepare produced triplets: use prepare.source=kd")
    if config.loss != "distillation" and kind == "kd":
        raise ValueError(
            f"train.loss is {config.loss!r} but prepare produced KD rows: use train.loss=distillation"
        )
    if config.loss == "contrastive":
        return losses.Contrastive(model=model, temperature=config.temperature)
    if config.loss == "cached_contrastive":
        return losses.CachedContrastive(
            model=model, mini_batch_size=config.mini_batch_size, temperature=config.temperature
        )
    return losses.Distillation(model=model)


def load_training_set(train_dir: Path, config: TrainParams) -> tuple[Any, str]:
    """The prepared Arrow dataset, with KD rows joined to texts lazily."""
    from datasets import load_from_disk

    from pipeline import utils

    fmt = read_json(train_dir / "format.json")
    dataset = load_from_disk(str(train_dir / "dataset"))
    if fmt["kind"] == "kd":
        processing = utils.KDProcessing(
            queries=load_from_disk(str(train_dir / "queries")),
            documents=load_from_disk(str(train_dir / "documents")),
            n_ways=config.n_ways,
        )
        dataset.set_transform(processing.transform)
    return dataset, fmt["kind"]


def _checkpoint_to_resume(folder: Path, fingerprint: str) -> str | None:
    """The last checkpoint of an interrupted run with the same params, else None (stale ones are removed)."""
    if not folder.is_dir():
        return None
    marker = folder / "params.sha"
    if not marker.is_file() or marker.read_text().strip() != fingerprint:
        shutil.rmtree(folder)
        return None
    checkpoints = sorted(folder.glob("checkpoint-*"), key=lambda p: int(p.name.rpartition("-")[2]))
    return str(checkpoints[-1]) if checkpoints else None


def training_loss(log_history: list[dict[str, Any]]) -> list[dict[str, float]]:
    """The per-step loss from the trainer's log (the final summary entry has ``train_loss``, not ``loss``).

    Example:
        >>> training_loss([{"loss": 2.5, "step": 1}, {"loss": 1.5, "step": 2}, {"train_loss": 2, "step": 2}])
        [{'step': 1, 'loss': 2.5}, {'step': 2, 'loss': 1.5}]
    """
    return [
        {"step": int(entry["step"]), "loss": float(entry["loss"])} for entry in log_history if "loss" in entry
    ]


def build_trainer(
    config: TrainParams,
    model: Any,
    loss: Any,
    dataset: Any,
    kind: str,
    output_dir: Path,
    *,
    callbacks: list[Any] | None = None,
) -> Any:
    """The stage's trainer: its arguments, batch sampler, dev split and callbacks (the bench times this).

    With ``train.dev_fraction`` > 0 a share of the training queries becomes a dev split: the dev loss is
    computed (and logged) every ``train.eval_steps`` steps, a checkpoint is saved at each evaluation, and
    the best one (lowest dev loss) is loaded at the end; ``train.early_stopping_patience`` stops early.
    """
    import torch
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from transformers import EarlyStoppingCallback

    from pipeline import samplers, utils
    from pipeline.data.dev_split import split_dev

    dev = None
    if config.dev_fraction > 0:
        dataset, dev = split_dev(dataset, config.dev_fraction, config.seed, kind)
        logger.info("dev split: %d training rows, %d dev rows", len(dataset), len(dev))
    batch_sampler = samplers.choose_batch_sampler(config.batch_sampler, dataset, kind)
    evaluation: dict[str, Any] = {}
    if dev is not None:
        evaluation = {
            "eval_strategy": "steps",
            "eval_steps": config.eval_steps,
            # load_best_model_at_end needs a checkpoint at every evaluation.
            "save_steps": config.eval_steps,
            "load_best_model_at_end": True,
            "metric_for_best_model": "eval_loss",
            "greater_is_better": False,
            "per_device_eval_batch_size": config.batch_size,
        }
    args = SentenceTransformerTrainingArguments(
        output_dir=str(output_dir),
        num_train_epochs=config.epochs,
        max_steps=config.max_steps or -1,
        per_device_train_batch_size=config.batch_size,
        learning_rate=config.learning_rate,
        warmup_steps=config.warmup_ratio,  # transformers v5: a float below 1 is a ratio of all steps
        seed=config.seed,
        save_strategy="steps",
        save_steps=evaluation.pop("save_steps", config.save_steps),
        save_total_limit=2,
        logging_steps=1,
        report_to="none",
        use_cpu=config.device == "cpu" or not torch.cuda.is_available(),
        batch_sampler=batch_sampler,
        **evaluation,
        **precision_flags(config.precision, config.device),
    )
    extra = list(callbacks or [])
    if config.early_stopping_patience is not None:
        extra.append(EarlyStoppingCallback(early_stopping_patience=config.early_stopping_patience))
    return SentenceTransformerTrainer(
        model=model,
        args=args,
        train_dataset=dataset,
        eval_dataset=dev,
        loss=loss,
        data_collator=utils.ColBERTCollator(model.tokenize),
        callbacks=extra,
    )


def dev_curve(log_history: list[dict[str, Any]]) -> list[dict[str, float]]:
    """The dev loss per evaluation step from the trainer's log.

    Example:
        >>> dev_curve([{"loss": 2.5, "step": 1}, {"eval_loss": 1.5, "step": 1}])
        [{'step': 1, 'eval_loss': 1.5}]
    """
    return [
        {"step": int(entry["step"]), "eval_loss": float(entry["eval_loss"])}
        for entry in log_history
        if "eval_loss" in entry
    ]


def run(params: Params, project: Path) -> dict[str, Any]:
    """Fine-tune ``train.base_model`` on ``<prepare.output>/train`` and save it to ``train.output``."""
    from transformers import set_seed

    from pipeline import models, utils

    config = params.train
    train_dir = resolve_path(params.prepare.output, project) / "train"
    output = resolve_path(config.output, project)
    checkpoints = output.with_name(f"{output.name}-checkpoints")
    dataset, kind = load_training_set(train_dir, config)
    # Every row (KD joins included) is checked before the model loads: a bad row names its index.
    utils.check_training_dataset(dataset)

    with tracking.stage_run("train", params, project) as mlflow_run:
        set_seed(config.seed)
        model = models.ColBERT(
            model_name_or_path=config.base_model, device=config.device, query_length=config.query_length
        )
        loss = build_loss(model, config, kind)
        fingerprint = tracking.params_hash({"train": config.model_dump(mode="json"), "data": str(train_dir)})
        resume = _checkpoint_to_resume(checkpoints, fingerprint)
        checkpoints.mkdir(parents=True, exist_ok=True)
        (checkpoints / "params.sha").write_text(fingerprint)
        flags = precision_flags(config.precision, config.device)
        trainer = build_trainer(
            config, model, loss, dataset, kind, checkpoints, callbacks=[tracking.MlflowLossCallback()]
        )
        if resume:
            logger.info("resuming from %s", resume)
        started = time.perf_counter()
        result = trainer.train(resume_from_checkpoint=resume)
        seconds = time.perf_counter() - started
        with atomic_directory(output) as staging:
            model.save_pretrained(str(staging))
            # The model carries its own training curve: the quality report plots it next to the scores.
            atomic_write_json(staging / TRAINING_LOSS_FILE, training_loss(trainer.state.log_history))
            if config.dev_fraction > 0:
                atomic_write_json(staging / DEV_LOSS_FILE, dev_curve(trainer.state.log_history))
        shutil.rmtree(checkpoints, ignore_errors=True)  # finished: a later run starts fresh
        summary = {
            "steps": int(result.global_step),
            "train_loss": float(result.training_loss),
            "train_seconds": round(seconds, 2),
            "samples_per_second": round(result.global_step * config.batch_size / max(seconds, 1e-9), 3),
            **{k: v for k, v in flags.items() if v},
        }
        if config.dev_fraction > 0 and trainer.state.best_model_checkpoint:
            # The model saved is the best checkpoint's (load_best_model_at_end), not the last step's.
            summary["best_step"] = int(trainer.state.best_model_checkpoint.rpartition("-")[2])
            summary["best_eval_loss"] = float(trainer.state.best_metric)
        import mlflow

        mlflow.log_metrics({k: float(v) for k, v in summary.items() if isinstance(v, int | float)})
        mlflow.set_tags({"resumed_from": resume or "", "base_model": config.base_model})
    logger.info("trained %d steps in %.1f s; model saved to %s", summary["steps"], seconds, output)
    return {"model": str(output), **summary, "mlflow_run_id": mlflow_run.info.run_id}
