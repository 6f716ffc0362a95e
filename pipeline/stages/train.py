"""``train``: fine-tune a ColBERT model on the prepared training set.

Runs sentence-transformers' trainer with the configured loss (contrastive, cached contrastive or
distillation), checkpoints every ``train.save_steps`` steps to ``<output>-checkpoints/`` and, when re-run
after a crash with the same params, resumes from the last checkpoint. The finished model replaces
``train.output`` (default ``models/colbert``) in one rename. Precision ``auto`` picks bf16 (or fp16) on a
GPU and fp32 on the CPU. Per-step loss goes to the stage's MLflow run through transformers' own MLflow
integration (``report_to=["mlflow"]``); with ``tracking.system_metrics`` the run also samples CPU, memory
and GPU use (``system/*``). The prepared training set is the run's dataset input (its DVC md5 the digest).

Batches keep a query out of its own in-batch negatives (``train.batch_sampler``, see
``pipeline.training.samplers``). With ``train.dev_fraction`` > 0, whole training queries are held out as a dev
split: the dev loss is logged every ``train.eval_steps`` steps and the model saved is the checkpoint with the
lowest one (``train.early_stopping_patience`` stops training early). ``train.query_length`` sets the query
tokens.

Under ``torchrun --nproc_per_node N -m pipeline train`` every process trains (DDP; ``train.batch_size`` rows
each), the contrastive losses share their documents across processes (``train.gather_across_devices``, on by
default there) and only rank 0 writes: the MLflow run, the checkpoints' marker, the model, the result file.

Example:
    $ colbert-pipeline train --set train.max_steps=20
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import Any

from pipeline.ops import lineage, tracking
from pipeline.project.config import Params, TrainParams
from pipeline.project.io import atomic_directory, atomic_write_json, read_json
from pipeline.project.layout import DEV_LOSS_FILE, TRAINING_LOSS_FILE, Layout

logger = logging.getLogger(__name__)


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


def _checkpoint_to_resume(folder: Path, fingerprint: str, remove_stale: bool = True) -> str | None:
    """The last checkpoint of an interrupted run with the same params, else None (stale ones are removed
    by the process that writes: under torchrun the other ranks only read)."""
    if not folder.is_dir():
        return None
    marker = folder / "params.sha"
    if not marker.is_file() or marker.read_text().strip() != fingerprint:
        if remove_stale:
            shutil.rmtree(folder)
        return None
    checkpoints = sorted(folder.glob("checkpoint-*"), key=lambda p: int(p.name.rpartition("-")[2]))
    return str(checkpoints[-1]) if checkpoints else None


def run(params: Params, project: Path) -> dict[str, Any]:
    """Fine-tune ``train.base_model`` on ``<prepare.output>/train`` and save it to ``train.output``."""
    from pipeline import utils
    from pipeline.training.distributed import is_main_process

    config = params.train
    layout = Layout(params, project)
    dataset, kind = load_training_set(layout.train_data, config)
    # Every row (KD joins included) is checked before the model loads: a bad row names its index.
    utils.check_training_dataset(dataset)
    if not is_main_process():
        # torchrun's other ranks train alongside rank 0 and write nothing: no MLflow run, no model.
        summary, _ = _train(config, layout, dataset, kind, main=False)
        return summary
    with tracking.stage_run("train", params, project, system_metrics=True) as mlflow_run:
        summary, resume = _train(config, layout, dataset, kind, main=True)
        import mlflow

        tracking.log_numbers(summary)
        mlflow.set_tags({"resumed_from": resume or "", "base_model": config.base_model})
    logger.info(
        "trained %d steps in %.1f s; model saved to %s",
        summary["steps"],
        summary["train_seconds"],
        layout.model,
    )
    return {"model": str(layout.model), **summary, "mlflow_run_id": mlflow_run.info.run_id}


def _train(
    config: TrainParams, layout: Layout, dataset: Any, kind: str, *, main: bool
) -> tuple[dict, str | None]:
    """Train (resuming a matching checkpoint) and, on the writing process, save the model; the summary."""
    from transformers import set_seed

    from pipeline import models
    from pipeline.training.distributed import launch_world_size
    from pipeline.training.trainer import build_loss, build_trainer, precision_flags

    output, checkpoints = layout.model, layout.checkpoints
    set_seed(config.seed)
    # train.precision governs training; evaluators' encode calls stay float32 (not the library's auto).
    model = models.ColBERT(
        model_name_or_path=config.base_model,
        device=config.device,
        query_length=config.query_length,
        encode_precision="fp32",
    )
    loss = build_loss(model, config, kind)
    fingerprint = lineage.params_hash(
        {"train": config.model_dump(mode="json"), "data": str(layout.train_data)}
    )
    resume = _checkpoint_to_resume(checkpoints, fingerprint, remove_stale=main)
    if main:
        checkpoints.mkdir(parents=True, exist_ok=True)
        (checkpoints / "params.sha").write_text(fingerprint)
    flags = precision_flags(config.precision, config.device)
    # transformers' MLflowCallback finds the stage's run active and logs every step into it (rank 0 only).
    report_to = ["mlflow"] if main else "none"
    trainer = build_trainer(config, model, loss, dataset, kind, checkpoints, report_to=report_to)
    if resume:
        logger.info("resuming from %s", resume)
    started = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=resume)
    seconds = time.perf_counter() - started
    if main:
        _save(config, model, trainer, output)
        shutil.rmtree(checkpoints, ignore_errors=True)  # finished: a later run starts fresh
    summary = {
        "steps": int(result.global_step),
        "train_loss": float(result.training_loss),
        "train_seconds": round(seconds, 2),
        # batch_size is per process: a step trains on batch_size rows in each of them.
        "samples_per_second": round(
            result.global_step * config.batch_size * launch_world_size() / max(seconds, 1e-9), 3
        ),
        **{k: v for k, v in flags.items() if v},
    }
    if config.dev_fraction > 0 and trainer.state.best_model_checkpoint:
        # The model saved is the best checkpoint's (load_best_model_at_end), not the last step's.
        summary["best_step"] = int(trainer.state.best_model_checkpoint.rpartition("-")[2])
        summary["best_eval_loss"] = float(trainer.state.best_metric)
    return summary, resume


def _save(config: TrainParams, model: Any, trainer: Any, output: Path) -> None:
    """The trained model, with its loss curves, replacing ``output`` in one rename."""
    from pipeline.training.trainer import dev_curve, training_loss

    # The generated model card would carry the training time: nothing time-specific goes into a DVC-hashed
    # output, so the same training in two workspaces gives the same md5 (the time is in the MLflow run).
    model.model_card_data._training_start_time = None
    with atomic_directory(output) as staging:
        model.save_pretrained(str(staging))
        # The model carries its own training curve: the quality report plots it next to the scores.
        atomic_write_json(staging / TRAINING_LOSS_FILE, training_loss(trainer.state.log_history))
        if config.dev_fraction > 0:
            atomic_write_json(staging / DEV_LOSS_FILE, dev_curve(trainer.state.log_history))
