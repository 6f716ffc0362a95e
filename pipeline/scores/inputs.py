"""Per-text embeddings as the scoring functions take them: checked float32 ``(tokens, dim)`` tensors.

The one shape check of per-text embeddings (:func:`check_token_matrix`), which the indexes and their
embedding store use too. The module needs only numpy and torch, but importing it runs
``pipeline/scores/__init__.py``, which loads sentence-transformers' kernels: index code imports it when
it first checks embeddings, not when an index is opened.

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

__all__ = ["EmbeddingsLike", "as_tensors", "check_token_matrix"]

EmbeddingsLike = Sequence[np.ndarray] | Sequence[torch.Tensor] | np.ndarray | torch.Tensor


def as_tensors(embeddings: Any, *, argument: str, dim: int | None = None) -> list[torch.Tensor]:
    """Per-text embeddings as float32 2-D tensors, checking shapes; errors name ``argument`` and the index."""
    if isinstance(embeddings, np.ndarray | torch.Tensor) and embeddings.ndim == 2:
        embeddings = [embeddings]
    tensors: list[torch.Tensor] = []
    for index, item in enumerate(embeddings):
        tensor = _as_tensor(item)
        dim = check_token_matrix(tuple(tensor.shape), argument=argument, position=index, dim=dim)
        tensors.append(tensor.float())
    return tensors


def check_token_matrix(
    shape: tuple[int, ...], *, argument: str, position: int, dim: int | None, holder: str | None = None
) -> int:
    """Check one text's ``(tokens, dim)`` shape against ``dim`` (``None``: any); its dimension.

    Errors name ``argument[position]``; ``holder`` (e.g. ``"index"``) says what fixed ``dim``.

    Example:
        >>> check_token_matrix((5, 8), argument="documents", position=0, dim=None)
        8
        >>> check_token_matrix((5, 8), argument="documents", position=2, dim=16)
        Traceback (most recent call last):
        ValueError: documents[2] has dimension 8, expected 16
    """
    if len(shape) != 2:
        raise ValueError(f"{argument}[{position}] must be a 2-D (tokens, dim) array, got shape {shape}")
    if shape[0] == 0:
        raise ValueError(f"{argument}[{position}] is empty (0 tokens)")
    if dim is not None and shape[1] != dim:
        expected = (
            f"but the {holder} holds {dim}-dim embeddings (was it encoded by another model?)"
            if holder
            else f"expected {dim}"
        )
        raise ValueError(f"{argument}[{position}] has dimension {shape[1]}, {expected}")
    return int(shape[1])


def _as_tensor(item: Any) -> torch.Tensor:
    if isinstance(item, torch.Tensor):
        return item
    array = np.asarray(item)
    if not array.flags.writeable:
        # torch shares a numpy array's memory and warns that it may write to a read-only one; copying (once,
        # in the float32 every tensor ends in) keeps the caller's memory-mapped or frozen array untouched.
        array = np.array(array, dtype=np.float32)
    return torch.as_tensor(array)
