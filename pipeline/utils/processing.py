"""``KDProcessing``: knowledge-distillation rows joined to their texts lazily, with O(1) look-ups."""

from __future__ import annotations

import ast
import logging
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pipeline.utils.checks import TrainingDataError, _excerpt

logger = logging.getLogger(__name__)


class _TextTable:
    """Id -> text look-ups over a ``datasets.Dataset``, a list of records, or a mapping, in O(1) per id.

    For a Dataset only an id -> row-position dict is built; texts are fetched per batch with one Arrow
    ``take``, so a multi-million-passage table is not copied into Python strings up front.
    """

    def __init__(self, table: Any, id_column: str, text_column: str, split: str, what: str) -> None:
        from datasets import Dataset, DatasetDict

        self.what = what
        self._texts: dict[str, str] | None = None
        self._dataset = None
        if isinstance(table, DatasetDict):
            if split not in table:
                raise ValueError(f"{what}: split {split!r} not found (splits: {list(table)})")
            table = table[split]
        if isinstance(table, Dataset):
            for column in (id_column, text_column):
                if column not in table.column_names:
                    raise ValueError(f"{what}: no column {column!r} (columns: {table.column_names})")
            ids = table.with_format(None)[id_column]
            self._positions = {str(value): position for position, value in enumerate(ids)}
            self._dataset = table.with_format(None).select_columns([text_column])
            self._text_column = text_column
        elif isinstance(table, Mapping):
            self._texts = {str(key): value for key, value in table.items()}
            self._positions = {}
        elif isinstance(table, Iterable):
            self._texts = {}
            for number, record in enumerate(table):
                if not isinstance(record, Mapping) or id_column not in record or text_column not in record:
                    raise ValueError(
                        f"{what}: record {number} needs the keys {id_column!r} and {text_column!r}"
                    )
                self._texts[str(record[id_column])] = record[text_column]
            self._positions = {}
        else:
            raise TypeError(
                f"{what}: expected a Dataset, a DatasetDict, records or a dict, got {type(table)}"
            )
        size = len(self._texts) if self._texts is not None else len(self._positions)
        if size == 0:
            raise ValueError(f"{what}: the table is empty")

    def __contains__(self, key: Any) -> bool:
        table = self._texts if self._texts is not None else self._positions
        return str(key) in table

    def lookup(self, keys: list[Any]) -> list[str]:
        if self._texts is not None:
            return [self._texts[str(key)] for key in keys]
        assert self._dataset is not None
        positions = [self._positions[str(key)] for key in keys]
        return list(self._dataset[positions][self._text_column])


def _parse_listish(value: Any, *, strict: bool = True) -> Any:
    """A list stored as its text (``"[1, 2]"``), parsed as a Python literal; anything else as given.

    With ``strict=False`` unparsable text is returned unchanged (the row check reports it).
    """
    if not isinstance(value, str):
        return value
    try:
        parsed = ast.literal_eval(value)
    except (ValueError, SyntaxError):
        if strict:
            raise ValueError(f"{_excerpt(value)} is text that is not a Python list literal") from None
        return value
    if not isinstance(parsed, list | tuple):
        if strict:
            raise ValueError(f"{_excerpt(value)} parses to {type(parsed).__name__}, not a list")
        return value
    return list(parsed)


@dataclass
class _KDRowProblem:
    reason: str
    droppable: bool


class KDProcessing:
    """Join KD rows (``query_id``, ``document_ids``, ``scores``) to texts, for ``dataset.set_transform``.

    Args:
        queries: The queries table: a ``datasets.Dataset`` / ``DatasetDict`` (``split`` is taken), a list
            of records, or a dict id -> text.
        documents: The documents table, same forms.
        split: The split taken from a ``DatasetDict`` (PyLate's ``load_dataset(..., name)`` returns one).
        n_ways: The most documents kept per query: the first ``n_ways`` of each row (positives first in
            the usual layout), as in PyLate. A row with fewer keeps all of its documents (at least two);
            rows of different lengths in one batch are padded and masked by :class:`ColBERTCollator` and
            ``losses.Distillation``.
        on_invalid: ``"error"`` (default) or ``"drop"``: what to do with a row whose ids do not resolve or
            that has fewer than two documents. Dropped rows are logged and counted in :attr:`dropped`.
            Rows whose ``document_ids`` and ``scores`` differ in length, or with NaN scores, are always
            an error.
        query_id_column, document_id_column, text_column: Column names of the tables.

    Ids may be integers or strings: both sides are compared as strings, so ``54528`` finds ``"54528"``.
    ``scores`` and ``document_ids`` stored as strings (``"[0.9, 0.1]"``, as some exported KD sets hold
    them) are parsed as Python literals, as PyLate does.

    Output rows are ``{"query": str, "documents": [str] * m, "scores": [float] * m}``, ``m = min(n_ways,
    documents in the row)``.
    """

    def __init__(
        self,
        queries: Any,
        documents: Any,
        split: str = "train",
        n_ways: int = 32,
        *,
        on_invalid: Literal["error", "drop"] = "error",
        query_id_column: str = "query_id",
        document_id_column: str = "document_id",
        text_column: str = "text",
    ) -> None:
        if not isinstance(n_ways, int) or n_ways < 2:
            raise ValueError(
                f"n_ways must be an integer >= 2 (a softmax over one document is constant): {n_ways}"
            )
        if on_invalid not in ("error", "drop"):
            raise ValueError(f"on_invalid must be 'error' or 'drop', got {on_invalid!r}")
        self.n_ways = n_ways
        self.on_invalid = on_invalid
        self.queries = _TextTable(queries, query_id_column, text_column, split, "queries")
        self.documents = _TextTable(documents, document_id_column, text_column, split, "documents")
        #: Query ids of the rows dropped so far (``on_invalid="drop"``), each counted once.
        self.dropped: dict[str, str] = {}

    def _problem(self, query_id: Any, document_ids: Any, scores: Any) -> _KDRowProblem | None:
        try:
            document_ids, scores = _parse_listish(document_ids), _parse_listish(scores)
        except ValueError as error:
            return _KDRowProblem(str(error), False)
        if not isinstance(document_ids, (list, tuple)) or not isinstance(scores, (list, tuple)):
            return _KDRowProblem("'document_ids' and 'scores' must be lists", False)
        if len(document_ids) != len(scores):
            return _KDRowProblem(f"{len(document_ids)} document_ids but {len(scores)} scores", False)
        if any(s is None or not math.isfinite(float(s)) for s in scores):
            return _KDRowProblem("'scores' holds a missing, NaN or infinite value", False)
        if query_id not in self.queries:
            return _KDRowProblem(f"query_id {query_id!r} is not in the queries table", True)
        absent = next((d for d in document_ids[: self.n_ways] if d not in self.documents), None)
        if absent is not None:
            return _KDRowProblem(f"document id {absent!r} is not in the documents table", True)
        if len(document_ids) < 2:
            return _KDRowProblem(f"{len(document_ids)} document(s): distillation needs at least two", True)
        return None

    def transform(self, examples: dict[str, list[Any]]) -> dict[str, list[Any]]:
        """The batched transform for ``Dataset.set_transform``: ids in, texts out."""
        for key in ("query_id", "document_ids", "scores"):
            if key not in examples:
                raise TrainingDataError(f"KD rows need a {key!r} column (columns: {list(examples)})")
        examples = {
            **examples,
            "document_ids": [_parse_listish(value, strict=False) for value in examples["document_ids"]],
            "scores": [_parse_listish(value, strict=False) for value in examples["scores"]],
        }
        kept: list[int] = []
        for row, (query_id, document_ids, scores) in enumerate(
            zip(examples["query_id"], examples["document_ids"], examples["scores"], strict=True)
        ):
            problem = self._problem(query_id, document_ids, scores)
            if problem is None:
                kept.append(row)
            elif problem.droppable and self.on_invalid == "drop":
                if str(query_id) not in self.dropped:
                    logger.warning("Dropping KD row with query_id %r: %s", query_id, problem.reason)
                self.dropped[str(query_id)] = problem.reason
            else:
                hint = " (or pass on_invalid='drop')" if problem.droppable else ""
                raise TrainingDataError(f"KD row with query_id {query_id!r}: {problem.reason}{hint}")
        queries = self.queries.lookup([examples["query_id"][row] for row in kept])
        # One look-up for the whole batch's documents, then split back per row.
        kept_ids = [examples["document_ids"][row][: self.n_ways] for row in kept]
        flat_texts = self.documents.lookup([doc for ids in kept_ids for doc in ids])
        documents, start = [], 0
        for ids in kept_ids:
            documents.append(flat_texts[start : start + len(ids)])
            start += len(ids)
        scores = [[float(s) for s in examples["scores"][row][: self.n_ways]] for row in kept]
        return {"query": queries, "documents": documents, "scores": scores}

    def map(self, example: dict[str, Any]) -> dict[str, Any]:
        """PyLate's one-row form of :meth:`transform`, for ``dataset.map(kd.map)``."""
        batch = self.transform({key: [value] for key, value in example.items()})
        if not batch["query"]:  # dropped (on_invalid="drop"): map cannot drop, so say why
            raise TrainingDataError(
                f"KD row with query_id {example.get('query_id')!r}: "
                f"{self.dropped.get(str(example.get('query_id')), 'unusable')}"
            )
        return {key: values[0] for key, values in batch.items()}

    def validate(self, dataset: Any) -> int:
        """Check every raw KD row before training; returns how many rows are usable.

        ``dataset`` is a ``datasets.Dataset`` (any ``set_transform`` is bypassed) or a list of rows.
        Errors name the dataset row number and its query id; with ``on_invalid="drop"`` droppable rows
        are counted instead (see :attr:`dropped`).
        """
        if isinstance(dataset, list):
            batches: Iterable[Mapping[str, list[Any]]] = [
                {key: [row.get(key) for row in dataset] for key in ("query_id", "document_ids", "scores")}
            ]
        else:
            # Column batches of the raw id rows: cheap, and unaffected by the lazy transform.
            batches = dataset.with_format(None).iter(batch_size=1000)
        usable, offset = 0, 0
        for batch in batches:
            usable += self._validate_batch(batch, offset)
            offset += len(batch["query_id"]) if "query_id" in batch else 0
        return usable

    def _validate_batch(self, batch: Mapping[str, list[Any]], offset: int) -> int:
        for key in ("query_id", "document_ids", "scores"):
            if key not in batch:
                raise TrainingDataError(f"KD rows need a {key!r} column (columns: {list(batch)})")
        usable = 0
        rows = zip(batch["query_id"], batch["document_ids"], batch["scores"], strict=True)
        for row, (query_id, document_ids, scores) in enumerate(rows, start=offset):
            if query_id is None or document_ids is None or scores is None:
                raise TrainingDataError(f"KD row {row}: 'query_id', 'document_ids' or 'scores' is missing")
            problem = self._problem(query_id, document_ids, scores)
            if problem is None:
                usable += 1
            elif problem.droppable and self.on_invalid == "drop":
                self.dropped[str(query_id)] = problem.reason
            else:
                raise TrainingDataError(f"KD row {row} (query_id {query_id!r}): {problem.reason}")
        return usable


# ------------------------------------------------------------------------------------------- PyLate helpers
