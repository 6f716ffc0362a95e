"""The corpus the index stage encodes (and the served model returns texts from).

``index.corpus`` names a BEIR folder or a corpus JSONL[.gz] (``_id``, ``title``, ``text``); when it is unset,
the corpus is the prepared Nano benchmark's.

Example:
    >>> import json, tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> rows = [{"_id": "d1", "title": "Koalas", "text": "eat leaves"}, {"_id": "d2", "text": "Trains run"}]
    >>> _ = (folder / "corpus.jsonl").write_text("\\n".join(json.dumps(row) for row in rows))
    >>> list(read_corpus(folder))
    [('d1', 'Koalas eat leaves'), ('d2', 'Trains run')]
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from pipeline.data.beir import BeirFormatError, find_file, read_jsonl_records
from pipeline.project.config import Params, resolve_path
from pipeline.project.layout import Layout


def read_corpus(path: Path) -> Iterator[tuple[str, str]]:
    """Stream ``(id, text)`` from a BEIR folder's corpus or a corpus JSONL[.gz] (title prefixed to text)."""
    file = find_file(path, "corpus") if path.is_dir() else path
    if file is None:
        raise BeirFormatError(f"{path}: no corpus.jsonl[.gz] in this folder")
    for number, record in read_jsonl_records(file):
        if "_id" not in record:
            raise BeirFormatError(f"{file}:{number}: missing field '_id'")
        title = record.get("title") or ""
        yield str(record["_id"]), f"{title} {record['text']}".strip()


def corpus_for(params: Params, project: Path) -> tuple[list[str], list[str], str]:
    """The ids, texts and a description of the corpus to index."""
    from pipeline.data.benchmark import load_prepared_benchmarks

    if params.index.corpus:
        source = resolve_path(params.index.corpus, project)
        pairs = list(read_corpus(source))
    else:
        source = Layout(params, project).benchmark
        benchmarks = load_prepared_benchmarks(source)
        pairs = [pair for data in benchmarks.values() for pair in data.corpus.items()]
    if not pairs:
        raise ValueError(f"{source}: the corpus to index is empty")
    ids, texts = zip(*pairs, strict=True)
    return list(ids), list(texts), str(source)
