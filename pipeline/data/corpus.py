"""The corpus the index stage encodes (and the served model returns texts from).

``index.corpus`` names a BEIR folder or a corpus JSONL[.gz] (``_id``, ``title``, ``text``); when it is unset,
the corpus is the prepared Nano benchmark's.

Every row is checked before anything is encoded: its ``_id`` must be a non-empty string, its text (title and
text) must not be empty, and no id may come twice. A bad row is an error naming its line (all the bad lines,
up to :data:`LISTED`, in one message), or, with ``prepare.on_bad_rows: drop``, it is skipped and counted
by reason (a duplicate keeps its first row).

Example:
    >>> import json, tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> rows = [{"_id": "d1", "title": "Koalas", "text": "eat leaves"}, {"_id": "d2", "text": "Trains run"}]
    >>> _ = (folder / "corpus.jsonl").write_text("\\n".join(json.dumps(row) for row in rows))
    >>> list(read_corpus(folder))
    [('d1', 'Koalas eat leaves'), ('d2', 'Trains run')]
    >>> rows.append({"_id": "d1", "text": "again"})
    >>> _ = (folder / "corpus.jsonl").write_text("\\n".join(json.dumps(row) for row in rows))
    >>> read_corpus_rows(folder, "drop").dropped
    {'duplicate id': 1}
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pipeline.data.beir import BeirFormatError, find_file, read_jsonl_records
from pipeline.project.config import Params, resolve_path
from pipeline.project.layout import Layout

#: Bad lines named in one error message (the count says how many more).
LISTED = 10


@dataclasses.dataclass(frozen=True)
class CorpusRows:
    """A corpus's documents in file order, and the bad rows dropped (by reason) under ``drop``."""

    ids: list[str]
    texts: list[str]
    dropped: dict[str, int]


def _problem(record: dict[str, Any], first_line: dict[str, int]) -> tuple[str, str] | None:
    """``(reason, detail)`` of a bad row, or ``None`` for a good one."""
    value = record.get("_id")
    if value is None:
        return "missing id", "no field '_id'"
    if not isinstance(value, str):
        return "id not a string", f"'_id' must be a string, got {type(value).__name__} {value!r:.40}"
    if not value.strip():
        return "empty id", "'_id' is empty"
    if value in first_line:
        return "duplicate id", f"duplicate '_id' {value!r} (first on line {first_line[value]})"
    title, text = record.get("title") or "", record.get("text")
    if not isinstance(text, str) or not isinstance(title, str):
        return "text not a string", "'text' (and 'title', when given) must be strings"
    if not f"{title} {text}".strip():
        return "empty text", f"document {value!r} has no text"
    return None


def read_corpus_rows(path: Path, on_bad_rows: str = "error") -> CorpusRows:
    """Read and check a BEIR folder's corpus or a corpus JSONL[.gz] (title prefixed to text).

    ``on_bad_rows``: ``error`` refuses a corpus with any bad row, naming the lines; ``drop`` skips them.
    """
    file = find_file(path, "corpus") if path.is_dir() else path
    if file is None:
        raise BeirFormatError(f"{path}: no corpus.jsonl[.gz] in this folder")
    ids: list[str] = []
    texts: list[str] = []
    first_line: dict[str, int] = {}
    bad: list[str] = []
    dropped: Counter[str] = Counter()
    for number, record in read_jsonl_records(file, text_fields=()):
        problem = _problem(record, first_line)
        if problem is not None:
            dropped[problem[0]] += 1
            bad.append(f"{file}:{number}: {problem[1]}")
            continue
        first_line[record["_id"]] = number
        ids.append(record["_id"])
        texts.append(f"{record.get('title') or ''} {record['text']}".strip())
    if bad and on_bad_rows == "error":
        more = f"\n... and {len(bad) - LISTED} more" if len(bad) > LISTED else ""
        raise BeirFormatError(
            f"{file}: {len(bad)} bad row(s) in the corpus to index (prepare.on_bad_rows: drop skips "
            "and counts them):\n" + "\n".join(bad[:LISTED]) + more
        )
    return CorpusRows(ids=ids, texts=texts, dropped=dict(sorted(dropped.items())))


def read_corpus(path: Path) -> Iterator[tuple[str, str]]:
    """``(id, text)`` of a checked corpus (any bad row is an error naming its line)."""
    rows = read_corpus_rows(path)
    yield from zip(rows.ids, rows.texts, strict=True)


def corpus_for(params: Params, project: Path) -> tuple[CorpusRows, str]:
    """The corpus to index, checked (per ``prepare.on_bad_rows``), and a description of where it is."""
    from pipeline.data.benchmark import load_prepared_benchmarks

    if params.index.corpus:
        source = resolve_path(params.index.corpus, project)
        rows = read_corpus_rows(source, params.prepare.on_bad_rows)
    else:
        source = Layout(params, project).benchmark
        benchmarks = load_prepared_benchmarks(source)
        pairs = [pair for data in benchmarks.values() for pair in data.corpus.items()]
        rows = CorpusRows([i for i, _ in pairs], [t for _, t in pairs], {})
    if not rows.ids:
        raise ValueError(f"{source}: the corpus to index is empty")
    return rows, str(source)
