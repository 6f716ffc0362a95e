"""Per-text embeddings as the scoring functions take them: checked float32 ``(tokens, dim)`` tensors.

Light on purpose (numpy and torch, no sentence-transformers), so that code which only checks or converts
embeddings, an index's included, need not load the scoring kernels.

Example:
    >>> import numpy as np
    >>> frozen = np.ones((3, 2))
    >>> frozen.flags.writeable = False            # a memory-mapped store's arrays are read-only
    >>> [t.shape for t in as_tensors(frozen, argument="documents")]
    [torch.Size([3, 2])]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

__all__ = ["EmbeddingsLike", "as_tensors"]

EmbeddingsLike = Sequence[np.ndarray] | Sequence[torch.Tensor] | np.ndarray | torch.Tensor


def as_tensors(embeddings: Any, *, argument: str, dim: int | None = None) -> list[torch.Tensor]:
    """Per-text embeddings as float32 2-D tensors, checking shapes; errors name ``argument`` and the index."""
    if isinstance(embeddings, np.ndarray | torch.Tensor) and embeddings.ndim == 2:
        embeddings = [embeddings]
    tensors: list[torch.Tensor] = []
    for index, item in enumerate(embeddings):
        tensor = _as_tensor(item)
        if tensor.ndim != 2:
            raise ValueError(
                f"{argument}[{index}] must be a 2-D (tokens, dim) array, got shape {tuple(tensor.shape)}"
            )
        if tensor.shape[0] == 0:
            raise ValueError(f"{argument}[{index}] is empty (0 tokens)")
        if dim is not None and tensor.shape[1] != dim:
            raise ValueError(f"{argument}[{index}] has dimension {tensor.shape[1]}, expected {dim}")
        dim = int(tensor.shape[1])
        tensors.append(tensor.float())
    return tensors


def _as_tensor(item: Any) -> torch.Tensor:
    if isinstance(item, torch.Tensor):
        return item
    array = np.asarray(item)
    if not array.flags.writeable:
        # torch shares a numpy array's memory and warns that it may write to a read-only one; copying (once,
        # in the float32 every tensor ends in) keeps the caller's memory-mapped or frozen array untouched.
        array = np.array(array, dtype=np.float32)
    return torch.as_tensor(array)
