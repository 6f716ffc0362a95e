"""Read a BEIR folder: ``corpus.jsonl[.gz]``, ``queries.jsonl[.gz]`` and ``qrels/<split>.tsv[.gz]``.

Every record is validated while it is read, and a bad one raises :class:`BeirFormatError` naming the file,
the line and the field, before any model is loaded. Relevance judgements that point at a document or a
query the folder does not have are an error too, unless ``on_missing="skip"`` is given: then they are
dropped and counted in :attr:`BeirData.skipped_qrels` (upstream ArguAna, for example, has five).

Example:
    >>> import json, pathlib, tempfile
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (folder / "corpus.jsonl").write_text(json.dumps({"_id": "d1", "title": "T", "text": "x"}) + "\\n")
    >>> _ = (folder / "queries.jsonl").write_text(json.dumps({"_id": "q1", "text": "what?"}) + "\\n")
    >>> (folder / "qrels").mkdir()
    >>> _ = (folder / "qrels" / "test.tsv").write_text("query-id\\tcorpus-id\\tscore\\nq1\\td1\\t1\\n")
    >>> data = load_beir(folder, split="test")
    >>> data.corpus, data.queries, data.qrels
    ({'d1': 'T x'}, {'q1': 'what?'}, {'q1': {'d1': 1}})
"""

from __future__ import annotations

import gzip
import io
import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pipeline.project.errors import InputError

logger = logging.getLogger(__name__)

__all__ = ["BeirData", "BeirFormatError", "find_file", "load_beir", "read_jsonl_records", "read_qrels"]


class BeirFormatError(InputError):
    """A BEIR file is missing, malformed, or refers to ids that do not exist; the message names the spot."""


@dataclass
class BeirData:
    """One split of a BEIR dataset, held in plain dicts.

    Attributes:
        corpus: Document id -> text (``title`` and ``text`` joined by a space when the title is non-empty).
        queries: Query id -> text, only the queries judged in ``qrels``.
        qrels: Query id -> {document id -> graded relevance}; 0 means judged non-relevant.
        name: A short name (the folder name by default), used to name Nano benchmarks and metrics.
        split: The qrels split that was read.
        skipped_qrels: How many judgements were dropped because their query or document is absent.
    """

    corpus: dict[str, str]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]
    name: str = "beir"
    split: str = "test"
    skipped_qrels: int = 0
    source: str | None = field(default=None, repr=False)

    def relevant_docs(self, min_score: int = 1) -> dict[str, set[str]]:
        """Query id -> the set of document ids judged at least ``min_score`` (queries with none are left out).

        This is the shape sentence-transformers' information-retrieval evaluators take.
        """
        relevant = {
            qid: {doc for doc, score in judged.items() if score >= min_score}
            for qid, judged in self.qrels.items()
        }
        return {qid: docs for qid, docs in relevant.items() if docs}


def find_file(folder: Path, stem: str) -> Path | None:
    """``folder/stem.jsonl`` or ``folder/stem.jsonl.gz`` (the plain file wins when both exist)."""
    for suffix in (".jsonl", ".jsonl.gz"):
        candidate = folder / f"{stem}{suffix}"
        if candidate.is_file():
            return candidate
    return None


def _open_text(path: Path) -> io.TextIOBase:
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8")
    return path.open(encoding="utf-8")


def _as_id(value: Any, path: Path, line: int, key: str) -> str:
    # BEIR ids are strings, but some exports write numbers; both name the same record once stringified.
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise BeirFormatError(
            f"{path}:{line}: field {key!r} must be a string or an integer id, got {value!r}"
        )
    text = str(value)
    if not text.strip():
        raise BeirFormatError(f"{path}:{line}: field {key!r} is empty")
    return text


def read_jsonl_records(path: Path, *, text_fields: tuple[str, ...] = ("text",)) -> Iterator[tuple[int, dict]]:
    """Yield ``(line number, record)`` for each non-blank line; bad JSON or a non-object names the line.

    Each field in ``text_fields`` must be present and hold a string.
    """
    with _open_text(path) as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise BeirFormatError(f"{path}:{number}: not valid JSON ({error.msg})") from None
            if not isinstance(record, dict):
                raise BeirFormatError(f"{path}:{number}: expected a JSON object, got {type(record).__name__}")
            for key in text_fields:
                if key not in record:
                    raise BeirFormatError(f"{path}:{number}: missing field {key!r}")
                if not isinstance(record[key], str):
                    raise BeirFormatError(f"{path}:{number}: field {key!r} must be a string")
            yield number, record


def _read_texts(path: Path, *, id_key: str = "_id", with_title: bool = False) -> dict[str, str]:
    texts: dict[str, str] = {}
    first_line: dict[str, int] = {}
    for number, record in read_jsonl_records(path):
        if id_key not in record:
            raise BeirFormatError(f"{path}:{number}: missing field {id_key!r}")
        record_id = _as_id(record[id_key], path, number, id_key)
        if record_id in texts:
            raise BeirFormatError(
                f"{path}:{number}: duplicate {id_key} {record_id!r} "
                f"(first seen on line {first_line[record_id]})"
            )
        text = record["text"]
        title = record.get("title") if with_title else None
        if title is not None and not isinstance(title, str):
            raise BeirFormatError(f"{path}:{number}: field 'title' must be a string")
        # BEIR's own evaluation scores "title text"; an absent or empty title leaves the text as is.
        texts[record_id] = f"{title} {text}".strip() if title else text
        first_line[record_id] = number
    if not texts:
        raise BeirFormatError(f"{path}: no records")
    return texts


def read_qrels(path: Path) -> Iterator[tuple[int, str, str, int]]:
    """Yield ``(line number, query id, document id, score)`` from a BEIR qrels TSV (header optional)."""
    with _open_text(path) as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            parts = line.rstrip("\n\r").split("\t")
            if number == 1 and parts[0].strip().lower() in {"query-id", "query_id", "qid"}:
                continue
            if len(parts) != 3:
                raise BeirFormatError(
                    f"{path}:{number}: expected 3 tab-separated fields (query-id, corpus-id, score), "
                    f"got {len(parts)}"
                )
            query_id, doc_id, score_text = (part.strip() for part in parts)
            for key, value in (("query-id", query_id), ("corpus-id", doc_id)):
                if not value:
                    raise BeirFormatError(f"{path}:{number}: field {key!r} is empty")
            try:
                score = int(float(score_text))
            except ValueError:
                raise BeirFormatError(
                    f"{path}:{number}: field 'score' is not a number: {score_text!r}"
                ) from None
            yield number, query_id, doc_id, score


def _qrels_file(folder: Path, split: str) -> Path:
    qrels_folder = folder / "qrels"
    if not qrels_folder.is_dir():
        raise BeirFormatError(f"{folder}: no qrels/ folder (expected qrels/{split}.tsv)")
    if Path(split).name != split or split in {"", ".", ".."}:
        raise BeirFormatError(f"split {split!r} is not a plain name")
    for suffix in (".tsv", ".tsv.gz"):
        candidate = qrels_folder / f"{split}{suffix}"
        if candidate.is_file():
            return candidate
    available = sorted(p.name.split(".")[0] for p in qrels_folder.glob("*.tsv*"))
    raise BeirFormatError(f"{qrels_folder}: no {split}.tsv[.gz]; splits found: {available or 'none'}")


def load_beir(
    folder: str | os.PathLike[str],
    split: str = "test",
    *,
    on_missing: Literal["error", "skip"] = "error",
    with_title: bool = True,
    name: str | None = None,
) -> BeirData:
    """Read one split of a BEIR folder, validating every record.

    Args:
        folder: Holds ``corpus.jsonl[.gz]``, ``queries.jsonl[.gz]`` and ``qrels/<split>.tsv[.gz]``.
        split: The qrels file to read (``test``, ``train``, ``dev`` ...).
        on_missing: ``"error"`` (default) raises on a judgement whose query or document is not in the
            folder; ``"skip"`` drops it and counts it in ``skipped_qrels``.
        with_title: Prefix each document's text with its ``title``.
        name: The dataset's short name; the folder name by default.

    Returns:
        A :class:`BeirData` whose ``queries`` are the queries judged in this split.

    Raises:
        BeirFormatError: A missing file, a malformed line (file:line and field named), a duplicate id,
            or (with ``on_missing="error"``) a judgement that points at an absent query or document.
    """
    if on_missing not in ("error", "skip"):
        raise ValueError(f"on_missing must be 'error' or 'skip', got {on_missing!r}")
    root = Path(folder)
    corpus_path, queries_path, qrels_path = _beir_files(root, split)
    queries_all = _read_texts(queries_path)
    corpus = _read_texts(corpus_path, with_title=with_title)
    qrels, skipped = _read_judgements(
        qrels_path, {"query-id": (queries_all, queries_path), "corpus-id": (corpus, corpus_path)}, on_missing
    )
    queries = {qid: queries_all[qid] for qid in qrels}
    logger.info(
        "Read %s split %r: %d documents, %d queries, %d judgements",
        root,
        split,
        len(corpus),
        len(queries),
        sum(len(judged) for judged in qrels.values()),
    )
    return BeirData(
        corpus=corpus,
        queries=queries,
        qrels=qrels,
        name=name or root.name,
        split=split,
        skipped_qrels=skipped,
        source=str(root),
    )


def _beir_files(root: Path, split: str) -> tuple[Path, Path, Path]:
    """The corpus, queries and qrels files of a BEIR folder; the first one missing raises."""
    if not root.is_dir():
        raise BeirFormatError(f"BEIR folder not found: {root}")
    # Check the cheap things first so a wrong folder fails before the corpus is parsed.
    qrels_path = _qrels_file(root, split)
    corpus_path = find_file(root, "corpus")
    queries_path = find_file(root, "queries")
    for stem, found in (("corpus", corpus_path), ("queries", queries_path)):
        if found is None:
            raise BeirFormatError(f"{root}: no {stem}.jsonl or {stem}.jsonl.gz")
    assert corpus_path is not None and queries_path is not None  # narrowed by the loop above
    return corpus_path, queries_path, qrels_path


def _read_judgements(
    qrels_path: Path, tables: dict[str, tuple[dict[str, str], Path]], on_missing: str
) -> tuple[dict[str, dict[str, int]], int]:
    """The judgements of ``qrels_path`` whose ids are in ``tables`` (``query-id`` / ``corpus-id`` -> the
    texts and the file they came from), and how many were skipped (``on_missing="skip"``)."""
    qrels: dict[str, dict[str, int]] = {}
    skipped = 0
    for number, query_id, doc_id, score in read_qrels(qrels_path):
        missing = [
            f"{kind} {value!r} is not in {tables[kind][1].name}"
            for kind, value in (("query-id", query_id), ("corpus-id", doc_id))
            if value not in tables[kind][0]
        ]
        if missing:
            if on_missing == "error":
                raise BeirFormatError(
                    f"{qrels_path}:{number}: {'; '.join(missing)} (pass on_missing='skip' to drop such rows)"
                )
            skipped += 1
            continue
        qrels.setdefault(query_id, {})[doc_id] = score
    if skipped:
        logger.warning("%s: skipped %d judgements whose query or document is absent", qrels_path, skipped)
    if not qrels:
        raise BeirFormatError(f"{qrels_path}: no usable judgements")
    return qrels, skipped
