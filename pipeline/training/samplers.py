"""Batch samplers that keep a query out of its own in-batch negatives.

Contrastive losses treat every other document in a batch as a negative for each query. When one query has
several positives (NFCorpus: ~40 judged documents per query, one training row each), two rows of the same
query in one batch make each of its positives a negative of the other: the model is trained to push away a
document it is also trained to pull in. The samplers here build batches in which a query appears at most once.

- Triplet rows (``query, positive, negative...``) use sentence-transformers' ``NoDuplicatesBatchSampler``
  (``BatchSamplers.NO_DUPLICATES``): no text appears twice in a batch, in any column, so a query is never
  repeated and no row's positive is another row's negative either.
- KD rows (``query_id, document_ids, scores``, joined to texts lazily by ``utils.KDProcessing``) use
  :class:`NoDuplicateQueriesBatchSampler`, keyed on the raw ``query_id`` column: the join never runs to
  sample, and the teacher's documents may repeat across queries (they are scored per query, not in-batch).

:func:`choose_batch_sampler` maps the ``train.batch_sampler`` setting (``auto``, ``no_duplicates``,
``default``) to the trainer's ``batch_sampler`` argument; ``auto`` turns the no-duplicates sampler on only
where a query appears in more than one row.

Example:
    >>> from datasets import Dataset
    >>> rows = Dataset.from_dict({"query": ["a", "a", "b"], "positive": ["p1", "p2", "p3"]})
    >>> repeated_queries(rows, "triplets")
    1
    >>> choose_batch_sampler("auto", rows, "triplets").value
    'no_duplicates'
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Literal

from sentence_transformers.base.sampler import BatchSamplers, NoDuplicatesBatchSampler

__all__ = ["NoDuplicateQueriesBatchSampler", "choose_batch_sampler", "query_column", "repeated_queries"]

#: Where the query of a row is read, per prepared data kind.
QUERY_KEY = {"kd": "query_id"}
#: Query columns of triplet rows, in the names sentence-transformers' datasets use.
TRIPLET_QUERY_COLUMNS = ("query", "anchor", "question")


def query_column(dataset: Any, kind: str) -> str:
    """The column that identifies a row's query: ``query_id`` for KD rows, else the first query column.

    Raises a ``ValueError`` naming the columns when there is none.
    """
    columns = list(dataset.column_names)
    if kind == "kd":
        if "query_id" not in columns:
            raise ValueError(f"KD rows need a 'query_id' column (columns: {columns})")
        return "query_id"
    found = next((name for name in columns if name in TRIPLET_QUERY_COLUMNS), None)
    if found is None:
        raise ValueError(f"no query column among {columns} (expected one of {list(TRIPLET_QUERY_COLUMNS)})")
    return found


def _raw_column(dataset: Any, column: str) -> list[Any]:
    # with_format(None) bypasses a set_transform (the KD text join): only the id column is read.
    return list(dataset.with_format(None)[column])


def repeated_queries(dataset: Any, kind: str) -> int:
    """How many distinct queries have more than one row."""
    counts = Counter(str(value) for value in _raw_column(dataset, query_column(dataset, kind)))
    return sum(1 for count in counts.values() if count > 1)


class NoDuplicateQueriesBatchSampler(NoDuplicatesBatchSampler):
    """``NoDuplicatesBatchSampler`` keyed on ``query_id`` only (KD rows): a query at most once per batch.

    Reads the raw id column once, so the lazy text join of the KD rows never runs to build batches.
    Takes the arguments the trainer passes to a ``batch_sampler`` class.
    """

    key_column = "query_id"

    def __init__(
        self,
        dataset: Any,
        batch_size: int,
        drop_last: bool,
        valid_label_columns: list[str] | None = None,
        generator: Any = None,
        seed: int = 0,
    ) -> None:
        super().__init__(
            dataset,
            batch_size=batch_size,
            drop_last=drop_last,
            valid_label_columns=valid_label_columns,
            generator=generator,
            seed=seed,
        )
        if self.key_column not in dataset.column_names:
            raise ValueError(
                f"{type(self).__name__} needs a {self.key_column!r} column (columns: {dataset.column_names})"
            )
        # The parent compares every column of self.dataset[index]: keep only the raw key column.
        self.dataset = dataset.with_format(None).select_columns([self.key_column])


def choose_batch_sampler(
    setting: Literal["auto", "no_duplicates", "default"], dataset: Any, kind: str
) -> Any:
    """The trainer's ``batch_sampler`` for a ``train.batch_sampler`` setting and the prepared data kind.

    ``auto`` picks the no-duplicates sampler when a query has more than one row, else the default sampler
    (a plain shuffle: nothing to keep apart, and no per-row checks to pay for).
    """
    if setting not in ("auto", "no_duplicates", "default"):
        raise ValueError(f"train.batch_sampler must be auto, no_duplicates or default, got {setting!r}")
    if setting == "default" or (setting == "auto" and repeated_queries(dataset, kind) == 0):
        return BatchSamplers.BATCH_SAMPLER
    if kind == "kd":
        return NoDuplicateQueriesBatchSampler
    return BatchSamplers.NO_DUPLICATES
