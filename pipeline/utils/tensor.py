"""PyLate's tensor and distributed helpers: batching, tensors from lists, gathering across processes."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import Any, TypeVar

import numpy as np
import torch
from tqdm.auto import tqdm

logger = logging.getLogger(__name__)


T = TypeVar("T")


def convert_to_tensor(x: Any) -> torch.Tensor:
    """A tensor from a tensor (as is), a numpy array, or a list of arrays / tensors / lists of numbers.

    Lists are stacked, so their items must share one shape; an empty list gives an empty float tensor.
    Numpy arrays and lists of arrays become float32 where PyLate makes them so (lists), and keep their
    dtype otherwise (``torch.from_numpy``), as in PyLate.
    """
    if isinstance(x, torch.Tensor):
        return x
    if isinstance(x, np.ndarray):
        return torch.from_numpy(x)
    if isinstance(x, list | tuple):
        if len(x) == 0:
            return torch.tensor([], dtype=torch.float32)
        first = x[0]
        if isinstance(first, torch.Tensor):
            return torch.stack(list(x))
        if isinstance(first, np.ndarray):
            return torch.from_numpy(np.asarray(x, dtype=np.float32))
        return torch.tensor(x, dtype=torch.float32)
    raise TypeError(f"cannot convert {type(x).__name__} to a tensor (expected a tensor, an array or a list)")


def iter_batch(
    X: Sequence[T], batch_size: int, tqdm_bar: bool = True, desc: str = ""
) -> Iterator[Sequence[T]]:
    """Consecutive slices of ``X`` of ``batch_size`` items (the last may be shorter), with a progress bar."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    batches = (X[start : start + batch_size] for start in range(0, len(X), batch_size))
    total = -(-len(X) // batch_size)
    yield from tqdm(batches, total=total, desc=desc, disable=not tqdm_bar)


def get_rank() -> int:
    """This process's rank in distributed training (0 when not distributed)."""
    import torch.distributed as dist

    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def get_world_size() -> int:
    """Number of processes in distributed training (1 when not distributed)."""
    import torch.distributed as dist

    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def all_gather(tensor: torch.Tensor) -> list[torch.Tensor]:
    """One tensor per rank; this rank's is ``tensor`` itself (with its gradient), the others have none.

    PyLate's contract: a list (not a concatenation); ``[tensor]`` when not distributed, with one warning.
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        gathered = [torch.zeros_like(tensor) for _ in range(dist.get_world_size())]
        dist.all_gather(gathered, tensor)
        gathered[dist.get_rank()] = tensor
        return gathered
    _warn_not_distributed()
    return [tensor]


def all_gather_with_gradients(tensor: torch.Tensor) -> list[torch.Tensor]:
    """One tensor per rank, every one keeping its gradient (``torch.distributed.nn.all_gather``)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        import torch.distributed.nn

        return list(torch.distributed.nn.all_gather(tensor))
    _warn_not_distributed()
    return [tensor]


_warned_not_distributed = False


def _warn_not_distributed() -> None:
    global _warned_not_distributed
    if not _warned_not_distributed:
        logger.warning("all_gather outside distributed training: returning this process's tensor only")
        _warned_not_distributed = True
