"""Checks of what callers hand an index: ids, embeddings, subsets, counts and the index's own folder name.

Kept apart from the index classes so that every backend, ``retrieve`` and ``indexing`` check arguments the
same way, and every error names the argument (and position) at fault.

Example:
    >>> validate_ids(["a", 7])
    ['a', 7]
    >>> check_counts({"k_token": 0})
    Traceback (most recent call last):
    ...
    ValueError: k_token must be a positive integer, got 0
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.indexes.errors import DuplicateDocumentIdError

#: A document id: a string or an integer, returned exactly as it was given.
DocumentId = str | int

_COUNT_KINDS = {0: "a non-negative integer", 1: "a positive integer"}


def check_counts(values: dict[str, Any], *, minimum: int = 1, optional: bool = False) -> None:
    """Refuse any value of ``values`` (named by its key) that is not an ``int`` of at least ``minimum``.

    ``minimum`` is 1 (positive) or 0 (non-negative); ``optional`` lets ``None`` through. A bool is no count
    here, although Python calls it an ``int``: ``k_token=True`` is a mistake, not 1.
    """
    kind = _COUNT_KINDS[minimum] + (" or None" if optional else "")
    for name, value in values.items():
        if optional and value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ValueError(f"{name} must be {kind}, got {value!r}")


def check_k(k: Any) -> None:
    """A search's ``k``: a positive integer, numpy's included (callers often slice one from an array)."""
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")


def safe_index_path(index_folder: str | os.PathLike[str], index_name: str) -> Path:
    """``index_folder / index_name``, refusing names that could land outside ``index_folder``.

    Example:
        >>> safe_index_path("indexes", "scifact").as_posix()
        'indexes/scifact'
        >>> safe_index_path("indexes", "../x")
        Traceback (most recent call last):
        ...
        ValueError: index_name '../x' must be a plain folder name (no '/', '\\\\', '..' or leading '.')
    """
    if not isinstance(index_name, str) or not index_name:
        raise ValueError(f"index_name must be a non-empty string, got {index_name!r}")
    if (
        index_name in {".", ".."}
        or index_name.startswith(".")
        or any(ch in index_name for ch in ("/", "\\", "\x00"))
        or index_name != index_name.strip()
    ):
        raise ValueError(
            f"index_name {index_name!r} must be a plain folder name (no '/', '\\\\', '..' or leading '.')"
        )
    folder = Path(index_folder)
    path = folder / index_name
    # A symlink named like the index could still point elsewhere: check where it really resolves.
    if not path.resolve().is_relative_to(folder.resolve()):
        raise ValueError(f"index {path} resolves outside index_folder {folder.resolve()}")
    return path


def validate_ids(documents_ids: Any, *, argument: str = "documents_ids") -> list[DocumentId]:
    """Check ids are str or int (numpy integers become int) and unique; return them as a list."""
    if isinstance(documents_ids, str | bytes | int) or not isinstance(documents_ids, Iterable):
        raise ValueError(f"{argument} must be a list of str or int ids, got {type(documents_ids).__name__}")
    ids: list[DocumentId] = []
    seen: set[tuple[type, DocumentId]] = set()
    for position, value in enumerate(documents_ids):
        if isinstance(value, bool) or not isinstance(value, str | int | np.integer):
            raise ValueError(
                f"{argument}[{position}] = {value!r} ({type(value).__name__}): ids must be str or int"
            )
        # numpy scalars (np.str_, np.int64) become plain str / int, so they compare and serialise as such.
        value = str(value) if isinstance(value, str) else int(value)
        key = (type(value), value)
        if key in seen:
            raise DuplicateDocumentIdError(f"{argument}[{position}] = {value!r} appears more than once")
        seen.add(key)
        ids.append(value)
    return ids


def as_float_arrays(
    embeddings: Any, *, argument: str, dim: int | None, expected: int | None = None
) -> list[np.ndarray]:
    """Per-item ``(tokens, dim)`` float32 arrays; errors name ``argument[i]`` and the expected shape.

    A single 2-D ``(tokens, dim)`` array or tensor is one item, as PyLate reads it: it is what
    ``model.encode("one text")`` returns.
    """
    if isinstance(embeddings, np.ndarray | torch.Tensor):
        if embeddings.ndim == 2:
            embeddings = [embeddings]
        elif embeddings.ndim != 3:
            raise ValueError(f"{argument} must be 3-D (items, tokens, dim), got {tuple(embeddings.shape)}")
    elif not isinstance(embeddings, Sequence):
        raise ValueError(
            f"{argument} must be a list of (tokens, dim) arrays, got {type(embeddings).__name__}"
        )
    if expected is not None and len(embeddings) != expected:
        raise ValueError(f"{argument} has {len(embeddings)} items, expected {expected}")
    # Imported here: pipeline.scores loads sentence-transformers' kernels (seconds), which opening an index
    # does not need.
    from pipeline.scores.inputs import check_token_matrix

    arrays: list[np.ndarray] = []
    for position, item in enumerate(embeddings):
        if isinstance(item, torch.Tensor):
            item = item.detach().to("cpu", torch.float32).numpy()
        array = np.asarray(item, dtype=np.float32)
        check_token_matrix(array.shape, argument=argument, position=position, dim=dim, holder="index")
        if not np.isfinite(array).all():
            raise ValueError(f"{argument}[{position}] contains NaN or infinite values")
        dim = int(array.shape[1])
        arrays.append(array)
    return arrays


def normalize_subset(subset: Any, n_queries: int) -> list[set[tuple[type, DocumentId]]] | None:
    """``subset`` as one set of allowed id keys per query.

    ``subset`` is ``None`` (no filter), one list of ids applied to every query, or one list per query.
    """
    if subset is None:
        return None
    if isinstance(subset, str | bytes) or not isinstance(subset, Iterable):
        raise ValueError(f"subset must be a list of ids or one list of ids per query, got {subset!r}")
    subset = list(subset)
    per_query = bool(subset) and all(isinstance(s, list | tuple | set | frozenset) for s in subset)
    if per_query:
        if len(subset) != n_queries:
            raise ValueError(f"subset has {len(subset)} lists but there are {n_queries} queries")
        groups = subset
    else:
        groups = [subset] * n_queries
    normalized: list[set[tuple[type, DocumentId]]] = []
    cache: dict[int, set[tuple[type, DocumentId]]] = {}
    for position, group in enumerate(groups):
        if id(group) not in cache:  # the shared list is converted once, not once per query
            keys = set()
            for value in group:
                if isinstance(value, bool) or not isinstance(value, str | int | np.integer):
                    raise ValueError(f"subset[{position}] holds {value!r}: ids must be str or int")
                keys.add(id_key(value))
            cache[id(group)] = keys
        normalized.append(cache[id(group)])
    return normalized


def id_key(value: DocumentId) -> tuple[type, DocumentId]:
    """Ids "1" and 1 are different documents: key them by kind (str or int) and value."""
    if isinstance(value, str):
        return (str, str(value))
    return (int, int(value))
