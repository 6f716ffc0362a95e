"""The contract every multi-vector index follows: :class:`MultiVectorIndex`, the base class of :class:`PLAID`,
:class:`Voyager` and :class:`ScaNN`.

It owns what the backends share: argument checks (:mod:`pipeline.indexes.checks`), the document ids and
their slots, atomic versions on disk (:mod:`pipeline.indexes.storage`), transactions, filtered search and the
facts. A backend implements only building, loading and candidate search. The id mapping is read once when
the index is opened; searches never touch it on disk.

Example:
    >>> import numpy as np, tempfile
    >>> from pipeline import indexes
    >>> index = indexes.Voyager(index_folder=tempfile.mkdtemp(), index_name="demo")
    >>> rng = np.random.default_rng(0)
    >>> docs = [rng.standard_normal((5, 8)).astype("float32") for _ in range(3)]
    >>> index = index.add_documents(documents_ids=["a", "b", 7], documents_embeddings=docs)
    >>> index.stats()["documents"], index.documents_ids
    (3, ['a', 'b', 7])
    >>> index.search(docs[2:], k=1)[0][0]["id"]
    7
"""

from __future__ import annotations

import abc
import logging
import os
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
import torch

from pipeline.indexes.checks import (
    DocumentId,
    as_float_arrays,
    check_counts,
    check_k,
    id_key,
    normalize_subset,
    safe_index_path,
    validate_ids,
)
from pipeline.indexes.errors import DuplicateDocumentIdError, IndexFormatError, UnknownIdWarning
from pipeline.indexes.storage import (
    DOCUMENTS_FILE,
    VersionStore,
    folder_bytes,
    read_version_files,
    write_version_files,
)

logger = logging.getLogger(__name__)


class MultiVectorIndex(abc.ABC):
    """Shared behaviour of :class:`~pipeline.indexes.PLAID`, :class:`~pipeline.indexes.Voyager` and
    :class:`~pipeline.indexes.ScaNN`.

    Documents occupy *slots* in insertion order. A backend either compacts slots on removal (PLAID, whose
    document numbers shift down) or leaves a tombstone (Voyager); ``_slot_ids[s]`` is ``None`` for a
    tombstone. Subclasses implement building, loading and candidate search; this class owns ids,
    validation, persistence and the public API.
    """

    kind: ClassVar[str]
    #: Whether removed slots are compacted away (True) or left as tombstones (False).
    compacts_on_remove: ClassVar[bool]
    #: What the backend keeps beside its versions (see :class:`~pipeline.indexes.storage.VersionStore`).
    side_files: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self,
        index_folder: str | os.PathLike[str],
        index_name: str,
        override: bool,
        embedding_size: int | None,
        settings: dict[str, Any],
    ) -> None:
        check_counts({"embedding_size": embedding_size}, optional=True)
        self.path = safe_index_path(index_folder, index_name)
        self.index_folder = Path(index_folder)
        self.index_name = index_name
        self.override = bool(override)
        self.settings = settings
        self._store = VersionStore(self.path, self.side_files)
        self._version: str | None = None
        self._dim: int | None = embedding_size
        self._configured_dim = embedding_size
        self._slot_ids: list[DocumentId | None] = []
        self._slot_tokens: list[int] = []
        self._positions: dict[tuple[type, DocumentId], int] = {}
        # override=True replaces the index at the first commit, so a build that dies half-way leaves
        # the previous index in place instead of an empty one.
        self._pending_override = self.override
        self._in_transaction = False
        self._working: Path | None = None
        if self.override:
            self._reset_empty()
        else:
            self._store.check_is_index()
            self._load_committed()

    # ------------------------------------------------------------------ backend hooks
    @abc.abstractmethod
    def _open_backend(self, version: Path | None) -> None:
        """Load the backend's files from a committed version (``None``: an empty index)."""

    @abc.abstractmethod
    def _write_added(self, source: Path | None, target: Path, embeddings: list[np.ndarray]) -> None:
        """Write into ``target`` the state of ``source`` (``None``: empty) plus ``embeddings``.

        ``source`` is ``target`` inside a transaction after its first write: then update in place.
        """

    @abc.abstractmethod
    def _write_removed(self, source: Path, target: Path, slots: list[int]) -> None:
        """Write into ``target`` the state of ``source`` minus the documents in ``slots`` (maybe in place)."""

    @abc.abstractmethod
    def _search_slots(
        self, queries: list[np.ndarray], k: int, allowed: list[np.ndarray | None]
    ) -> list[list[tuple[int, float]]]:
        """Top-``k`` ``(slot, score)`` per query, best first, within ``allowed`` slots when given."""

    @staticmethod
    def _rank_exactly(
        query: np.ndarray, slots: np.ndarray, documents: list[torch.Tensor], k: int
    ) -> list[tuple[int, float]]:
        """Exact MaxSim of ``query`` against candidate ``slots`` (``documents``, one per slot): best ``k``.

        Shared by the token-level backends, which gather candidates differently and rescore them alike.
        """
        if len(slots) == 0:
            return []
        # Imported here: sentence-transformers is slow to import, and opening or building needs none of it.
        from pipeline.scores import colbert_scores

        scores = colbert_scores([torch.from_numpy(query)], documents)[0]
        top = torch.topk(scores, min(k, len(slots)))
        return [
            (int(slots[i]), float(s)) for i, s in zip(top.indices.tolist(), top.values.tolist(), strict=True)
        ]

    # ------------------------------------------------------------------ loading
    def _load_committed(self) -> None:
        version = self._store.current()
        if version is None:
            self._reset_empty()
            return
        folder = self.path / version
        files = read_version_files(folder, self.kind)
        dim = files.dim
        if self._dim is not None and dim is not None and dim != self._dim:
            raise ValueError(f"{self.path} holds {dim}-dim embeddings, but embedding_size={self._dim}")
        self._dim = dim if dim is not None else self._dim
        self._slot_ids = files.ids
        self._slot_tokens = files.tokens
        self._positions = {id_key(v): s for s, v in enumerate(files.ids) if v is not None}
        if len(self._positions) != sum(v is not None for v in files.ids):
            raise IndexFormatError(f"{folder / DOCUMENTS_FILE}: duplicate document ids")
        try:
            self._open_backend(folder)
        except (OSError, RuntimeError, ValueError, KeyError) as error:
            raise IndexFormatError(f"{folder}: cannot load the {self.kind} index ({error})") from error
        self._version = version
        logger.info("Opened %s index %s (%d documents)", self.kind, self.path, self.num_documents)

    def _reset_empty(self) -> None:
        self._version = None
        self._dim = self._configured_dim
        self._slot_ids, self._slot_tokens, self._positions = [], [], {}
        self._open_backend(None)

    def _refresh_for_write(self) -> None:
        """Under the lock: pick up versions committed by another process since we loaded."""
        if self._pending_override:
            return
        if self._store.current() != self._version:
            logger.info("%s changed on disk since it was opened: reloading before writing", self.path)
            self._load_committed()

    # ------------------------------------------------------------------ writing
    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Group several writes into one atomic commit (and one copy of the index instead of one each).

        Inside the block, writes go to a private working version that searches already see; it is
        published when the block ends, and thrown away (the index reverts) when it raises. A nested
        ``transaction()`` joins the outer one. :func:`pipeline.indexes.indexing.index_corpus` uses this, so a
        crash half-way through a corpus leaves the previous index, not a partial one.

        Example:
            >>> import numpy as np, tempfile
            >>> from pipeline import indexes
            >>> index = indexes.Voyager(index_folder=tempfile.mkdtemp(), index_name="t", show_progress=False)
            >>> with index.transaction():
            ...     index = index.add_documents(["a"], [np.ones((2, 4), "float32")])
            ...     index = index.add_documents(["b"], [-np.ones((2, 4), "float32")])
            >>> index.documents_ids
            ['a', 'b']
        """
        if self._in_transaction:
            yield
            return
        with self._store.lock():
            self._refresh_for_write()
            self._in_transaction = True
            try:
                yield
            except BaseException:
                if self._working is not None:
                    self._store.discard(self._working)
                self._working = None
                self._in_transaction = False
                self._recover()
                raise
            working, self._working, self._in_transaction = self._working, None, False
            if working is not None:
                self._publish(working)

    @contextmanager
    def _write_lock(self) -> Iterator[None]:
        if self._in_transaction:  # the transaction already holds the lock and refreshed the state
            yield
            return
        with self._store.lock():
            self._refresh_for_write()
            yield

    def _apply(
        self,
        write: Callable[[Path | None, Path], None],
        slot_ids: list[DocumentId | None],
        slot_tokens: list[int],
    ) -> None:
        """Run a backend write into a new (or the transaction's working) version, then publish it."""
        committed = None if self._version is None or self._pending_override else self.path / self._version
        source = self._working or committed
        target = self._working or self._store.new_version()
        try:
            write(source, target)
            write_version_files(target, self.kind, self._dim, self.settings, slot_ids, slot_tokens)
            self._slot_ids, self._slot_tokens = slot_ids, slot_tokens
            self._positions = {id_key(v): s for s, v in enumerate(slot_ids) if v is not None}
            if self._in_transaction:
                self._working = target
            else:
                self._publish(target)
            self._open_backend(target)
        except BaseException:
            if not self._in_transaction:  # a transaction cleans up once, when it unwinds
                self._store.discard(target)
                self._recover()
            raise

    def _publish(self, target: Path) -> None:
        self._store.commit(target, replace_all=self._pending_override)
        self._pending_override = False
        self._version = target.name

    def add_documents(
        self, documents_ids: Sequence[DocumentId] | DocumentId, documents_embeddings: Any
    ) -> Self:
        """Add documents (one ``(tokens, dim)`` array each) under the given ids; returns the index.

        Returning the index keeps PyLate's ``index = index.add_documents(...)`` idiom working. A single
        ``(tokens, dim)`` array is one document (then ``documents_ids`` may be one id or a one-id list).
        An id that is already indexed is an error (:class:`DuplicateDocumentIdError`): remove it first to
        replace a document. Everything is checked before any work; a failure leaves the index unchanged.
        """
        if isinstance(documents_ids, str | int | np.integer) and not isinstance(documents_ids, bool):
            documents_ids = [documents_ids]
        ids = validate_ids(documents_ids)
        if not ids:
            raise ValueError("documents_ids is empty: nothing to add")
        arrays = as_float_arrays(
            documents_embeddings, argument="documents_embeddings", dim=self._dim, expected=len(ids)
        )
        with self._write_lock():
            if self._dim is not None and arrays[0].shape[1] != self._dim:  # another process set the dim
                raise ValueError(
                    f"documents_embeddings have dimension {arrays[0].shape[1]}, index {self._dim}"
                )
            for position, value in enumerate(ids):
                if id_key(value) in self._positions:
                    raise DuplicateDocumentIdError(
                        f"documents_ids[{position}] = {value!r} is already in the index {self.path} "
                        "(remove_documents first to replace it)"
                    )
            self._dim = int(arrays[0].shape[1])
            self._apply(
                lambda source, target: self._write_added(source, target, arrays),
                [*self._slot_ids, *ids],
                [*self._slot_tokens, *(int(a.shape[0]) for a in arrays)],
            )
        logger.info("Added %d documents to %s (%d in total)", len(ids), self.path, self.num_documents)
        return self

    def remove_documents(self, documents_ids: Sequence[DocumentId] | DocumentId) -> Self:
        """Remove documents by id; returns the index.

        Ids that are not indexed are skipped with a warning (:class:`UnknownIdWarning`) that names them,
        as PyLate's tests expect removal of an absent id not to raise; the others are removed.
        """
        if isinstance(documents_ids, str | int):
            documents_ids = [documents_ids]
        ids = validate_ids(list(dict.fromkeys(documents_ids)))
        if not ids:
            return self
        with self._write_lock():
            missing = [v for v in ids if id_key(v) not in self._positions]
            if missing:
                message = (
                    f"remove_documents: {len(missing)} id(s) not in the index {self.path}, skipped: "
                    f"{missing[:10]!r}" + (f" and {len(missing) - 10} more" if len(missing) > 10 else "")
                )
                logger.warning(message)
                warnings.warn(message, UnknownIdWarning, stacklevel=3)
                ids = [v for v in ids if id_key(v) in self._positions]
                if not ids:
                    return self
            slots = sorted(self._positions[id_key(v)] for v in ids)
            gone = set(slots)
            if self.compacts_on_remove:
                slot_ids = [v for s, v in enumerate(self._slot_ids) if s not in gone]
                slot_tokens = [t for s, t in enumerate(self._slot_tokens) if s not in gone]
            else:
                slot_ids = [None if s in gone else v for s, v in enumerate(self._slot_ids)]
                slot_tokens = list(self._slot_tokens)

            def write(source: Path | None, target: Path) -> None:
                assert source is not None  # an id was found, so a version holds it
                self._write_removed(source, target, slots)

            self._apply(write, slot_ids, slot_tokens)
        logger.info("Removed %d documents from %s (%d left)", len(ids), self.path, self.num_documents)
        return self

    def update_documents(
        self, documents_ids: Sequence[DocumentId] | DocumentId, documents_embeddings: Any
    ) -> Self:
        """Replace the embeddings of documents (PyLate's call); returns the index.

        A removal and an addition in one transaction, so readers see the old or the new documents, never
        neither. An id that is not indexed yet is added (with the :class:`UnknownIdWarning` of the removal).
        """
        with self.transaction():
            self.remove_documents(documents_ids)
            self.add_documents(documents_ids, documents_embeddings)
        return self

    def _recover(self) -> None:
        """After a failed write, return the in-memory state to the committed version."""
        try:
            if self._pending_override or self._version is None:
                self._reset_empty()
            else:
                self._load_committed()
        except Exception:  # the original error is more useful than a secondary one
            logger.exception("could not reload %s after a failed write", self.path)

    # ------------------------------------------------------------------ searching
    def __call__(self, queries_embeddings: Any, k: int = 10, subset: Any = None) -> Any:
        """PyLate's call: the ranked results of :meth:`search` (the :class:`Voyager` index differs)."""
        return self.search(queries_embeddings, k=k, subset=subset)

    def search(self, queries_embeddings: Any, k: int = 10, subset: Any = None) -> list[list[dict[str, Any]]]:
        """Top-``k`` documents per query, best first, as ``{"id": ..., "score": ...}`` dicts.

        Args:
            queries_embeddings: One ``(tokens, dim)`` array per query (or a 3-D array); a single 2-D
                array is one query.
            k: How many documents to return per query (fewer when the index or subset is smaller).
            subset: ``None``; a list of allowed ids for every query; or one list of allowed ids per
                query. Ids that are not indexed are ignored; an empty list gives no results.
        """
        check_k(k)
        queries = as_float_arrays(queries_embeddings, argument="queries_embeddings", dim=self._dim)
        allowed_keys = normalize_subset(subset, len(queries))
        if not queries:
            return []
        if self.num_documents == 0:
            return [[] for _ in queries]
        allowed: list[np.ndarray | None] = [None] * len(queries)
        if allowed_keys is not None:
            cache: dict[int, np.ndarray] = {}
            for position, keys in enumerate(allowed_keys):
                if id(keys) not in cache:
                    slots = [self._positions[key] for key in keys if key in self._positions]
                    cache[id(keys)] = np.array(sorted(slots), dtype=np.int64)
                allowed[position] = cache[id(keys)]
        hits = self._search_slots(queries, int(k), allowed)
        results: list[list[dict[str, Any]]] = []
        for query_hits, query_allowed in zip(hits, allowed, strict=True):
            permitted = None if query_allowed is None else set(query_allowed.tolist())
            row = []
            for slot, score in query_hits:
                document_id = self._slot_ids[slot]
                # Defensive: a backend must never surface a removed or filtered-out document.
                if document_id is None or (permitted is not None and slot not in permitted):
                    continue
                row.append({"id": document_id, "score": float(score)})
            results.append(row[:k])
        return results

    # ------------------------------------------------------------------ facts
    @property
    def documents_ids(self) -> list[DocumentId]:
        """Ids of the indexed documents, in insertion order."""
        return [v for v in self._slot_ids if v is not None]

    @property
    def num_documents(self) -> int:
        return len(self._positions)

    def __len__(self) -> int:
        return self.num_documents

    def __contains__(self, document_id: object) -> bool:
        if isinstance(document_id, bool) or not isinstance(document_id, str | int | np.integer):
            return False
        return id_key(document_id) in self._positions

    @property
    def num_tokens(self) -> int:
        """Number of token embeddings of the indexed documents."""
        return int(sum(t for v, t in zip(self._slot_ids, self._slot_tokens, strict=True) if v is not None))

    @property
    def embedding_size(self) -> int | None:
        """Dimension of the token embeddings (``None`` until the first documents are added)."""
        return self._dim

    @property
    def disk_bytes(self) -> int:
        """Bytes on disk of the live version (0 before the first commit)."""
        if self._version is None or self._pending_override:
            return 0
        return folder_bytes(self.path / self._version)

    def version_folder(self) -> Path | None:
        """The version folder searches see now: inside a :meth:`transaction`, after its first write, the
        private working version (files written into it are published with it, atomically); otherwise the
        live version (``None`` while nothing is committed)."""
        if self._working is not None:
            return self._working
        if self._version is None or self._pending_override:
            return None
        return self.path / self._version

    def stats(self) -> dict[str, Any]:
        """Facts for tracking: ``kind``, ``documents``, ``tokens``, ``dim``, ``bytes_on_disk``, ``path``."""
        return {
            "kind": self.kind,
            "documents": self.num_documents,
            "tokens": self.num_tokens,
            "dim": self._dim,
            "bytes_on_disk": self.disk_bytes,
            "path": str(self.path),
            "version": self._version,
        }

    def __repr__(self) -> str:
        return f"{type(self).__name__}(path={str(self.path)!r}, documents={self.num_documents})"

    def _live_slots(self) -> np.ndarray:
        return np.array([s for s, v in enumerate(self._slot_ids) if v is not None], dtype=np.int64)
