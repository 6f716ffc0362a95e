"""A dev split carved from the training queries, for evaluation during training.

Whole queries move to the dev split (every row of a chosen query), so no dev query is also trained on and
the dev loss measures generalisation to unseen queries, not memorisation of a query's other positives. The
promotion benchmark (``prepare``'s held-out ``eval`` set) is never touched: choosing a checkpoint on it
would leak it into the model that is then scored on it.

Example:
    >>> from datasets import Dataset
    >>> rows = Dataset.from_dict({"query": ["a", "a", "b", "c"], "positive": ["p", "q", "r", "s"]})
    >>> train, dev = split_dev(rows, fraction=0.3, seed=0, kind="triplets")
    >>> sorted(set(train["query"]) & set(dev["query"]))
    []
    >>> len(train) + len(dev)
    4
"""

from __future__ import annotations

import random
from typing import Any

from pipeline.training.samplers import query_column

__all__ = ["split_dev"]


def split_dev(dataset: Any, fraction: float, seed: int, kind: str) -> tuple[Any, Any]:
    """Split ``dataset`` into (train, dev) by query: ``round(fraction * queries)`` queries go to dev.

    At least one query goes to each side. A lazy transform (``utils.KDProcessing``) is kept on both parts.
    Raises a ``ValueError`` when the fraction is out of range or there are fewer than two queries.
    """
    if not 0 < fraction < 1:
        raise ValueError(f"train.dev_fraction must be between 0 and 1 (exclusive), got {fraction}")
    column = query_column(dataset, kind)
    keys = [str(value) for value in dataset.with_format(None)[column]]
    queries = sorted(set(keys))
    if len(queries) < 2:
        raise ValueError(
            f"train.dev_fraction={fraction} needs at least two distinct training queries "
            f"(column {column!r} has {len(queries)}): set train.dev_fraction to 0"
        )
    n_dev = min(max(1, round(fraction * len(queries))), len(queries) - 1)
    dev_queries = set(random.Random(seed).sample(queries, n_dev))
    dev_rows = [row for row, key in enumerate(keys) if key in dev_queries]
    train_rows = [row for row, key in enumerate(keys) if key not in dev_queries]
    return dataset.select(train_rows), dataset.select(dev_rows)
