"""Training-data plumbing, a package as PyLate's ``utils`` is: ``ColBERTCollator``, ``KDProcessing`` and more.

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

``checks`` (the dataset check), ``collator`` (``ColBERTCollator``), ``processing`` (``KDProcessing``) and
``tensor`` (batching and distributed helpers) hold them; everything public is importable from here.
"""

from __future__ import annotations

from pipeline.utils.checks import LABEL_COLUMNS, QUERY_COLUMNS, TrainingDataError, check_training_dataset
from pipeline.utils.collator import ColBERTCollator
from pipeline.utils.processing import KDProcessing
from pipeline.utils.tensor import (
    all_gather,
    all_gather_with_gradients,
    convert_to_tensor,
    get_rank,
    get_world_size,
    iter_batch,
)

__all__ = [
    "LABEL_COLUMNS",
    "QUERY_COLUMNS",
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
