"""MLflow's scoring protocol, read strictly: a request body into queries and ``k``, or a 4xx that says why.

``colbert-pipeline serve`` (:mod:`pipeline.ops.server`) answers ``POST /invocations`` with the bodies
``mlflow models serve`` accepts for the served model's signature (one string column ``query``, one param
``k``), so a client written against MLflow's server, or against the logged ``serving_input_example.json``,
works unchanged::

    {"dataframe_split": {"columns": ["query"], "data": [["who eats bamboo?"]]}, "params": {"k": 5}}
    {"dataframe_records": [{"query": "who eats bamboo?"}], "params": {"k": 5}}
    {"inputs": ["who eats bamboo?"]}            # also {"inputs": {"query": [...]}}; "instances" alike

Everything is checked here, before a request reaches the model: a malformed body fails alone, with a
message naming the field, instead of as a 500 from deep inside pandas or the index. Pure functions, no I/O.

``k`` above :attr:`Limits.max_k` is **refused** (a client asking for a million hits has a bug, and an
answer that size is the server's cost); a ``k`` within it is **clamped** to the index's document count, and
an answer may hold fewer than ``k`` hits: PLAID scores only the documents near the query's tokens.
A query longer than the model's query length (32 tokens by default) is **truncated** by the model's
tokenizer, exactly as ``search`` and the index stage's probes are: the words past it do not change the
answer.

Example:
    >>> parse_request(b'{"inputs": ["a question"], "params": {"k": 3}}', Limits())
    ScoringRequest(queries=['a question'], k=3)
    >>> parse_request(b'{"inputs": ["a question"], "params": {"k": 0}}', Limits())
    Traceback (most recent call last):
    pipeline.ops.scoring.BadRequest: 400: params k: must be at least 1, got 0
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

QUERY = "query"
#: The input formats of MLflow's scoring server (exactly one per request).
INPUT_KEYS = ("dataframe_split", "dataframe_records", "instances", "inputs")
PARAMS = ("k",)


class BadRequest(ValueError):
    """A request the server refuses: ``status`` (a 4xx) and a message naming what was wrong."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Limits:
    """What one request may ask: the defaults are ``colbert-pipeline serve``'s."""

    #: Body size limit in bytes (1 MiB); a larger body is answered 413 before it is parsed.
    max_body_bytes: int = 1 << 20
    #: The largest ``k`` accepted; above it, 400.
    max_k: int = 1000
    #: Queries in one request; above it, 400 (a bounded unit of work per request).
    max_queries: int = 256


@dataclass(frozen=True)
class ScoringRequest:
    """The queries of one request, in order, and its ``k`` (``None``: the served version's default)."""

    queries: list[str]
    k: int | None


def parse_request(body: bytes, limits: Limits) -> ScoringRequest:
    """Queries and ``k`` of a scoring-protocol body; :class:`BadRequest` names the first thing wrong.

    Example:
        >>> parse_request(b'{"dataframe_split": {"columns": ["text"], "data": [["a"]]}}', Limits())
        Traceback (most recent call last):
        pipeline.ops.scoring.BadRequest: 400: dataframe_split: no 'query' column (columns: ['text'])
    """
    if len(body) > limits.max_body_bytes:
        raise too_large(len(body), limits)
    try:
        payload = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise BadRequest(400, f"the body is not JSON ({error})") from None
    if not isinstance(payload, dict):
        raise BadRequest(400, f"expected a JSON object with one of {list(INPUT_KEYS)}, got {_kind(payload)}")
    given = [key for key in INPUT_KEYS if key in payload]
    if len(given) != 1:
        found = f"got {given}" if given else f"got keys {sorted(payload)[:10]}"
        raise BadRequest(400, f"expected exactly one of {list(INPUT_KEYS)} ({found})")
    unknown = sorted(set(payload) - {*INPUT_KEYS, "params"})
    if unknown:
        raise BadRequest(400, f"unknown top-level keys {unknown[:10]}")
    key = given[0]
    raw = _split(payload[key]) if key == "dataframe_split" else _records(key, payload[key])
    queries = check_queries(key, raw, limits)
    return ScoringRequest(queries=queries, k=parse_k(payload.get("params"), limits))


def too_large(size: int, limits: Limits) -> BadRequest:
    """The 413 of a body of ``size`` bytes."""
    return BadRequest(
        413,
        f"the body is {size} bytes, over this server's limit of {limits.max_body_bytes} (--max-body-bytes)",
    )


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _split(value: Any) -> list[Any]:
    """The ``query`` cells of ``{"columns": [...], "data": [[...], ...]}`` (pandas' split orientation)."""
    if not isinstance(value, dict):
        raise BadRequest(400, f"dataframe_split: expected {{'columns', 'data'}}, got {_kind(value)}")
    columns, data = value.get("columns"), value.get("data")
    if not isinstance(columns, list):
        raise BadRequest(400, f"dataframe_split: 'columns' must be a list, got {_kind(columns)}")
    if QUERY not in columns:
        raise BadRequest(400, f"dataframe_split: no {QUERY!r} column (columns: {columns[:10]})")
    if not isinstance(data, list):
        raise BadRequest(400, f"dataframe_split: 'data' must be a list of rows, got {_kind(data)}")
    where = columns.index(QUERY)
    cells = []
    for number, row in enumerate(data):
        if not isinstance(row, list) or len(row) != len(columns):
            raise BadRequest(400, f"dataframe_split: data row {number} is not a list of {len(columns)} cells")
        cells.append(row[where])
    return cells


def _records(key: str, value: Any) -> list[Any]:
    """The queries of a list of records, a list of strings, ``{"query": [...]}`` or ``{"query": "..."}``."""
    if isinstance(value, dict):
        if QUERY not in value:
            raise BadRequest(400, f"{key}: no {QUERY!r} column (keys: {sorted(value)[:10]})")
        column = value[QUERY]
        return column if isinstance(column, list) else [column]
    if not isinstance(value, list):
        raise BadRequest(400, f"{key}: expected a list of records or strings, got {_kind(value)}")
    cells = []
    for number, record in enumerate(value):
        if isinstance(record, dict):
            if QUERY not in record:
                raise BadRequest(400, f"{key}: record {number} has no {QUERY!r} ({sorted(record)[:10]})")
            cells.append(record[QUERY])
        elif key == "dataframe_records":
            raise BadRequest(400, f"{key}: record {number} is {_kind(record)}, not an object")
        else:
            cells.append(record)
    return cells


def check_queries(key: str, cells: list[Any], limits: Limits) -> list[str]:
    """Every cell a non-empty string, at least one and at most ``limits.max_queries`` of them."""
    if not cells:
        raise BadRequest(400, f"{key}: no queries")
    if len(cells) > limits.max_queries:
        raise BadRequest(400, f"{key}: {len(cells)} queries, over this server's {limits.max_queries} at once")
    for number, cell in enumerate(cells):
        if not isinstance(cell, str):
            raise BadRequest(400, f"{key}: query {number} is {_kind(cell)}, not a string")
        if not cell.strip():
            raise BadRequest(400, f"{key}: query {number} is empty")
    return list(cells)


def parse_k(params: Any, limits: Limits) -> int | None:
    """``params.k``: absent is ``None``; a bool, a non-integer, ``< 1`` or ``> max_k`` is refused.

    Example:
        >>> parse_k({"k": 10**9}, Limits(max_k=1000))  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        pipeline.ops.scoring.BadRequest: 400: params k: 1000000000 is over this server's max_k of 1000 ...
    """
    if params is None:
        return None
    if not isinstance(params, dict):
        raise BadRequest(400, f"params: expected an object like {{'k': 10}}, got {_kind(params)}")
    unknown = sorted(set(params) - set(PARAMS))
    if unknown:
        raise BadRequest(400, f"params: unknown {unknown[:10]} (accepted: {list(PARAMS)})")
    k = params.get("k")
    if k is None:
        return None
    if isinstance(k, bool) or not isinstance(k, int):
        raise BadRequest(400, f"params k: expected an integer, got {k!r}")
    if k < 1:
        raise BadRequest(400, f"params k: must be at least 1, got {k}")
    if k > limits.max_k:
        raise BadRequest(
            400,
            f"params k: {k} is over this server's max_k of {limits.max_k} (--max-k); "
            "a smaller k is clamped to the index's document count",
        )
    return k
