"""Training with several processes (``torchrun``): who writes, whether in-batch negatives are shared, and
the check that makes sharing them safe.

Under ``torchrun --nproc_per_node N`` every process runs the same training; transformers' trainer wraps the
model in DDP (NCCL on GPUs, gloo on CPUs) and averages the gradients over the processes after each backward.
With ``gather_across_devices`` the contrastive losses share their documents: each process's queries are
scored against the documents of every process (gathered with their gradients), the positive's column is
offset by the process's rank, and each process's loss is the mean over its own queries. What that gives,
as ``tests/library/test_distributed_loss.py`` checks with two gloo processes against one process on the
same global batch:

- the mean of the processes' losses is the one-process loss on the concatenated batch;
- the DDP-averaged gradient is the one-process gradient (the gather's backward sums each document's
  gradient over the processes that scored it; DDP's average over processes then equals the mean over all
  queries).

PyLate multiplies its gathered loss by the world size, so its logged loss and its gradients are N times
these; here the loss and the gradients stay those of the global batch at any N.

The rank and world size are read from torchrun's environment (``RANK``, ``WORLD_SIZE``) before the trainer
initialises the process group, so the stage decides early which process writes.

Example:
    >>> launch_world_size({"WORLD_SIZE": "2"}), launch_rank({"RANK": "1"}), is_main_process({"RANK": "1"})
    (2, 1, False)
    >>> resolve_gather("auto", world_size=1), resolve_gather("auto", world_size=4), resolve_gather(False, 4)
    (False, True, False)
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from types import ModuleType
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    import torch

__all__ = [
    "check_equal_batches",
    "is_main_process",
    "launch_rank",
    "launch_world_size",
    "resolve_gather",
]


def _env_int(environ: Mapping[str, str] | None, name: str, default: int) -> int:
    value = (os.environ if environ is None else environ).get(name, "")
    if not value.strip():
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name} must be an integer, got {value!r}") from None


def _initialised_group() -> ModuleType | None:
    """``torch.distributed`` when this process has initialised a process group, else ``None``.

    A process group exists only once torch is imported, so a process that has not imported it (a stage's
    ``prepare``, which needs no torch: 3 s of imports saved per task) is not made to import it to find out.
    """
    if "torch" not in sys.modules:
        return None
    import torch.distributed as dist

    return dist if dist.is_available() and dist.is_initialized() else None


def launch_world_size(environ: Mapping[str, str] | None = None) -> int:
    """Processes in this training: the initialised process group's size, else torchrun's ``WORLD_SIZE``
    (1 when launched without torchrun)."""
    dist = _initialised_group() if environ is None else None
    if dist is not None:
        return dist.get_world_size()
    return _env_int(environ, "WORLD_SIZE", 1)


def launch_rank(environ: Mapping[str, str] | None = None) -> int:
    """This process's global rank: the process group's, else torchrun's ``RANK`` (0 without torchrun)."""
    dist = _initialised_group() if environ is None else None
    if dist is not None:
        return dist.get_rank()
    return _env_int(environ, "RANK", 0)


def is_main_process(environ: Mapping[str, str] | None = None) -> bool:
    """Whether this process writes the outputs and the MLflow run (rank 0)."""
    return launch_rank(environ) == 0


def resolve_gather(setting: Literal["auto"] | bool, world_size: int) -> bool:
    """``train.gather_across_devices``: ``auto`` shares documents whenever there are several processes."""
    if setting == "auto":
        return world_size > 1
    if not isinstance(setting, bool):
        raise ValueError(f"train.gather_across_devices must be auto, true or false, got {setting!r}")
    return setting


def check_equal_batches(rows: int, device: torch.device | None = None) -> None:
    """Raise, on every process, when the processes' batches differ in size (a no-op when not distributed).

    The gathered loss places a process's positives at ``rank * rows``: that holds only when every process
    has the same number of rows, and gathering tensors of different shapes fails or hangs inside the
    collective. One all-reduce of two integers per step finds it first, with a message that says which
    sizes met (the train stage drops the last, short batch under several processes for this reason).
    """
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return
    # MAX of (rows, -rows) gives the largest and the smallest batch in one collective.
    sizes = torch.tensor([rows, -rows], dtype=torch.long, device=device)
    dist.all_reduce(sizes, op=dist.ReduceOp.MAX)
    largest, smallest = int(sizes[0]), -int(sizes[1])
    if largest != smallest:
        raise ValueError(
            f"gather_across_devices needs the same batch size on every process: rank {dist.get_rank()} has "
            f"{rows} rows, the processes range from {smallest} to {largest} "
            "(drop the last incomplete batch: dataloader_drop_last=True)"
        )
