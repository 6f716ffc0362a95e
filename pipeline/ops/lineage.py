"""Lineage: the git commit, params hashes and DVC md5s that tie a run or model version to what made it.

The md5s are DVC's own (``dvc_data``): taken from ``dvc.lock`` when its entry is current, else computed, so
they are the values ``dvc.lock`` records either way. This module is the one reader of ``dvc.lock``.

Example:
    >>> from pipeline.project.config import Params
    >>> import tempfile
    >>> project = Path(tempfile.mkdtemp())
    >>> tags = lineage_tags(Params(), project, ["model"])  # not a git checkout, no model yet
    >>> tags["git_commit"], "lineage.model.md5" in tags, len(tags["params_hash"])
    ('unknown', False, 16)
"""

from __future__ import annotations

import hashlib
import json
import logging
import subprocess
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from pipeline.project.config import Params
from pipeline.project.layout import Layout

logger = logging.getLogger(__name__)

LINEAGE_PREFIX = "lineage."


def git_commit(project: Path) -> str:
    """The checked-out commit, or ``unknown`` outside a git work tree."""
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=project, capture_output=True, text=True, check=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return result.stdout.strip()


def git_dirty(project: Path) -> str:
    """``true`` when tracked files differ from the commit (the code is not exactly ``git_commit``)."""
    try:
        result = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=project,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return "true" if result.stdout.strip() else "false"


def params_hash(section: Any) -> str:
    """A short stable hash of a params section (or the whole params, or any JSON-able value).

    Example:
        >>> params_hash({"epochs": 1}) == params_hash({"epochs": 1}), len(params_hash({"epochs": 1}))
        (True, 16)
    """
    data = section.model_dump(mode="json") if hasattr(section, "model_dump") else section
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def compute_md5(path: Path, project: Path | None = None) -> str:
    """DVC's md5 of a file or folder (a folder's ends in ``.dir``), the value ``dvc.lock`` records.

    With ``project``, the files its ``.dvcignore`` names are left out, as DVC leaves them out (the index's
    ``search.json``), so the md5 is the one ``dvc.lock`` records and a pulled copy has.

    Example:
        >>> import tempfile
        >>> folder = Path(tempfile.mkdtemp()) / "out"; folder.mkdir()
        >>> _ = (folder / "a.txt").write_text("hello\\n")
        >>> compute_md5(folder).endswith(".dir"), compute_md5(folder / "a.txt")
        (True, 'b1946ac92492d2347c6235b4d2611184')
        >>> project = folder.parent; _ = (project / ".dvcignore").write_text("b.txt\\n")
        >>> before = compute_md5(folder, project)
        >>> _ = (folder / "b.txt").write_text("ignored\\n"); compute_md5(folder, project) == before
        True
    """
    # DVC's public Python API (dvc.api: open/read/params_show/DVCFileSystem ...) reads what a repo tracks;
    # it has no call that hashes a path, tracked or not, without recording it (`dvc add`/`commit` would
    # write .dvc files or the cache). So the hash comes from dvc_data, the library DVC itself hashes with
    # (declared in the `mlops` extra, bounded by dvc's own pin); the file systems are dvc.fs's.
    from dvc.fs import LocalFileSystem, MemoryFileSystem
    from dvc_data.hashfile.build import build
    from dvc_data.hashfile.db import HashFileDB

    ignore = _ignore_filter(project) if project is not None else None
    odb = HashFileDB(MemoryFileSystem(), "/lineage-odb")
    _, _, obj = build(odb, str(Path(path).resolve()), LocalFileSystem(), "md5", dry_run=True, ignore=ignore)
    return str(obj.hash_info.value)


def _ignore_filter(project: Path) -> Any | None:
    """DVC's own filter for ``<project>/.dvcignore`` (None without one): what DVC leaves out of a hash."""
    if not (Path(project) / ".dvcignore").is_file():
        return None
    # DVC's own .dvcignore rules (dvc.ignore): dvc.api has no call that applies them to a path.
    from dvc.fs import LocalFileSystem as DvcLocalFileSystem
    from dvc.ignore import DvcIgnoreFilter

    return DvcIgnoreFilter(DvcLocalFileSystem(), str(Path(project).resolve()))


def read_dvc_lock(project: Path) -> dict[str, Any]:
    """The stages of ``<project>/dvc.lock`` (``{}`` when there is none or it cannot be read).

    The one reader of ``dvc.lock`` in the package: lineage hashes and the orchestrator's outputs use it.
    """
    import yaml

    lock = Path(project) / "dvc.lock"
    if not lock.is_file():
        return {}
    try:
        data = yaml.safe_load(lock.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as error:
        logger.warning("lineage: ignoring unreadable %s (%s)", lock, error)
        return {}
    stages = data.get("stages") if isinstance(data, dict) else None
    return stages if isinstance(stages, dict) else {}


def stage_outputs(project: Path, stage: str) -> dict[str, str]:
    """``{path: md5}`` of a stage's outputs as ``dvc.lock`` records them (empty when it has none).

    Example:
        >>> import tempfile
        >>> project = Path(tempfile.mkdtemp())
        >>> lock = "stages:\\n  train:\\n    outs:\\n    - path: models/colbert\\n      md5: ab.dir\\n"
        >>> _ = (project / "dvc.lock").write_text(lock)
        >>> stage_outputs(project, "train"), stage_outputs(project, "index")
        ({'models/colbert': 'ab.dir'}, {})
    """
    entry = read_dvc_lock(project).get(stage) or {}
    return {
        str(out["path"]): str(out.get("md5", ""))
        for out in entry.get("outs") or []
        if isinstance(out, dict) and "path" in out
    }


def _dvc_lock_entries(project: Path) -> dict[str, dict[str, Any]]:
    entries: dict[str, dict[str, Any]] = {}
    for stage in read_dvc_lock(project).values():
        for out in (stage or {}).get("outs") or []:
            if isinstance(out, dict) and "path" in out and "md5" in out:
                entries[str(Path(out["path"]))] = out
    return entries


def _lock_entry_is_current(entry: Mapping[str, Any], path: Path, lock_mtime: float, ignore: Any) -> bool:
    # dvc.lock is written after its stage's outputs; a file newer than the lock, or another file count or
    # size, means the output was rewritten outside DVC (e.g. the CLI) and the recorded md5 is stale. The files
    # counted are the ones DVC hashes: an ignored one (the index's search.json) would make every entry stale.
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    if ignore is not None:
        files = [p for p in files if not ignore.is_ignored_file(str(p.resolve()))]
    if any(p.stat().st_mtime > lock_mtime for p in files):
        return False
    if "size" in entry and sum(p.stat().st_size for p in files) != entry["size"]:
        return False
    return not ("nfiles" in entry and path.is_dir() and len(files) != entry["nfiles"])


def dvc_md5(path: Path, project: Path) -> str | None:
    """The DVC md5 of ``path``: from ``dvc.lock`` when its entry is current, else computed; None if absent."""
    path = Path(path)
    if not path.exists():
        return None
    project = Path(project).resolve()
    try:
        relative = str(path.resolve().relative_to(project))
    except ValueError:
        relative = None
    if relative is not None:
        entry = _dvc_lock_entries(project).get(relative)
        if entry:
            lock_mtime = (project / "dvc.lock").stat().st_mtime
            if _lock_entry_is_current(entry, path, lock_mtime, _ignore_filter(project)):
                return str(entry["md5"])
    return compute_md5(path, project)


def lineage_tags(params: Params, project: Path, artifacts: Iterable[str] = ()) -> dict[str, str]:
    """``git_commit``, ``git_dirty``, ``params_hash`` and ``lineage.<artifact>.md5`` of existing artifacts.

    Example (a project whose model folder holds one file):
        >>> import tempfile
        >>> from pipeline.project.config import Params
        >>> project = Path(tempfile.mkdtemp())
        >>> (project / "models" / "colbert").mkdir(parents=True)
        >>> _ = (project / "models" / "colbert" / "config.json").write_text("{}")
        >>> tags = lineage_tags(Params(), project, ["model", "index"])
        >>> tags["lineage.model.md5"].endswith(".dir"), "lineage.index.md5" in tags
        (True, False)
    """
    project = Path(project)
    commit = git_commit(project)
    tags = {
        "git_commit": commit,
        "git_dirty": git_dirty(project),
        "params_hash": params_hash(params),
    }
    if commit != "unknown":
        tags["mlflow.source.git.commit"] = commit
    paths = Layout(params, project).artifacts()
    for name in artifacts:
        md5 = dvc_md5(paths[name], project)
        if md5 is not None:
            tags[f"{LINEAGE_PREFIX}{name}.md5"] = md5
    return tags
