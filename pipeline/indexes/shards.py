"""A corpus's token embeddings in shards: each encoded apart (on whichever worker takes it), indexed together.

Why: encoding is the part of building an index that grows with the corpus and parallelises cleanly; the
index itself (PLAID's k-means and compression) is built once, from every shard, in corpus order. A shard is
a contiguous slice of the corpus (:func:`shard_bounds`), so feeding the shards in order adds the same
documents, in the same order and in the same chunks, as encoding the corpus in one go.

A shard is a folder, written whole or not at all:

- ``shard.json``: ``format``, the shard's ``identity`` (what the writer says encoded it: position, model,
  corpus slice, precision; compared by :func:`matches`), ``ids`` (its documents, in order), ``dim``,
  ``tokens`` and ``chunks`` (how many documents each chunk file holds);
- ``chunk-00000.safetensors``, ...: per chunk, ``embeddings`` (all its tokens, ``(tokens, dim)`` float32) and
  ``lengths`` (tokens per document, int64). safetensors holds tensors only: nothing is unpickled on reading.

Example:
    >>> import tempfile
    >>> import numpy as np
    >>> folder = Path(tempfile.mkdtemp()) / "shard-0-of-2"
    >>> chunk = (["a", "b"], [np.ones((2, 4), "float32"), np.zeros((3, 4), "float32")])
    >>> write_shard(folder, [chunk], identity={"shard": 0, "shards": 2})["tokens"]
    5
    >>> [(ids, [e.shape for e in embeddings]) for ids, embeddings in iter_shard(folder)]
    [(['a', 'b'], [(2, 4), (3, 4)])]
    >>> matches(folder, {"shard": 0, "shards": 2}), matches(folder, {"shard": 1, "shards": 2})
    (True, False)
"""

from __future__ import annotations

import itertools
import json
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.indexes.base import MultiVectorIndex
from pipeline.indexes.checks import DocumentId, check_counts
from pipeline.project.io import atomic_directory, atomic_write_json

logger = logging.getLogger(__name__)

#: The version of the folder layout above; a shard of another version is not read.
SHARD_FORMAT = 1
META_FILE = "shard.json"


class ShardError(ValueError):
    """A shard folder that cannot be read: missing, unfinished, of another format, or inconsistent."""


def shard_bounds(total: int, shard: int, shards: int) -> tuple[int, int]:
    """Positions ``[start, stop)`` of shard ``shard`` (from 0) of ``shards`` in a corpus of ``total``
    documents: contiguous, in order, sizes differing by one at most (the first ones take the remainder).

    Example:
        >>> [shard_bounds(5, i, 2) for i in range(2)], shard_bounds(1, 1, 2)
        ([(0, 3), (3, 5)], (1, 1))
    """
    check_counts({"shards": shards})
    if not 0 <= shard < shards:
        raise ValueError(f"shard {shard} of {shards}: shards are numbered 0 to {shards - 1}")
    size, extra = divmod(total, shards)
    start = shard * size + min(shard, extra)
    return start, start + size + (1 if shard < extra else 0)


def write_shard(
    folder: str | Path,
    chunks: Iterable[tuple[Sequence[DocumentId], Sequence[Any]]],
    identity: dict[str, Any],
) -> dict[str, Any]:
    """Write the ``(ids, embeddings)`` chunks as a shard folder (replacing one there); returns its meta.

    Memory stays one chunk: each is written to its own file as it comes. ``identity`` is stored as given
    (JSON), for :func:`matches`. The folder appears only once every chunk is in (:func:`atomic_directory`).
    """
    from safetensors.numpy import save_file

    ids: list[DocumentId] = []
    sizes: list[int] = []
    dim: int | None = None
    tokens = 0
    with atomic_directory(folder) as temp:
        for number, (chunk_ids, embeddings) in enumerate(chunks):
            arrays = [np.ascontiguousarray(e, dtype=np.float32) for e in embeddings]
            if len(arrays) != len(chunk_ids) or not arrays:
                raise ShardError(f"chunk {number}: {len(chunk_ids)} ids but {len(arrays)} embeddings")
            if any(a.ndim != 2 or a.shape[0] == 0 for a in arrays):
                raise ShardError(f"chunk {number}: each embedding must be a non-empty (tokens, dim) array")
            widths = {a.shape[1] for a in arrays} | ({dim} if dim is not None else set())
            if len(widths) != 1:
                raise ShardError(f"chunk {number}: embeddings of dimensions {sorted(widths)} in one shard")
            dim = int(widths.pop())
            lengths = np.array([a.shape[0] for a in arrays], dtype=np.int64)
            save_file(
                {"embeddings": np.concatenate(arrays), "lengths": lengths},
                str(temp / f"chunk-{number:05d}.safetensors"),
            )
            ids += list(chunk_ids)
            sizes.append(len(arrays))
            tokens += int(lengths.sum())
        meta = {
            "format": SHARD_FORMAT,
            "identity": identity,
            "ids": ids,
            "dim": dim,
            "tokens": tokens,
            "chunks": sizes,
        }
        atomic_write_json(temp / META_FILE, meta)
    return meta


def read_meta(folder: str | Path) -> dict[str, Any] | None:
    """The shard's ``shard.json``, or None when the folder holds no finished shard of this format."""
    path = Path(folder) / META_FILE
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) and meta.get("format") == SHARD_FORMAT else None


def matches(folder: str | Path, identity: dict[str, Any]) -> bool:
    """Whether ``folder`` holds a finished shard whose identity is ``identity`` (JSON-equal)."""
    meta = read_meta(folder)
    return meta is not None and meta.get("identity") == json.loads(json.dumps(identity))


def iter_shard(folder: str | Path) -> Iterator[tuple[list[DocumentId], list[np.ndarray]]]:
    """The shard's ``(ids, embeddings)`` chunk by chunk, as written (one chunk in memory at a time)."""
    from safetensors.numpy import load_file

    folder = Path(folder)
    meta = read_meta(folder)
    if meta is None:
        raise ShardError(f"{folder}: no finished shard here ({META_FILE} missing or of another format)")
    start = 0
    for number, size in enumerate(meta["chunks"]):
        path = folder / f"chunk-{number:05d}.safetensors"
        try:
            tensors = load_file(str(path))
        except (
            OSError,
            ValueError,
        ) as error:  # safetensors raises its own SafetensorError, a ValueError-like
            raise ShardError(f"{path}: cannot be read ({error})") from None
        lengths = tensors["lengths"]
        if len(lengths) != size or int(lengths.sum()) != len(tensors["embeddings"]):
            raise ShardError(f"{path}: holds {len(lengths)} documents, {META_FILE} says {size}")
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        embeddings = [tensors["embeddings"][offsets[i] : offsets[i + 1]] for i in range(size)]
        yield list(meta["ids"][start : start + size]), embeddings
        start += size


def index_shards(
    folders: Sequence[str | Path],
    index: MultiVectorIndex,
    chunk_size: int = 1000,
    show_progress: bool = True,
    on_chunk: Callable[[list[DocumentId], list[Any]], None] | None = None,
) -> dict[str, float]:
    """Add the shards' documents to ``index`` in shard order, ``chunk_size`` at a time, in one transaction.

    Chunks are cut from the shards' documents taken as one sequence, so a corpus split into shards is added
    in the same chunks as :func:`pipeline.indexes.indexing.index_corpus` adds it whole. ``on_chunk`` as there.
    Returns ``{"documents", "tokens", "seconds", "chunks"}`` like it.
    """
    from tqdm.auto import tqdm

    check_counts({"chunk_size": chunk_size})
    metas = [read_meta(folder) for folder in folders]
    missing = [str(folder) for folder, meta in zip(folders, metas, strict=True) if meta is None]
    if missing:
        raise ShardError(f"no finished shard in {', '.join(missing)}")
    total = sum(len(meta["ids"]) for meta in metas if meta is not None)
    if total == 0:
        raise ShardError("the shards hold no documents: nothing to index")
    pairs = (
        pair
        for folder in folders
        for ids, embeddings in iter_shard(folder)
        for pair in zip(ids, embeddings, strict=True)
    )
    started = time.perf_counter()
    documents = tokens = chunks = 0
    with (
        index.transaction(),
        tqdm(total=total, desc=f"Indexing shards into {index.path.name}", disable=not show_progress) as bar,
    ):
        while chunk := list(itertools.islice(pairs, chunk_size)):
            ids = [i for i, _ in chunk]
            embeddings = [e for _, e in chunk]
            index.add_documents(documents_ids=ids, documents_embeddings=embeddings)
            if on_chunk is not None:
                on_chunk(ids, embeddings)
            documents += len(chunk)
            tokens += sum(len(e) for e in embeddings)
            chunks += 1
            bar.update(len(chunk))
    seconds = time.perf_counter() - started
    logger.info(
        "Indexed %d documents (%d tokens) from %d shards in %.1f s", documents, tokens, len(folders), seconds
    )
    return {"documents": documents, "tokens": tokens, "seconds": seconds, "chunks": chunks}
