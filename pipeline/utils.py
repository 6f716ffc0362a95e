"""Training-data plumbing: the ``ColBERTCollator`` and ``KDProcessing`` that PyLate users pass to the trainer.

``ColBERTCollator`` is sentence-transformers' multi-vector data collator with PyLate's conveniences on top:
it tokenizes the first column as queries and the others as documents through ``model.tokenize`` (so the
``[Q] `` / ``[D] `` prefixes are added exactly as at inference), skips id columns, spreads a list column
(``documents``, ``negatives``) into the numbered columns the losses read, turns ``scores`` into the teacher
label, and rejects malformed rows with an error naming the row and column.

``KDProcessing`` joins knowledge-distillation rows (``query_id``, ``document_ids``, ``scores``) to their texts
lazily, through ``datasets.Dataset.set_transform``, with O(1) look-ups.

Example:
    >>> from datasets import Dataset
    >>> train = Dataset.from_list([{"query_id": 1, "document_ids": [10, 11], "scores": [0.9, 0.1]}])
    >>> kd = KDProcessing(
    ...     queries=[{"query_id": 1, "text": "what is colbert?"}],
    ...     documents={10: "a late interaction model", 11: "a bird"},
    ...     n_ways=2,
    ... )
    >>> train.set_transform(kd.transform)
    >>> train[0]
    {'query': 'what is colbert?', 'documents': ['a late interaction model', 'a bird'], 'scores': [0.9, 0.1]}
"""

from __future__ import annotations

import ast
import inspect
import logging
import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import numpy as np
import torch
from sentence_transformers.multi_vector_encoder.data_collator import MultiVectorEncoderDataCollator
from tqdm.auto import tqdm

logger = logging.getLogger(__name__)

__all__ = [
    "ColBERTCollator",
    "KDProcessing",
    "TrainingDataError",
    "all_gather",
    "all_gather_with_gradients",
    "check_training_dataset",
    "convert_to_tensor",
    "get_rank",
    "get_world_size",
    "iter_batch",
]

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
        >>> from pipeline import models  # doctest: +SKIP
        >>> model = models.ColBERT()  # doctest: +SKIP
        >>> batch = ColBERTCollator(model.tokenize)([{"query": "q", "positive": "p"}])  # doctest: +SKIP
        >>> batch["query_input_ids"].shape  # doctest: +SKIP
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
