"""Training helpers shared by the train stage and ``bench/``: precision flags, the loss by name, the loss
curve, and a callback that logs the trainer's numbers to MLflow.

They sit outside the train stage so that another caller (the PyLate peer benchmark, a notebook) uses the
same rules without importing a stage.

Example:
    >>> training_loss([{"loss": 2.0, "step": 1}, {"train_loss": 2.0, "step": 1}])
    [{'step': 1, 'loss': 2.0}]
"""

from __future__ import annotations

from typing import Any

from transformers import TrainerCallback

from pipeline.config import TrainParams


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


def training_loss(log_history: list[dict[str, Any]]) -> list[dict[str, float]]:
    """The per-step loss from the trainer's log (the final summary entry has ``train_loss``, not ``loss``).

    Example:
        >>> training_loss([{"loss": 2.5, "step": 1}, {"loss": 1.5, "step": 2}, {"train_loss": 2, "step": 2}])
        [{'step': 1, 'loss': 2.5}, {'step': 2, 'loss': 1.5}]
    """
    return [
        {"step": int(entry["step"]), "loss": float(entry["loss"])} for entry in log_history if "loss" in entry
    ]


class MlflowLossCallback(TrainerCallback):
    """Log the trainer's numeric logs (``loss``, ``learning_rate``, ``grad_norm``...) per step to MLflow.

    Logs to ``run_id`` if given, else to the active run (the stage run). Only the main process logs.

    Example (inside an MLflow run, here a throwaway one):
        >>> import mlflow
        >>> from types import SimpleNamespace
        >>> with mlflow.start_run() as run:
        ...     state = SimpleNamespace(global_step=3)
        ...     MlflowLossCallback().on_log(None, state, None, {"loss": 0.5, "epoch": 1})
        >>> mlflow.get_run(run.info.run_id).data.metrics["loss"]
        0.5
    """

    def __init__(self, run_id: str | None = None) -> None:
        self.run_id = run_id

    def on_log(
        self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any
    ) -> None:
        import mlflow

        if not getattr(state, "is_world_process_zero", True):
            return
        numbers = {
            key: float(value)
            for key, value in (logs or {}).items()
            if isinstance(value, int | float) and not isinstance(value, bool)
        }
        if not numbers:
            return
        if self.run_id:
            mlflow.log_metrics(numbers, step=state.global_step, run_id=self.run_id)
        elif mlflow.active_run() is not None:
            mlflow.log_metrics(numbers, step=state.global_step)
