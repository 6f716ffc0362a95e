"""The index the index stage updates in place: the workspace's index folder, or the build dvc.lock records.

``dvc repro`` deletes a stage's outputs before it runs the stage, so under DVC the index folder is gone when
the index stage starts. The previous build is still known by its hash: ``dvc.lock`` records the index
output's md5 (the run before this one wrote it), and DVC's cache holds its files (``dvc repro`` committed them
there; a stateless task pulls the stage's recorded outputs before it runs, :mod:`pipeline.ops.stateless`).
:func:`restore_previous` copies that build back into the index folder, so the stage can update it. Copies,
not links: the update must never write into DVC's cache.

Example (no DVC project, no index: nothing to start from):
    >>> import tempfile
    >>> project = Path(tempfile.mkdtemp())
    >>> restore_previous(project, project / "indexes" / "sample") is None
    True
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import uuid
from pathlib import Path

logger = logging.getLogger(__name__)


def restore_previous(project: Path, index_dir: Path) -> str | None:
    """Make ``index_dir`` hold the previous build of the index; say where it came from (``None``: nowhere).

    An index folder with a live version is used as it is. Otherwise the build ``dvc.lock`` records for the
    index stage's output is copied from DVC's local cache (a build missing there, or no ``dvc.lock``: None).
    """
    from pipeline.indexes.errors import IndexFormatError
    from pipeline.indexes.storage import VersionStore
    from pipeline.ops.lineage import stage_outputs

    try:
        if VersionStore(index_dir).current() is not None:
            return f"the index folder {index_dir}"
    except IndexFormatError as error:
        logger.warning(
            "index: the index folder cannot be updated (%s); looking for the recorded build", error
        )
    try:
        relative = index_dir.resolve().relative_to(Path(project).resolve()).as_posix()
    except ValueError:
        return None
    md5 = stage_outputs(project, "index").get(relative)
    if not md5 or not md5.endswith(".dir"):
        return None
    cache = _cache_files(project)
    if cache is None or not _restore(cache, md5, index_dir):
        logger.info("index: the build dvc.lock records (%s) is not in DVC's cache: nothing to update", md5)
        return None
    return f"dvc.lock's index build {md5}, from DVC's cache"


def _cache_files(project: Path) -> Path | None:
    """DVC's local cache of this project (``.dvc/cache/files/md5`` unless configured elsewhere), if any."""
    try:
        from dvc.repo import Repo  # reads the config only: no lock, so it works inside `dvc repro`

        with Repo(str(project)) as repo:
            return Path(repo.cache.local.path)
    except Exception as error:  # not a DVC project, or an unreadable config: no cache to restore from
        logger.debug("index: no DVC cache for %s (%s)", project, error)
        return None


def _object(cache: Path, md5: str) -> Path:
    return cache / md5[:2] / md5[2:]


def _restore(cache: Path, md5: str, index_dir: Path) -> bool:
    """Copy the folder object ``md5`` (``<md5>.dir``, DVC's listing) out of ``cache`` into ``index_dir``."""
    listing = _object(cache, md5)
    if not listing.is_file():
        return False
    try:
        entries = json.loads(listing.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        logger.warning("index: unreadable DVC listing %s (%s)", listing, error)
        return False
    scratch = index_dir.parent / f".{index_dir.name}.restore-{uuid.uuid4().hex[:8]}"
    try:
        for entry in entries:
            source = _object(cache, str(entry["md5"]))
            target = scratch / str(entry["relpath"])
            if not source.is_file() or ".." in Path(str(entry["relpath"])).parts:
                return False
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)  # DVC's cache files are read-only; the copies must not be
        if index_dir.exists():  # a folder without a live version (a crashed first build): nothing to keep
            shutil.rmtree(index_dir)
        os.replace(scratch, index_dir)
        return True
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
