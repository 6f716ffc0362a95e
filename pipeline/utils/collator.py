"""The ``ColBERTCollator``: sentence-transformers' multi-vector collator with PyLate's conveniences."""

from __future__ import annotations

import inspect
import logging
import math
from collections.abc import Callable, Sequence
from typing import Any

from sentence_transformers.multi_vector_encoder.data_collator import MultiVectorEncoderDataCollator

from pipeline.utils.checks import (
    LABEL_COLUMNS,
    QUERY_COLUMNS,
    _check_columns,
    _excerpt,
)

logger = logging.getLogger(__name__)


class ColBERTCollator(MultiVectorEncoderDataCollator):
    """Collate training rows for ColBERT losses; pass it as ``data_collator=`` to the trainer.

    Args:
        tokenize_fn: ``model.tokenize`` (PyLate style, called with ``is_query=``) or any
            sentence-transformers ``preprocess``-like callable (called with ``prompt=`` and ``task=``).
            May be given positionally, as in PyLate's docs.
        valid_label_columns: Columns read as the label; default ``scores``, ``score``, ``label``, ``labels``.
        router_mapping: Column -> task overrides (``"query"`` / ``"document"``); by default the first
            column is the query and the others are documents.
        prompts: Extra prompt text per column (or one for all); added after the model's prefix.
        max_length: Training-only token cap, as in sentence-transformers.

    Rows may hold a list column (``documents`` from :class:`KDProcessing`, or ``negatives``): it is
    spread into ``documents_1 ... documents_N`` columns, which is what the losses read.

    Example:
        >>> from pipeline import models
        >>> model = models.ColBERT()
        >>> batch = ColBERTCollator(model.tokenize)([{"query": "q", "positive": "p"}])
        >>> batch["query_input_ids"].shape
        torch.Size([1, 32])
    """

    def __init__(
        self,
        tokenize_fn: Callable[..., dict[str, Any]] | None = None,
        valid_label_columns: Sequence[str] | None = None,
        router_mapping: dict[str, str] | None = None,
        prompts: str | dict[str, str] | None = None,
        max_length: int | dict[str, int] | None = None,
        *,
        preprocess_fn: Callable[..., dict[str, Any]] | None = None,
    ) -> None:
        function = tokenize_fn if tokenize_fn is not None else preprocess_fn
        if function is None or not callable(function):
            raise TypeError(
                "ColBERTCollator needs tokenize_fn, e.g. ColBERTCollator(tokenize_fn=model.tokenize)"
            )
        try:
            self._pylate_style = "is_query" in inspect.signature(function).parameters
        except (TypeError, ValueError):  # builtins without a signature: assume sentence-transformers style
            self._pylate_style = False
        self.tokenize_fn = function
        super().__init__(
            preprocess_fn=self._preprocess,
            valid_label_columns=list(valid_label_columns or LABEL_COLUMNS),
            router_mapping=router_mapping or {},
            prompts=prompts or {},
            max_length=max_length,
        )

    def _preprocess(
        self, inputs: list[Any], prompt: str | None = None, task: str | None = None, **kwargs: Any
    ):
        if not self._pylate_style:
            return self.tokenize_fn(inputs, prompt=prompt, task=task, **kwargs)
        if prompt:
            # The model's own "[Q] " / "[D] " prefix still goes first, then the extra prompt text.
            inputs = [prompt + text for text in inputs]
        return self.tokenize_fn(inputs, is_query=task == "query", **kwargs)

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        if not features:
            return {}
        columns = {name: [row.get(name) for row in features] for name in features[0]}
        first = next((name for name in columns if name in QUERY_COLUMNS), None)

        def where(row: int) -> str:
            described = f" (query {_excerpt(columns[first][row])})" if first and columns[first][row] else ""
            return f"batch row {row}{described}"

        texts = _check_columns(columns, where)
        labels = [name for name in columns if name in self.valid_label_columns]
        rows: list[dict[str, Any]] = [{} for _ in features]
        if "dataset_name" in columns:
            for row, value in zip(rows, columns["dataset_name"], strict=True):
                row["dataset_name"] = value
        for name in labels[:1]:
            for row, value in zip(rows, columns[name], strict=True):
                row[name] = [float(v) for v in value] if isinstance(value, (list, tuple)) else value
        for name in texts:
            values = columns[name]
            if isinstance(values[0], str):
                for row, value in zip(rows, values, strict=True):
                    row[name] = value
                continue
            # A list column becomes numbered columns: the losses take one document column per position.
            # Rows with fewer documents (KD rows under an n_ways cap) are padded with a copy of their first
            # document and a NaN teacher score, which losses.Distillation masks out of both softmaxes.
            width = max(len(value) for value in values)
            for row, value in zip(rows, values, strict=True):
                padding = width - len(value)
                for position, text in enumerate([*value, *[value[0]] * padding], start=1):
                    row[f"{name}_{position}"] = text
                if padding and labels:
                    row[labels[0]] = [*row[labels[0]], *[math.nan] * padding]
        return super().__call__(rows)


# ---------------------------------------------------------------------------------------------- KD joins
