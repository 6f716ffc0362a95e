"""Training helpers shared by the train stage and ``bench/``: precision flags, the loss by name, the trainer
(arguments, batch sampler, dev split, early stopping) and the loss curves.

Per-step metrics reach MLflow through transformers' own integration (``report_to=["mlflow"]``): inside an
active MLflow run (the train stage's) its ``MLflowCallback`` logs every step's ``loss``, ``grad_norm``,
``learning_rate``, the dev loss and the final summary to that run, plus the trainer's arguments as params.
Outside a run it would start one of its own, so callers without one keep ``report_to="none"``.

They sit outside the train stage so that another caller (the PyLate peer benchmark, a notebook) uses the
same rules without importing a stage.

Example:
    >>> training_loss([{"loss": 2.0, "step": 1}, {"train_loss": 2.0, "step": 1}])
    [{'step': 1, 'loss': 2.0}]
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from transformers.trainer_callback import ProgressCallback

from pipeline.project.config import TrainParams

logger = logging.getLogger(__name__)


def precision_flags(precision: str, device: str | None = None) -> dict[str, bool]:
    """``fp16``/``bf16`` trainer flags for a precision setting.

    ``auto`` is bf16 on CUDA (fp16 where the GPU lacks bf16) and bf16 autocast on a CPU that computes
    bfloat16 natively (:func:`pipeline.models.precision.cpu_has_native_bf16`), else float32. On a CPU that
    choice rests on SciFact: the train stage in bf16 scored within 0.005 nDCG@10 of float32, mean over three
    seeds (``bench/records/train_precision_seeds.json``).

    Example:
        >>> precision_flags("fp32", "cpu")
        {'fp16': False, 'bf16': False}
        >>> precision_flags("bf16")
        {'fp16': False, 'bf16': True}
    """
    import torch

    from pipeline.models.precision import cpu_has_native_bf16

    if precision == "fp16":
        return {"fp16": True, "bf16": False}
    if precision == "bf16":
        return {"fp16": False, "bf16": True}
    if precision != "auto":
        return {"fp16": False, "bf16": False}
    if device is None or str(device).startswith("cuda"):
        if torch.cuda.is_available():
            bf16 = torch.cuda.is_bf16_supported()
            return {"fp16": not bf16, "bf16": bf16}
        if device is not None:
            return {"fp16": False, "bf16": False}  # asked for a GPU there is none of: the trainer says so
    on_cpu = device is None or str(device).startswith("cpu")  # not another accelerator (mps, xpu)
    return {"fp16": False, "bf16": on_cpu and cpu_has_native_bf16()}


def document_forward_rows(model: Any, config: TrainParams) -> int | None:
    """Document rows per encoder forward in the contrastive loss: a column's rows on CPU, all on GPU.

    sentence-transformers merges the positive and negative columns into one forward (made for GPUs, where
    larger batches fill the device). On CPU that is slower: the memory-bound work (dropout masks, softmax and
    GELU over rows x heads x tokens x tokens) outgrows the caches. Measured on SciFact batches (16 triplets,
    180-token documents; forward + backward, this 2-core CPU): 6.77 s per step merged, 4.89 s in forwards of
    16 rows, 4.98 s of 8. The loss and its gradients are the same either way (up to float rounding).

    Example:
        >>> from types import SimpleNamespace
        >>> import torch
        >>> document_forward_rows(SimpleNamespace(device=torch.device("cpu")), SimpleNamespace(batch_size=16))
        16
    """
    return config.batch_size if model.device.type == "cpu" else None


def build_loss(model: Any, config: TrainParams, kind: str) -> Any:
    """The loss for ``train.loss``, checked against the prepared data's kind. Under ``torchrun`` the
    contrastive losses share their documents across processes (``train.gather_across_devices``)."""
    from pipeline import losses
    from pipeline.training.distributed import launch_world_size, resolve_gather

    if config.loss == "distillation" and kind != "kd":
        raise ValueError("train.loss is 'distillation' but prepare produced triplets: use prepare.source=kd")
    if config.loss != "distillation" and kind == "kd":
        raise ValueError(
            f"train.loss is {config.loss!r} but prepare produced KD rows: use train.loss=distillation"
        )
    world_size = launch_world_size()
    gather = resolve_gather(config.gather_across_devices, world_size) and config.loss != "distillation"
    if gather:
        logger.info("%s loss: documents gathered across %d processes", config.loss, world_size)
    if config.loss == "contrastive":
        return losses.Contrastive(
            model=model,
            temperature=config.temperature,
            mini_batch_size=document_forward_rows(model, config),
            gather_across_devices=gather,
        )
    if config.loss == "cached_contrastive":
        return losses.CachedContrastive(
            model=model,
            mini_batch_size=config.mini_batch_size,
            temperature=config.temperature,
            gather_across_devices=gather,
        )
    return losses.Distillation(model=model)


def training_loss(log_history: list[dict[str, Any]]) -> list[dict[str, float]]:
    """The per-step loss from the trainer's log (the final summary entry has ``train_loss``, not ``loss``).

    Example:
        >>> training_loss([{"loss": 2.5, "step": 1}, {"loss": 1.5, "step": 2}, {"train_loss": 2, "step": 2}])
        [{'step': 1, 'loss': 2.5}, {'step': 2, 'loss': 1.5}]
    """
    return [
        {"step": int(entry["step"]), "loss": float(entry["loss"])} for entry in log_history if "loss" in entry
    ]


def training_arguments(
    config: TrainParams,
    output_dir: Path,
    batch_sampler: Any,
    *,
    with_dev: bool,
    report_to: str | list[str] = "none",
) -> Any:
    """The trainer's ``SentenceTransformerTrainingArguments`` for ``train.*``; ``with_dev`` adds the dev
    loss every ``train.eval_steps`` steps, with a checkpoint each time and the best one loaded at the end.
    ``report_to=["mlflow"]`` logs to the active MLflow run (see the module docstring)."""
    import torch
    from sentence_transformers import SentenceTransformerTrainingArguments

    from pipeline.training.distributed import launch_world_size

    evaluation: dict[str, Any] = {}
    if with_dev:
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
    return SentenceTransformerTrainingArguments(
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
        report_to=report_to,
        use_cpu=config.device == "cpu" or not torch.cuda.is_available(),
        batch_sampler=batch_sampler,
        # Several processes: every step's batches must be full and equal for the gathered loss
        # (losses.Contrastive's gather_across_devices places a process's positives at rank x rows).
        dataloader_drop_last=launch_world_size() > 1,
        **evaluation,
        **precision_flags(config.precision, config.device),
    )


def build_trainer(
    config: TrainParams,
    model: Any,
    loss: Any,
    dataset: Any,
    kind: str,
    output_dir: Path,
    *,
    callbacks: list[Any] | None = None,
    report_to: str | list[str] = "none",
) -> Any:
    """The stage's trainer: its arguments, batch sampler, dev split and callbacks (the bench times this).

    ``report_to=["mlflow"]`` (the train stage, inside its MLflow run) logs every step to that run.

    The model's dropout becomes :mod:`pipeline.training.dropout`'s (in place): the same masks' distribution,
    drawn faster on CPU.

    With ``train.dev_fraction`` > 0 a share of the training queries becomes a dev split: the dev loss is
    computed (and logged) every ``train.eval_steps`` steps, a checkpoint is saved at each evaluation, and
    the best one (lowest dev loss) is loaded at the end; ``train.early_stopping_patience`` stops early.
    """
    from sentence_transformers import SentenceTransformerTrainer
    from transformers import EarlyStoppingCallback

    from pipeline import utils
    from pipeline.data.dev_split import split_dev
    from pipeline.training import samplers
    from pipeline.training.dropout import use_cheap_dropout

    dev = None
    if config.dev_fraction > 0:
        dataset, dev = split_dev(dataset, config.dev_fraction, config.seed, kind)
        logger.info("dev split: %d training rows, %d dev rows", len(dataset), len(dev))
    batch_sampler = samplers.choose_batch_sampler(config.batch_sampler, dataset, kind)
    args = training_arguments(
        config, output_dir, batch_sampler, with_dev=dev is not None, report_to=report_to
    )
    # The same dropout with cheaper masks on CPU (where it is most of a step's non-matmul time); GPU steps
    # and evaluation take torch's own path.
    use_cheap_dropout(model)
    extra = list(callbacks or [])
    if config.early_stopping_patience is not None:
        extra.append(EarlyStoppingCallback(early_stopping_patience=config.early_stopping_patience))
    trainer = SentenceTransformerTrainer(
        model=model,
        args=args,
        train_dataset=dataset,
        eval_dataset=dev,
        loss=loss,
        data_collator=utils.ColBERTCollator(model.tokenize),
        callbacks=extra,
    )
    # logging_steps=1 feeds MLflow's per-step loss curve; the console gets a line now and then, not each step.
    if trainer.pop_callback(ProgressCallback) is not None:
        trainer.add_callback(PeriodicProgressCallback())
    return trainer


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


class PeriodicProgressCallback(ProgressCallback):
    """transformers' progress bar, but a step's log line (loss, learning rate) is printed only every 10% of
    the steps or every ``interval`` seconds, whichever comes first; evaluation and the final summary always.

    The train stage logs every step (``logging_steps=1``) for MLflow's loss curve; transformers' own bar
    prints each of those logs, one line per step in an Airflow task log or a ``dvc repro`` transcript.

    Example:
        >>> from types import SimpleNamespace
        >>> lines = []
        >>> callback = PeriodicProgressCallback(interval=60, clock=lambda: 0.0)
        >>> callback.training_bar = SimpleNamespace(write=lines.append)
        >>> for step in range(1, 101):
        ...     state = SimpleNamespace(is_world_process_zero=True, global_step=step, max_steps=100)
        ...     callback.on_log(None, state, None, {"loss": 1.0 / step})
        >>> len(lines), lines[-1]
        (11, "{'loss': '0.01'}")
    """

    def __init__(self, interval: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.interval = interval
        self.clock = clock
        self._printed_step = 0
        self._printed_at: float | None = None

    def on_log(
        self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any
    ) -> None:
        logs = logs or {}
        step_log = "loss" in logs and not any(key.startswith(("eval_", "train_")) for key in logs)
        if step_log and not self._due(state):
            return
        self._printed_step = state.global_step
        self._printed_at = self.clock()
        super().on_log(args, state, control, logs=logs, **kwargs)

    def _due(self, state: Any) -> bool:
        if state.global_step >= state.max_steps or self._printed_at is None:
            return True
        tenth = max(1, state.max_steps // 10)
        return (
            state.global_step - self._printed_step >= tenth
            or self.clock() - self._printed_at >= self.interval
        )
