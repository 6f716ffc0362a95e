"""An index's folder on disk: immutable version folders, the ``CURRENT`` pointer, the lock, and the two files
every version holds. Separate from the index contract so that what makes a write atomic reads in one place.

An index lives in ``<index_folder>/<index_name>/``. Committed states are immutable *version folders*
(``v000001/`` ...); a small ``CURRENT`` file names the live one. Every write (a first build, an
addition, a removal) copies or rebuilds into a fresh version folder, flushes it, then replaces ``CURRENT``
in one ``os.replace``. A process killed at any moment therefore leaves ``CURRENT`` pointing at a complete
version: the previous index stays readable and correct, and the half-written folder is swept away by the
next writer. Writers take a file lock (``.lock``) so two processes never build on the same version.

Each version folder holds ``manifest.json`` (kind, dimension, counts, settings) and ``documents.json`` (the
document ids in slot order and their token counts), plus the backend's own files. A backend may also keep
*side files* beside the versions (PLAID's tuned ``search.json`` and its ``embeddings/``): the store leaves
those alone.

Example:
    >>> import tempfile
    >>> store = VersionStore(Path(tempfile.mkdtemp()) / "demo")
    >>> with store.lock():
    ...     version = store.new_version()
    ...     write_version_files(version, "demo", 4, {}, ["a", 7], [3, 2])
    ...     store.commit(version)
    >>> store.current(), read_version_files(store.path / store.current(), "demo").ids
    ('v000001', ['a', 7])
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from filelock import FileLock

from pipeline.indexes.errors import IndexFormatError
from pipeline.project.io import atomic_write_json

if TYPE_CHECKING:  # checks imports torch; reading a version folder (the register stage) needs none
    from pipeline.indexes.checks import DocumentId

FORMAT_VERSION = 1
CURRENT_FILE = "CURRENT"
LOCK_FILE = ".lock"
MANIFEST_FILE = "manifest.json"
DOCUMENTS_FILE = "documents.json"
#: The indexed documents' texts, which the index stage writes into the version for the served model (indexes
#: written before that keep them beside the versions).
TEXTS_FILE = "texts.jsonl"
#: What the index stage built a version from (ids, text hashes, encoder): :mod:`pipeline.indexes.updates`.
CORPUS_FILE = "corpus.json"
#: ``v000001``; folders written before names became deterministic also carry a random ``-3fa2c1d0`` suffix.
_VERSION_RE = re.compile(r"^v(\d{6})(?:-[0-9a-f]{8})?$")


def folder_bytes(path: Path) -> int:
    """Total size of the regular files under ``path``."""
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def link_or_copy(source: Path, target: Path) -> None:
    """Share a committed, never-rewritten file with a new version (a hard link), or copy it."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


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


class VersionStore:
    """Immutable version folders under one index folder, and the ``CURRENT`` pointer that selects one.

    ``side_files`` names what the backend keeps beside the versions, so that a folder holding them still
    counts as an index folder.
    """

    def __init__(self, path: Path, side_files: tuple[str, ...] = ()) -> None:
        self.path = path
        self.side_files = side_files

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
            if p.name not in {CURRENT_FILE, LOCK_FILE, *self.side_files}
            and not _VERSION_RE.match(p.name)
            and not p.name.startswith(tuple(f".{name}." for name in self.side_files))  # their temporary files
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


# ------------------------------------------------------------------------------------------ a version's files
@dataclasses.dataclass(frozen=True)
class VersionFiles:
    """What a version's ``manifest.json`` and ``documents.json`` say: the dimension, and ids and token counts
    in slot order (``None`` for a removed document's tombstone)."""

    dim: int | None
    ids: list[DocumentId | None]
    tokens: list[int]


def write_version_files(
    target: Path,
    kind: str,
    dim: int | None,
    settings: dict[str, Any],
    slot_ids: list[DocumentId | None],
    slot_tokens: list[int],
) -> None:
    """Write ``target``'s ``manifest.json`` and ``documents.json``."""
    live = [t for v, t in zip(slot_ids, slot_tokens, strict=True) if v is not None]
    manifest = {
        "format": FORMAT_VERSION,
        "kind": kind,
        "dim": dim,
        "num_documents": len(live),
        "num_tokens": int(sum(live)),
        "settings": settings,
    }  # no time or path in it: the same documents and settings give the same bytes (DVC hashes it)
    atomic_write_json(target / MANIFEST_FILE, manifest)
    # documents.json keeps the ids' JSON types, so "1" and 1 come back exactly as given.
    (target / DOCUMENTS_FILE).write_text(
        json.dumps({"ids": slot_ids, "tokens": slot_tokens}, ensure_ascii=False), encoding="utf-8"
    )


def read_version_files(folder: Path, kind: str) -> VersionFiles:
    """Read ``folder``'s two files, refusing another ``kind`` of index, another format or mismatched lists."""
    manifest = _read_json_object(folder / MANIFEST_FILE)
    if manifest.get("kind") != kind:
        raise IndexFormatError(
            f"{folder / MANIFEST_FILE}: this is a {manifest.get('kind')!r} index, not {kind!r}"
        )
    if manifest.get("format") != FORMAT_VERSION:
        raise IndexFormatError(f"{folder / MANIFEST_FILE}: unsupported format {manifest.get('format')!r}")
    documents = _read_json_object(folder / DOCUMENTS_FILE)
    ids, tokens = documents.get("ids"), documents.get("tokens")
    if not isinstance(ids, list) or not isinstance(tokens, list) or len(ids) != len(tokens):
        raise IndexFormatError(f"{folder / DOCUMENTS_FILE}: 'ids' and 'tokens' must be lists of one length")
    return VersionFiles(dim=manifest.get("dim"), ids=ids, tokens=[int(t) for t in tokens])


def read_build_settings(folder: Path) -> dict[str, Any]:
    """The settings a version was built with (its ``manifest.json``'s ``settings``)."""
    settings = _read_json_object(folder / MANIFEST_FILE).get("settings")
    return settings if isinstance(settings, dict) else {}


def _read_json_object(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise IndexFormatError(f"{path}: missing (the index folder is incomplete or corrupt)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise IndexFormatError(f"{path}: corrupt ({error})") from None
    if not isinstance(data, dict):
        raise IndexFormatError(f"{path}: expected a JSON object")
    return data
