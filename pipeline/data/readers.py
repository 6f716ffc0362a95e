"""Readers for training data in local files: triplets and knowledge-distillation tables.

Rows are validated one by one; a bad row raises :class:`DataFormatError` naming the file, the line
(JSONL, CSV) or row (Parquet) and the field, unless ``on_bad_rows="drop"``: then it is skipped and counted.

Example:
    >>> import json, tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "triplets.jsonl"
    >>> _ = path.write_text(json.dumps({"query": "q", "positive": "p", "negative": "n"}) + "\\n")
    >>> rows, dropped = read_triplets(path)
    >>> rows, dropped
    ([{'query': 'q', 'positive': 'p', 'negative_1': 'n'}], 0)
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from pipeline.data.beir import BeirFormatError, read_jsonl_records
from pipeline.project.errors import InputError

OnBadRows = Literal["error", "drop"]
_NEGATIVE_COLUMN = re.compile(r"^negative(_\d+)?$")


class DataFormatError(InputError):
    """A training data file is missing, malformed, or refers to ids that do not exist."""


def iter_records(path: str | os.PathLike[str]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Yield ``(where, record)``; ``where`` is ``file:line`` (JSONL, CSV) or ``file: row N`` (Parquet)."""
    path = Path(path)
    if not path.is_file():
        raise DataFormatError(f"{path}: file not found")
    suffixes = "".join(path.suffixes[-2:]) if path.suffix == ".gz" else path.suffix
    if suffixes in {".jsonl", ".jsonl.gz", ".json", ".json.gz"}:
        try:
            for number, record in read_jsonl_records(path, text_fields=()):
                yield f"{path}:{number}", record
        except BeirFormatError as error:  # same checks as BEIR files, reported as a training-data error
            raise DataFormatError(str(error)) from None
    elif suffixes in {".csv", ".parquet"}:
        import pandas as pd

        frame = pd.read_csv(path) if suffixes == ".csv" else pd.read_parquet(path)
        offset = 2 if suffixes == ".csv" else 0  # CSV: line 1 is the header
        for index, record in enumerate(frame.to_dict(orient="records")):
            where = f"{path}:{index + offset}" if suffixes == ".csv" else f"{path}: row {index}"
            yield where, {key: _from_pandas(value) for key, value in record.items()}
    else:
        raise DataFormatError(f"{path}: unsupported format {suffixes!r} (use .jsonl[.gz], .csv or .parquet)")


def _from_pandas(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def _text(record: dict[str, Any], key: str, where: str) -> str:
    value = record.get(key)
    if not isinstance(value, str) or not value.strip():
        problem = "missing" if value is None else f"empty or not text ({value!r:.40})"
        raise DataFormatError(f"{where}: field {key!r} is {problem}")
    return value


def triplet_row(record: dict[str, Any], where: str) -> dict[str, str]:
    """Validate one ``query, positive, negative[_i]`` (or ``negatives: [...]``) record; renumber negatives."""
    row = {"query": _text(record, "query", where), "positive": _text(record, "positive", where)}
    negatives: list[str] = []
    if "negatives" in record:
        values = record["negatives"]
        if not isinstance(values, list) or not values:
            raise DataFormatError(f"{where}: field 'negatives' must be a non-empty list")
        negatives = [_text({"negatives": v}, "negatives", where) for v in values]
    columns = sorted(
        (k for k in record if _NEGATIVE_COLUMN.match(k)), key=lambda k: int(k.partition("_")[2] or 0)
    )
    negatives += [_text(record, column, where) for column in columns]
    if not negatives:
        raise DataFormatError(f"{where}: no negative (expected 'negative', 'negative_1', ... or 'negatives')")
    row.update({f"negative_{i}": text for i, text in enumerate(negatives, start=1)})
    return row


def read_triplets(
    path: str | os.PathLike[str], on_bad_rows: OnBadRows = "error"
) -> tuple[list[dict[str, str]], int]:
    """Read and validate a triplets file. Returns the rows and how many bad rows were dropped.

    All rows must have the same number of negatives (the trainer needs rectangular columns): rows with more
    are cut to the smallest count, which is logged by the caller through the returned rows' width.
    """
    rows: list[dict[str, str]] = []
    dropped = 0
    for where, record in iter_records(path):
        try:
            rows.append(triplet_row(record, where))
        except DataFormatError:
            if on_bad_rows == "error":
                raise
            dropped += 1
    if not rows:
        raise DataFormatError(f"{path}: no valid triplet rows")
    width = min(sum(1 for key in row if key.startswith("negative_")) for row in rows)
    rows = [
        {k: v for k, v in row.items() if not k.startswith("negative_") or int(k[9:]) <= width} for row in rows
    ]
    return rows, dropped


def read_id_texts(path: str | os.PathLike[str], id_key: str) -> dict[str, str]:
    """Read an id -> text table (``query_id``/``document_id`` + ``text``; BEIR's ``_id`` also accepted)."""
    table: dict[str, str] = {}
    for where, record in iter_records(path):
        key = id_key if id_key in record else "_id"
        if record.get(key) is None:
            raise DataFormatError(f"{where}: field {id_key!r} is missing")
        identifier = str(record[key])
        if identifier in table:
            raise DataFormatError(f"{where}: duplicate {id_key} {identifier!r}")
        table[identifier] = _text(record, "text", where)
    if not table:
        raise DataFormatError(f"{path}: empty table")
    return table


def kd_row(record: dict[str, Any], where: str) -> dict[str, Any]:
    """Validate one ``query_id, document_ids, scores`` record (ids as strings, scores as finite floats)."""
    if record.get("query_id") is None:
        raise DataFormatError(f"{where}: field 'query_id' is missing")
    ids, scores = record.get("document_ids"), record.get("scores")
    if not isinstance(ids, list) or not ids:
        raise DataFormatError(f"{where}: field 'document_ids' must be a non-empty list")
    if not isinstance(scores, list) or len(scores) != len(ids):
        got = len(scores) if isinstance(scores, list) else type(scores).__name__
        raise DataFormatError(f"{where}: 'document_ids' has {len(ids)} entries but 'scores' has {got}")
    values: list[float] = []
    for position, score in enumerate(scores):
        if isinstance(score, bool) or not isinstance(score, int | float) or not math.isfinite(score):
            raise DataFormatError(f"{where}: scores[{position}] is {score!r}, not a finite number")
        values.append(float(score))
    row = {"query_id": str(record["query_id"]), "document_ids": [str(i) for i in ids], "scores": values}
    if isinstance(record.get("n_positive"), int):
        row["n_positive"] = record["n_positive"]
    return row


def read_kd(
    scores_path: str | os.PathLike[str],
    queries: dict[str, str],
    documents: dict[str, str],
    on_bad_rows: OnBadRows = "error",
) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Read KD rows and check that every id resolves to a text. Returns the rows and counts."""
    rows: list[dict[str, Any]] = []
    counts = {"rows_dropped": 0, "ids_resolved": 0, "ids_total": 0}
    for where, record in iter_records(scores_path):
        ids = record.get("document_ids")
        counts["ids_total"] += 1 + (len(ids) if isinstance(ids, list) else 0)
        try:
            row = kd_row(record, where)
            missing = [i for i in row["document_ids"] if i not in documents]
            if row["query_id"] not in queries:
                raise DataFormatError(f"{where}: query_id {row['query_id']!r} is not in the queries table")
            if missing:
                raise DataFormatError(f"{where}: document id {missing[0]!r} is not in the documents table")
        except DataFormatError:
            if on_bad_rows == "error":
                raise
            counts["rows_dropped"] += 1
            continue
        counts["ids_resolved"] += 1 + len(row["document_ids"])
        rows.append(row)
    if not rows:
        raise DataFormatError(f"{scores_path}: no valid KD rows")
    return rows, counts
