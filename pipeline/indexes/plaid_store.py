"""The float16 embedding store a :class:`~pipeline.indexes.PLAID` index keeps in each version by default, so
that its searches can re-score PLAID's candidates exactly (see :mod:`pipeline.indexes.embedding_store`).

PLAID's 4-bit residuals stop its recall@10 against exact MaxSim near 0.91-0.93 whatever the search settings;
re-scoring a short list of its candidates with the original vectors is what reaches 0.95. The index stage
writes the store itself while it encodes (and tunes its search); a library user's ``add_documents`` /
``remove_documents`` get it from here: every write carries the source version's store into the target
version (the kept documents' rows, then the added ones), so the store always matches the version's slots.

Example:
    >>> import numpy as np, tempfile
    >>> from pathlib import Path
    >>> root = Path(tempfile.mkdtemp())
    >>> docs = [np.full((2, 4), float(i), dtype="float32") for i in range(3)]
    >>> carry_store(None, root / "v1", "v1", added=docs)
    True
    >>> carry_store(root / "v1", root / "v2", "v2", keep=np.array([0, 2]))
    True
    >>> store = open_store(root, "v2")
    >>> store.num_documents, float(store.tokens[2, 0])  # slot 1 is gone: the third row is document 2's
    (2, 2.0)
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pipeline.indexes.embedding_store import STORE_FOLDER, EmbeddingStore, EmbeddingStoreWriter, open_store
from pipeline.project.io import atomic_write_json

logger = logging.getLogger(__name__)

#: Documents copied from the source store per write call (bounds the memory of carrying a large store).
COPY_DOCUMENTS = 4096

__all__ = ["carry_store", "open_store"]


def _source_store(source: Path) -> EmbeddingStore | None:
    folder = source / STORE_FOLDER
    if not folder.is_dir():
        return None
    try:
        return EmbeddingStore(folder)
    except (OSError, ValueError, KeyError) as error:
        logger.warning("%s: unreadable embedding store, not carried (%s)", folder, error)
        return None


def carry_store(
    source: Path | None,
    target: Path,
    version: str,
    keep: np.ndarray | None = None,
    added: Sequence[np.ndarray] = (),
) -> bool:
    """Write ``target``'s store: ``source``'s documents at slots ``keep`` (``None``: all), then ``added``.

    ``source`` is ``None`` for a new index; it may be ``target`` itself (a transaction's second write: the
    new store is written beside it, then swapped in). Returns ``False``, leaving ``target`` without a store,
    when ``source`` has none (an index built without one): its searches are then plain PLAID.
    """
    previous = None if source is None else _source_store(source)
    if source is not None and previous is None:
        shutil.rmtree(target / STORE_FOLDER, ignore_errors=True)
        return False
    if previous is not None and source == target and keep is None:
        # A transaction's later additions: append, so indexing chunk by chunk never copies the store again.
        _append(previous, added, version)
        return True
    with EmbeddingStoreWriter(target / STORE_FOLDER) as writer:
        if previous is not None:
            slots = np.arange(previous.num_documents) if keep is None else np.asarray(keep, dtype=np.int64)
            for start in range(0, len(slots), COPY_DOCUMENTS):
                chunk = slots[start : start + COPY_DOCUMENTS]
                firsts, lasts = previous.offsets[chunk], previous.offsets[chunk + 1]
                rows = np.concatenate([previous.tokens[a:b] for a, b in zip(firsts, lasts, strict=True)])
                writer.add_rows(rows, lasts - firsts)
        if added:
            writer.add(added)
        if writer.dim is None:  # nothing left: an empty version holds no store
            shutil.rmtree(target / STORE_FOLDER, ignore_errors=True)
            return False
        writer.commit(index_version=version)
    return True


def _append(store: EmbeddingStore, added: Sequence[np.ndarray], version: str) -> None:
    """Append ``added`` to ``store``'s files in place (only inside a transaction's private working version,
    which is discarded whole if anything fails)."""
    arrays = [np.ascontiguousarray(a, dtype=np.float16) for a in added]
    if any(a.ndim != 2 or a.shape[1] != store.dim or a.shape[0] == 0 for a in arrays):
        raise ValueError(f"{store.folder}: added embeddings must be non-empty (tokens, {store.dim}) arrays")
    with open(store.folder / "tokens.f16", "ab") as handle:
        for array in arrays:
            handle.write(array.tobytes())
    lengths = np.array([len(a) for a in arrays], dtype=np.int64)
    offsets = np.concatenate([store.offsets, store.offsets[-1] + np.cumsum(lengths)]).astype(np.int64)
    np.save(store.folder / "offsets.npy", offsets)
    meta = json.loads((store.folder / "meta.json").read_text(encoding="utf-8"))
    meta.update(documents=len(offsets) - 1, tokens=int(offsets[-1]), index_version=version)
    atomic_write_json(store.folder / "meta.json", meta)
