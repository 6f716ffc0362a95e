"""Checks of a training dataset before any training: every row and column, named when wrong."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from typing import Any

logger = logging.getLogger(__name__)


#: Columns read as the teacher's scores / the label, PyLate's and sentence-transformers' names.
LABEL_COLUMNS = ("scores", "score", "label", "labels")
#: Columns whose first position is the query, in the names sentence-transformers' datasets use.
QUERY_COLUMNS = ("query", "anchor", "question")


class TrainingDataError(ValueError):
    """A training row is unusable; the message names the row (or query id) and the column."""


def _is_id_column(name: str) -> bool:
    # PyLate never tokenizes id columns: they are join keys, not text.
    return name == "id" or name.endswith(("_id", "_ids"))


def _excerpt(value: Any, width: int = 40) -> str:
    text = str(value)
    return repr(text if len(text) <= width else text[: width - 1] + "…")


def _check_columns(columns: dict[str, list[Any]], where: Callable[[int], str]) -> list[str]:
    """Validate one batch (column -> values) and return its text columns in order.

    ``where(i)`` describes row ``i`` for the error message (a dataset row number, or a batch position).
    """
    names = [name for name in columns if name != "dataset_name" and not _is_id_column(name)]
    labels = [name for name in names if name in LABEL_COLUMNS]
    texts = [name for name in names if name not in LABEL_COLUMNS]
    if not texts:
        raise TrainingDataError(f"no text columns in the training data (columns: {list(columns)})")
    for name in QUERY_COLUMNS:
        # The losses read columns by position: a query column anywhere but first would train backwards.
        if name in texts and texts.index(name) != 0:
            raise TrainingDataError(
                f"column {name!r} must come first (columns: {texts}); reorder with dataset.select_columns"
            )
    if len(texts) < 2:
        expected = "a 'positive' (or 'documents') column" if texts[0] in QUERY_COLUMNS else "a query column"
        raise TrainingDataError(
            f"the training data has only the column {texts[0]!r}: it also needs {expected}"
        )
    n_rows = len(columns[texts[0]])
    list_lengths: dict[str, int] = {}
    # KD rows (a list of teacher scores per row) may hold different numbers of documents: the collator
    # pads them and the loss masks the padding. Without per-row scores, ragged lists stay an error.
    ragged_allowed = any(isinstance(value, (list, tuple)) for name in labels for value in columns[name])
    row_lengths: dict[str, list[int]] = {}
    for name in texts:
        for row, value in enumerate(columns[name]):
            if value is None:
                raise TrainingDataError(f"{where(row)}: column {name!r} is missing (None)")
            if isinstance(value, str):
                if not value.strip():
                    raise TrainingDataError(f"{where(row)}: column {name!r} is an empty text")
                continue
            if not isinstance(value, (list, tuple)):
                raise TrainingDataError(
                    f"{where(row)}: column {name!r} holds {type(value).__name__}, not text"
                )
            if len(value) == 0:
                raise TrainingDataError(f"{where(row)}: column {name!r} is an empty list")
            bad = next(
                (i for i, item in enumerate(value) if not isinstance(item, str) or not item.strip()), None
            )
            if bad is not None:
                raise TrainingDataError(f"{where(row)}: column {name!r}, item {bad} is not a non-empty text")
            expected_length = list_lengths.setdefault(name, len(value))
            row_lengths.setdefault(name, [0] * n_rows)[row] = len(value)
            if len(value) != expected_length and not ragged_allowed:
                raise TrainingDataError(
                    f"{where(row)}: column {name!r} has {len(value)} items, the rows before it have "
                    f"{expected_length} (use KDProcessing(n_ways=...) to give every row the same count)"
                )
    for name in labels:
        for row, value in enumerate(columns[name]):
            values = value if isinstance(value, (list, tuple)) else [value]
            if value is None or any(v is None or not math.isfinite(float(v)) for v in values):
                raise TrainingDataError(
                    f"{where(row)}: column {name!r} holds a missing, NaN or infinite score"
                )
            if isinstance(value, (list, tuple)):
                documents = next((row_lengths[t][row] for t in texts if t in row_lengths), len(texts) - 1)
                if len(value) != documents:
                    raise TrainingDataError(
                        f"{where(row)}: column {name!r} has {len(value)} scores for {documents} documents"
                    )
    if any(len(columns[name]) != n_rows for name in names):
        raise TrainingDataError("the training columns have different lengths")
    return texts


def check_training_dataset(dataset: Any, batch_size: int = 1000) -> int:
    """Validate every row of a training dataset before training starts; returns the row count.

    Runs the collator's checks (missing or empty texts, empty negative lists, ragged document lists,
    NaN scores, score/document count mismatch) over the whole dataset, transforms (``KDProcessing``)
    included, and names the dataset row of the first problem.

    Example:
        >>> from datasets import Dataset
        >>> check_training_dataset(Dataset.from_list([{"query": "q", "positive": "p", "negative": "n"}]))
        1
    """
    total = 0
    for start in range(0, len(dataset), batch_size):
        batch = dataset[start : start + batch_size]
        if not isinstance(batch, Mapping):  # pragma: no cover - datasets always returns a dict of columns
            raise TypeError(f"expected a dict of columns from the dataset, got {type(batch).__name__}")
        _check_columns(dict(batch), lambda row, start=start: f"row {start + row}")
        total += len(next(iter(batch.values())))
    if total == 0:
        raise TrainingDataError("the training dataset is empty")
    return total
