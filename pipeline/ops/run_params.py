"""A run's params: turn an orchestrator's run Params into ``params.yaml`` overrides, apply them, undo them.

DVC decides what to re-run from ``params.yaml``, so a run's overrides are written into it (atomically,
validated first, the previous file kept under ``.colbert-pipeline/``) and put back when the run ends.

The workspace's file belongs to one run at a time (``.colbert-pipeline/params.owner``). Every stage task
re-applies its run's file before it runs (``reapply_params``), so a task cleared or retried after the
run's params were put back runs with that run's params, not the defaults; and a put-back that comes late (the
failure callback of a task whose worker was killed, run after the next run began) leaves another run's file
alone.

Example:
    >>> overrides_from_dag_params({"epochs": 2, "overrides": {"train.max_steps": 5}}, current_source="sample")
    {'train.epochs': 2, 'train.max_steps': 5}
    >>> overrides_from_dag_params({"overrides": {"bad key": 1}}, "sample")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    pipeline.project.config.ConfigError: DAG param overrides: 'bad key' is not a dotted params key like ...
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pipeline.project.config import ConfigError
from pipeline.project.io import atomic_write_text
from pipeline.project.layout import STATE_DIR
from pipeline.project.params_file import get_dotted, load_params, read_params_file, write_overrides

logger = logging.getLogger(__name__)

#: How an error names a value this run set (``DAG run override train.epochs: ...``).
RUN_OVERRIDE = "DAG run override"
#: DAG ``Param`` name -> the params.yaml key it overrides (``data_path`` depends on the source).
DAG_PARAM_KEYS = {
    "base_model": "train.base_model",
    "data_source": "prepare.source",
    "epochs": "train.epochs",
    "promotion_margin": "register.margin",
}
#: Which key ``data_path`` sets for each source; kd needs three files, so it goes through ``overrides``.
DATA_PATH_KEYS = {"triplets": "prepare.triplets.path", "beir": "prepare.beir.folder"}

_DOTTED_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+")


def overrides_from_dag_params(dag_params: Mapping[str, Any], current_source: str) -> dict[str, Any]:
    """Turn the DAG's run ``Param``s into dotted params.yaml overrides (``None`` means "keep params.yaml").

    ``overrides`` (a mapping of dotted keys) comes last, so it can set anything the named Params do not.
    """
    overrides: dict[str, Any] = {}
    for name, key in DAG_PARAM_KEYS.items():
        if dag_params.get(name) is not None:
            overrides[key] = dag_params[name]
    data_path = dag_params.get("data_path")
    if data_path is not None:
        source = overrides.get("prepare.source", current_source)
        if source not in DATA_PATH_KEYS:
            raise ConfigError(
                f"DAG param data_path: the {source!r} source takes no single data path "
                f"(use overrides, e.g. prepare.kd.scores / prepare.kd.queries / prepare.kd.documents)"
            )
        overrides[DATA_PATH_KEYS[source]] = data_path
    extra = dag_params.get("overrides") or {}
    if not isinstance(extra, Mapping):
        raise ConfigError(
            f"DAG param overrides: expected a mapping of dotted keys, got {type(extra).__name__}"
        )
    for key, value in extra.items():
        if not isinstance(key, str) or not _DOTTED_KEY.fullmatch(key):
            raise ConfigError(f"DAG param overrides: {key!r} is not a dotted params key like train.max_steps")
        overrides[key] = value
    return overrides


@dataclasses.dataclass(frozen=True)
class ParamsUpdate:
    """What ``apply_run_overrides`` did: the file, its hash now, the keys it changed, and its backup."""

    params_path: str
    sha256: str
    changed: list[str]
    backup: str | None
    run_key: str = ""
    #: A copy of the file as this run wrote it, for ``reapply_params``.
    run_copy: str | None = None

    def as_xcom(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file ("" when it does not exist)."""
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else ""


def apply_run_overrides(params_path: Path, overrides: Mapping[str, Any], run_key: str) -> ParamsUpdate:
    """Validate ``overrides`` against ``params_path``; write the changed ones into it atomically.

    The file is the one DVC tracks, so writing the overrides there is what makes ``dvc repro`` re-run exactly
    the stages whose section changed. The previous file is kept under ``.colbert-pipeline/`` (named by
    ``run_key``) so ``restore_params`` can put it back when the run fails. Raises ``ConfigError`` naming the
    key for a bad override, before anything is written.
    """
    # Raises ConfigError naming the key (and missing paths), a bad value as the run's, not params.yaml's.
    load_params(params_path, dict(overrides), overrides_source=RUN_OVERRIDE)
    raw = read_params_file(params_path)
    changed = sorted(key for key, value in overrides.items() if get_dotted(raw, key) != (True, value))
    backup: Path | None = None
    state = params_path.parent / STATE_DIR
    state.mkdir(parents=True, exist_ok=True)
    # The folder ignores itself, so the workspace's git status stays clean without touching .gitignore.
    (state / ".gitignore").write_text("*\n", encoding="utf-8")
    if changed:
        backup = state / f"params.before-{_safe_name(run_key)}.yaml"
        atomic_write_text(backup, params_path.read_text(encoding="utf-8") if params_path.exists() else "")
        # In place, comments and layout kept: the run's ref holds the file as people wrote it.
        write_overrides(params_path, {key: overrides[key] for key in changed})
        logger.info(
            "params: wrote %s to %s", ", ".join(f"{k}={overrides[k]!r}" for k in changed), params_path
        )
    else:
        logger.info("params: %s already has every override; nothing to write", params_path)
    run_copy = state / f"params.run-{_safe_name(run_key)}.yaml"
    atomic_write_text(run_copy, params_path.read_text(encoding="utf-8") if params_path.exists() else "")
    atomic_write_text(_owner_file(params_path), run_key)
    return ParamsUpdate(
        params_path=str(params_path),
        sha256=file_sha256(params_path),
        changed=changed,
        backup=str(backup) if backup else None,
        run_key=run_key,
        run_copy=str(run_copy),
    )


def _owner_file(params_path: Path) -> Path:
    return params_path.parent / STATE_DIR / "params.owner"


def params_owner(params_path: Path) -> str | None:
    """The run whose params the workspace's file holds (None when no run holds it)."""
    owner = _owner_file(Path(params_path))
    text = owner.read_text(encoding="utf-8").strip() if owner.exists() else ""
    return text or None


def reapply_params(update: Mapping[str, Any]) -> bool:
    """Make the params file this run's again (what ``apply_run_overrides`` wrote); True if it had to.

    Called by every stage task before it runs: after a failure put the previous file back, a cleared or
    retried task must still run with its run's params. Only the file the rollback left (what the run found)
    is replaced: an edit made since, or another run's params, raise ``ConfigError`` and stay as they are.
    """
    params_path, run_copy = Path(update["params_path"]), update.get("run_copy")
    if not run_copy or not Path(run_copy).exists():
        return False  # an update from before run copies existed: nothing to re-apply from
    current = file_sha256(params_path)
    rewritten = current != update.get("sha256")
    if rewritten:
        found = update.get("backup") or run_copy  # no backup: the run changed nothing, it found its own copy
        owner = params_owner(params_path)
        if owner not in (None, update.get("run_key")) or current != file_sha256(Path(found)):
            raise ConfigError(
                f"{params_path} changed since run {update.get('run_key')} wrote its params"
                + (f" (run {owner} holds it now)" if owner else " (edited by hand?)")
                + ": not overwriting it; trigger a new run instead of clearing this one's tasks"
            )
        atomic_write_text(params_path, Path(run_copy).read_text(encoding="utf-8"))
        logger.warning(
            "params: %s no longer held run %s's params (put back after a failure?); re-applied them",
            params_path,
            update.get("run_key"),
        )
    if params_owner(params_path) != update.get("run_key"):
        atomic_write_text(_owner_file(params_path), str(update.get("run_key") or ""))
    return rewritten


def restore_params(update: Mapping[str, Any]) -> bool:
    """Put back the params file a run replaced, unless someone changed it since. True if restored.

    Called when the run fails, and after it is recorded (its ref keeps its params): either way the next
    scheduled run starts from the configured defaults.
    """
    params_path = Path(update["params_path"])
    owner, run_key = params_owner(params_path), update.get("run_key")
    if run_key and owner not in (None, run_key):
        # Identical content is no proof of ownership: the next run may have written the same overrides.
        logger.warning(
            "params: %s now holds run %s's params; not restoring run %s's", params_path, owner, run_key
        )
        return False
    backup = update.get("backup")
    if not backup or not Path(backup).exists():
        if run_key and owner == run_key:
            _owner_file(params_path).unlink(missing_ok=True)
        return False
    if file_sha256(params_path) != update.get("sha256"):
        logger.warning("params: %s changed since this run wrote it; not restoring %s", params_path, backup)
        return False
    atomic_write_text(params_path, Path(backup).read_text(encoding="utf-8"))
    _owner_file(params_path).unlink(missing_ok=True)
    logger.info("params: restored %s from %s", params_path, backup)
    return True


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)[:150]
