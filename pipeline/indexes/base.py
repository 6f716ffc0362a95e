"""The contract every multi-vector index follows, and the on-disk machinery they share.

One cohesive module: the base class both indexes extend (argument checks, id maps, versioned storage).

An index lives in ``<index_folder>/<index_name>/``. Committed states are immutable *version folders*
(``v000001/`` ...); a small ``CURRENT`` file names the live one. Every write (a first build, an
addition, a removal) copies or rebuilds into a fresh version folder, flushes it, then replaces ``CURRENT``
in one ``os.replace``. A process killed at any moment therefore leaves ``CURRENT`` pointing at a complete
version: the previous index stays readable and correct, and the half-written folder is swept away by the
next writer. Writers take a file lock (``.lock``) so two processes never build on the same version.

Each version folder holds ``manifest.json`` (kind, dimension, counts, settings) and ``documents.json`` (the
document ids in slot order and their token counts), plus the backend's own files. The id mapping is read
once when the index is opened; searches never touch it on disk.

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
import json
import logging
import os
import re
import shutil
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
import torch
from filelock import FileLock

from pipeline.indexes.embedding_store import STORE_FOLDER
from pipeline.indexes.tuning import SEARCH_SETTINGS_FILE
from pipeline.project.io import atomic_write_json

logger = logging.getLogger(__name__)

#: A document id: a string or an integer, returned exactly as it was given.
DocumentId = str | int

FORMAT_VERSION = 1
CURRENT_FILE = "CURRENT"
LOCK_FILE = ".lock"
MANIFEST_FILE = "manifest.json"
DOCUMENTS_FILE = "documents.json"
#: The texts of the indexed documents, written by the index stage for the served model to answer with.
TEXTS_FILE = "texts.jsonl"
#: Beside the versions (see :mod:`pipeline.indexes.tuning`): tuned search settings, full-precision
#: embeddings and the documents' texts.
_SIDECARS = (SEARCH_SETTINGS_FILE, STORE_FOLDER, TEXTS_FILE)
#: ``v000001``; folders written before names became deterministic also carry a random ``-3fa2c1d0`` suffix.
_VERSION_RE = re.compile(r"^v(\d{6})(?:-[0-9a-f]{8})?$")


class IndexFormatError(ValueError):
    """An index folder is missing, corrupt, or holds another kind of index."""


class DuplicateDocumentIdError(ValueError):
    """A document id is given twice, or is already in the index."""


class UnknownDocumentIdError(ValueError):
    """A document id to remove is not in the index."""


class UnknownIdWarning(UserWarning):
    """``remove_documents`` was given ids that are not in the index; they were skipped."""


# ---------------------------------------------------------------------------------------------- validation
def safe_index_path(index_folder: str | os.PathLike[str], index_name: str) -> Path:
    """``index_folder / index_name``, refusing names that could land outside ``index_folder``.

    Example:
        >>> safe_index_path("indexes", "scifact").as_posix()
        'indexes/scifact'
        >>> safe_index_path("indexes", "../x")
        Traceback (most recent call last):
        ...
        ValueError: index_name '../x' must be a plain folder name (no '/', '\\\\', '..' or leading '.')
    """
    if not isinstance(index_name, str) or not index_name:
        raise ValueError(f"index_name must be a non-empty string, got {index_name!r}")
    if (
        index_name in {".", ".."}
        or index_name.startswith(".")
        or any(ch in index_name for ch in ("/", "\\", "\x00"))
        or index_name != index_name.strip()
    ):
        raise ValueError(
            f"index_name {index_name!r} must be a plain folder name (no '/', '\\\\', '..' or leading '.')"
        )
    folder = Path(index_folder)
    path = folder / index_name
    # A symlink named like the index could still point elsewhere: check where it really resolves.
    if not path.resolve().is_relative_to(folder.resolve()):
        raise ValueError(f"index {path} resolves outside index_folder {folder.resolve()}")
    return path


def validate_ids(documents_ids: Any, *, argument: str = "documents_ids") -> list[DocumentId]:
    """Check ids are str or int (numpy integers become int) and unique; return them as a list."""
    if isinstance(documents_ids, str | bytes | int) or not isinstance(documents_ids, Iterable):
        raise ValueError(f"{argument} must be a list of str or int ids, got {type(documents_ids).__name__}")
    ids: list[DocumentId] = []
    seen: set[tuple[type, DocumentId]] = set()
    for position, value in enumerate(documents_ids):
        if isinstance(value, bool) or not isinstance(value, str | int | np.integer):
            raise ValueError(
                f"{argument}[{position}] = {value!r} ({type(value).__name__}): ids must be str or int"
            )
        # numpy scalars (np.str_, np.int64) become plain str / int, so they compare and serialise as such.
        value = str(value) if isinstance(value, str) else int(value)
        key = (type(value), value)
        if key in seen:
            raise DuplicateDocumentIdError(f"{argument}[{position}] = {value!r} appears more than once")
        seen.add(key)
        ids.append(value)
    return ids


def as_float_arrays(
    embeddings: Any, *, argument: str, dim: int | None, expected: int | None = None
) -> list[np.ndarray]:
    """Per-item ``(tokens, dim)`` float32 arrays; errors name ``argument[i]`` and the expected shape.

    A single 2-D ``(tokens, dim)`` array or tensor is one item, as PyLate reads it: it is what
    ``model.encode("one text")`` returns.
    """
    if isinstance(embeddings, np.ndarray | torch.Tensor):
        if embeddings.ndim == 2:
            embeddings = [embeddings]
        elif embeddings.ndim != 3:
            raise ValueError(f"{argument} must be 3-D (items, tokens, dim), got {tuple(embeddings.shape)}")
    elif not isinstance(embeddings, Sequence):
        raise ValueError(
            f"{argument} must be a list of (tokens, dim) arrays, got {type(embeddings).__name__}"
        )
    if expected is not None and len(embeddings) != expected:
        raise ValueError(f"{argument} has {len(embeddings)} items, expected {expected}")
    arrays: list[np.ndarray] = []
    for position, item in enumerate(embeddings):
        if isinstance(item, torch.Tensor):
            item = item.detach().to("cpu", torch.float32).numpy()
        array = np.asarray(item, dtype=np.float32)
        if array.ndim != 2:
            raise ValueError(
                f"{argument}[{position}] must be a 2-D (tokens, dim) array, got shape {array.shape}"
            )
        if array.shape[0] == 0:
            raise ValueError(f"{argument}[{position}] has 0 tokens")
        if dim is not None and array.shape[1] != dim:
            raise ValueError(
                f"{argument}[{position}] has dimension {array.shape[1]}, but the index holds {dim}-dim "
                "embeddings (was it encoded by another model?)"
            )
        if not np.isfinite(array).all():
            raise ValueError(f"{argument}[{position}] contains NaN or infinite values")
        dim = int(array.shape[1])
        arrays.append(array)
    return arrays


def normalize_subset(subset: Any, n_queries: int) -> list[set[tuple[type, DocumentId]]] | None:
    """``subset`` as one set of allowed id keys per query.

    ``subset`` is ``None`` (no filter), one list of ids applied to every query, or one list per query.
    """
    if subset is None:
        return None
    if isinstance(subset, str | bytes) or not isinstance(subset, Iterable):
        raise ValueError(f"subset must be a list of ids or one list of ids per query, got {subset!r}")
    subset = list(subset)
    per_query = bool(subset) and all(isinstance(s, list | tuple | set | frozenset) for s in subset)
    if per_query:
        if len(subset) != n_queries:
            raise ValueError(f"subset has {len(subset)} lists but there are {n_queries} queries")
        groups = subset
    else:
        groups = [subset] * n_queries
    normalized: list[set[tuple[type, DocumentId]]] = []
    cache: dict[int, set[tuple[type, DocumentId]]] = {}
    for position, group in enumerate(groups):
        if id(group) not in cache:  # the shared list is converted once, not once per query
            keys = set()
            for value in group:
                if isinstance(value, bool) or not isinstance(value, str | int | np.integer):
                    raise ValueError(f"subset[{position}] holds {value!r}: ids must be str or int")
                keys.add(id_key(value))
            cache[id(group)] = keys
        normalized.append(cache[id(group)])
    return normalized


def id_key(value: DocumentId) -> tuple[type, DocumentId]:
    """Ids "1" and 1 are different documents: key them by kind (str or int) and value."""
    if isinstance(value, str):
        return (str, str(value))
    return (int, int(value))


def folder_bytes(path: Path) -> int:
    """Total size of the regular files under ``path``."""
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def _fsync_tree(path: Path) -> None:
    """Flush a freshly written version folder so the commit never points at unflushed data."""
    for file in path.rglob("*"):
        if file.is_file():
            with open(file, "rb") as handle:
                os.fsync(handle.fileno())
    directory = os.open(path, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


# ---------------------------------------------------------------------------------------------- storage
class VersionStore:
    """Immutable version folders under one index folder, and the ``CURRENT`` pointer that selects one."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @property
    def current_file(self) -> Path:
        return self.path / CURRENT_FILE

    def current(self) -> str | None:
        """Name of the live version folder, ``None`` when nothing was ever committed here."""
        try:
            text = self.current_file.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        try:
            name = json.loads(text)["version"]
        except (json.JSONDecodeError, KeyError, TypeError):
            raise IndexFormatError(f"{self.current_file}: corrupt pointer file ({text[:80]!r})") from None
        if not isinstance(name, str) or not _VERSION_RE.match(name):
            raise IndexFormatError(f"{self.current_file}: names an invalid version folder {name!r}")
        if not (self.path / name).is_dir():
            raise IndexFormatError(f"{self.current_file}: version folder {self.path / name} is missing")
        return name

    def check_is_index(self) -> None:
        """Refuse to treat a folder of unrelated files as an (empty) index."""
        if not self.path.exists():
            return
        if not self.path.is_dir():
            raise IndexFormatError(f"{self.path} exists and is not a folder")
        foreign = [
            p.name
            for p in self.path.iterdir()
            if p.name not in {CURRENT_FILE, LOCK_FILE, *_SIDECARS}
            and not _VERSION_RE.match(p.name)
            and not p.name.startswith(tuple(f".{name}." for name in _SIDECARS))  # their temporary files
        ]
        if foreign:
            raise IndexFormatError(
                f"{self.path} is not an index folder (it holds {sorted(foreign)[:5]}); "
                "pass override=True to replace it"
            )

    @contextmanager
    def lock(self) -> Iterator[None]:
        self.path.mkdir(parents=True, exist_ok=True)
        with FileLock(str(self.path / LOCK_FILE)):
            yield

    def new_version(self) -> Path:
        """A fresh, empty version folder (not live until :meth:`commit`)."""
        numbers = [int(m.group(1)) for p in self.path.iterdir() if (m := _VERSION_RE.match(p.name))]
        # Writers hold the index lock, so the next number is free; no random part, so the same build in two
        # workspaces (or a DVC re-run) gives the same folder name, and the same DVC hash.
        name = f"v{max(numbers, default=0) + 1:06d}"
        folder = self.path / name
        folder.mkdir()
        return folder

    def commit(self, version: Path, *, replace_all: bool = False) -> None:
        """Make ``version`` live in one atomic rename, then sweep older and abandoned versions.

        ``replace_all`` also removes files that are not versions (``override=True`` on a foreign folder).
        """
        _fsync_tree(version)
        atomic_write_json(self.current_file, {"version": version.name, "format": FORMAT_VERSION})
        for entry in self.path.iterdir():
            if entry.name in {CURRENT_FILE, LOCK_FILE, version.name}:
                continue
            if _VERSION_RE.match(entry.name) or replace_all:
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink(missing_ok=True)

    def discard(self, version: Path) -> None:
        shutil.rmtree(version, ignore_errors=True)


# ---------------------------------------------------------------------------------------------- the index
class MultiVectorIndex(abc.ABC):
    """Shared behaviour of :class:`~pipeline.indexes.PLAID` and :class:`~pipeline.indexes.Voyager`.

    Documents occupy *slots* in insertion order. A backend either compacts slots on removal (PLAID, whose
    document numbers shift down) or leaves a tombstone (Voyager); ``_slot_ids[s]`` is ``None`` for a
    tombstone. Subclasses implement building, loading and candidate search; this class owns ids,
    validation, persistence and the public API.
    """

    kind: ClassVar[str]
    #: Whether removed slots are compacted away (True) or left as tombstones (False).
    compacts_on_remove: ClassVar[bool]

    def __init__(
        self,
        index_folder: str | os.PathLike[str],
        index_name: str,
        override: bool,
        embedding_size: int | None,
        settings: dict[str, Any],
    ) -> None:
        if embedding_size is not None and (not isinstance(embedding_size, int) or embedding_size < 1):
            raise ValueError(f"embedding_size must be a positive integer or None, got {embedding_size!r}")
        self.path = safe_index_path(index_folder, index_name)
        self.index_folder = Path(index_folder)
        self.index_name = index_name
        self.override = bool(override)
        self.settings = settings
        self._store = VersionStore(self.path)
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
        manifest = self._read_json(folder / MANIFEST_FILE)
        if manifest.get("kind") != self.kind:
            raise IndexFormatError(
                f"{folder / MANIFEST_FILE}: this is a {manifest.get('kind')!r} index, not {self.kind!r}"
            )
        if manifest.get("format") != FORMAT_VERSION:
            raise IndexFormatError(f"{folder / MANIFEST_FILE}: unsupported format {manifest.get('format')!r}")
        documents = self._read_json(folder / DOCUMENTS_FILE)
        ids, tokens = documents.get("ids"), documents.get("tokens")
        if not isinstance(ids, list) or not isinstance(tokens, list) or len(ids) != len(tokens):
            raise IndexFormatError(
                f"{folder / DOCUMENTS_FILE}: 'ids' and 'tokens' must be lists of one length"
            )
        dim = manifest.get("dim")
        if self._dim is not None and dim is not None and dim != self._dim:
            raise ValueError(f"{self.path} holds {dim}-dim embeddings, but embedding_size={self._dim}")
        self._dim = dim if dim is not None else self._dim
        self._slot_ids = ids
        self._slot_tokens = [int(t) for t in tokens]
        self._positions = {id_key(v): s for s, v in enumerate(ids) if v is not None}
        if len(self._positions) != sum(v is not None for v in ids):
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

    @staticmethod
    def _read_json(path: Path) -> dict[str, Any]:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise IndexFormatError(f"{path}: missing (the index folder is incomplete or corrupt)") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise IndexFormatError(f"{path}: corrupt ({error})") from None
        if not isinstance(data, dict):
            raise IndexFormatError(f"{path}: expected a JSON object")
        return data

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
            self._write_metadata(target, slot_ids, slot_tokens)
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

    def _write_metadata(
        self, target: Path, slot_ids: list[DocumentId | None], slot_tokens: list[int]
    ) -> None:
        live = [t for v, t in zip(slot_ids, slot_tokens, strict=True) if v is not None]
        manifest = {
            "format": FORMAT_VERSION,
            "kind": self.kind,
            "dim": self._dim,
            "num_documents": len(live),
            "num_tokens": int(sum(live)),
            "settings": self.settings,
        }  # no time or path in it: the same documents and settings give the same bytes (DVC hashes it)
        atomic_write_json(target / MANIFEST_FILE, manifest)
        # documents.json keeps the ids' JSON types, so "1" and 1 come back exactly as given.
        (target / DOCUMENTS_FILE).write_text(
            json.dumps({"ids": slot_ids, "tokens": slot_tokens}, ensure_ascii=False), encoding="utf-8"
        )

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
        if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
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
