"""Training helpers: what the train stage, ``bench/`` and a library user's own trainer share.

- :mod:`~pipeline.training.trainer`: precision flags, the loss by name, the trainer with its batch sampler,
  dev split, early stopping and MLflow callback;
- :mod:`~pipeline.training.samplers`: batch samplers that keep a query out of its own negatives;
- :mod:`~pipeline.training.dropout`: the same dropout with cheaper masks for CPU training;
- :mod:`~pipeline.training.checkpointing`: bounded activation memory for wide distillation steps;
- :mod:`~pipeline.training.distributed`: several processes under ``torchrun`` (gathered negatives, writers).

Nothing is imported here: ``pipeline.losses`` uses ``checkpointing`` and ``trainer`` uses the losses, so
importing this package must not pull in ``trainer`` (import the module you need).
"""
