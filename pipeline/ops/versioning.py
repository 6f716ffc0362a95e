"""Versioning a run: push its DVC outputs to a remote, commit its params and ``dvc.lock`` to a ref of its own.

A DAG run changes ``params.yaml`` (its Params) and ``dvc.lock`` (what it produced) in the workspace. Both are
committed here to ``refs/colbert-runs/<run id>`` through a temporary git index, so the checked-out branch,
its index and the working tree stay untouched; the workspace's ``params.yaml`` is then put back by the caller.
The ref's commit holds the workspace's code as it ran (uncommitted edits included), so
``colbert-pipeline reproduce`` can check it out anywhere and ``dvc pull`` the outputs its ``dvc.lock`` names.

Example (a ref name from an Airflow run id):
    >>> run_ref_name("manual__2026-11-29T02:45:00.123456+00:00")
    'refs/colbert-runs/manual__2026-11-29T02-45-00.123456+00-00'
    >>> run_ref_name("../main")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    pipeline.ops.versioning.RunRefError: run id '../main' makes no valid git ref name ...
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pipeline.project.errors import InfrastructureError, InputError, PipelineError

logger = logging.getLogger(__name__)

RUN_REF_PREFIX = "refs/colbert-runs/"
#: Model version tags that point a registered version at its run's ref and the remote holding its outputs.
RUN_REF_TAG = "colbert.run_ref"
RUN_COMMIT_TAG = "colbert.run_commit"
DVC_REMOTE_TAG = "colbert.dvc_remote"
DVC_PUSHED_TAG = "colbert.dvc_pushed"
#: Who commits a run's ref when the workspace's git has no identity configured.
FALLBACK_IDENTITY = {"name": "colbert-pipeline", "email": "colbert-pipeline@localhost"}
#: The stages whose outputs a version's lineage names (data, model, index): what a recorded run must push.
LINEAGE_STAGES = ("prepare", "train", "index")
#: Who records the run a register stage belongs to: ``dag`` (the DAG's ``record_run`` task), ``task`` (a
#: stateless task, whose ref and data remote come in the two settings below), unset: the stage itself
#: (``dvc repro``, ``make run``, ``colbert-pipeline register``).
RECORDER_ENV = "COLBERT_PIPELINE_RUN_RECORDER"
RUN_REF_ENV = "COLBERT_PIPELINE_RUN_REF"
RUN_REMOTE_URL_ENV = "COLBERT_PIPELINE_RUN_DVC_REMOTE_URL"
#: A DVC remote named in the workspace's config to push to (unset: its default remote); the DAG's too.
DVC_REMOTE_ENV = "COLBERT_PIPELINE_DVC_REMOTE"

# Airflow run ids hold ':' (invalid in git refs); everything else must already be a valid ref component.
_REF_UNSAFE = re.compile(r"[:]")


class RunRefError(InputError):
    """A run id that makes no valid ref, or a ref that already records another run."""


class PushError(InfrastructureError):
    """``dvc push`` failed after its bounded retries (the remote is unreachable or refuses writes)."""


@dataclasses.dataclass(frozen=True)
class Remote:
    """A DVC remote by its name in the workspace's config, and its URL (local paths made absolute)."""

    name: str
    url: str


@dataclasses.dataclass(frozen=True)
class PushResult:
    """What ``push_outputs`` did: the remote (None when none is configured) and whether everything went."""

    remote: Remote | None
    pushed: bool
    targets: tuple[str, ...]
    message: str


@dataclasses.dataclass(frozen=True)
class RunRef:
    """A run's ref and the commit it points to; ``created`` is False when a retry found it already there."""

    ref: str
    commit: str
    created: bool


# -- the remote --------------------------------------------------------------------------------------------


def find_remote(workspace: Path, name: str | None = None) -> Remote | None:
    """The remote named ``name`` (or the workspace's default remote) from DVC's own config; None if none.

    Raises ``InputError`` when ``name`` is given but not configured (a typo must not skip the push).
    """
    from dvc.repo import Repo

    with Repo(str(workspace)) as repo:
        config = repo.config
        remotes: dict[str, Any] = dict(config.get("remote") or {})
        chosen = name or (config.get("core") or {}).get("remote")
    if not chosen:
        return None
    if chosen not in remotes:
        known = ", ".join(sorted(remotes)) or "none"
        raise InputError(
            f"DVC remote {chosen!r} is not configured in {workspace}/.dvc/config (configured: {known}); "
            f"add it with `dvc remote add {chosen} <url>`"
        )
    return Remote(name=chosen, url=str(remotes[chosen]["url"]))


def push_outputs(
    workspace: Path,
    targets: Sequence[str],
    remote_name: str | None = None,
    attempts: int = 3,
    backoff_s: float = 2.0,
    timeout_s: float = 3600.0,
) -> PushResult:
    """``dvc push`` the outputs of ``targets`` (stage names) to the remote, with a bounded number of tries.

    No remote configured: nothing is pushed and the result says so (the caller warns once). A push that still
    fails after ``attempts`` raises :class:`PushError` with DVC's own message; DVC only records in the remote
    what it transferred whole, so a failed push marks nothing as pushed.
    """
    remote = find_remote(workspace, remote_name)
    if remote is None:
        message = (
            "no DVC remote is configured: this run's outputs were not pushed "
            "(`dvc remote add -d <name> <url>`, then `dvc push`)"
        )
        return PushResult(remote=None, pushed=False, targets=tuple(targets), message=message)
    command = [dvc_executable(), "push", "--remote", remote.name, *targets]
    error = ""
    for attempt in range(1, attempts + 1):
        completed = subprocess.run(
            command, cwd=workspace, capture_output=True, text=True, timeout=timeout_s, check=False
        )
        if completed.returncode == 0:
            summary = (completed.stdout.strip().splitlines() or ["pushed"])[-1]
            logger.info("dvc push to %s (%s): %s", remote.name, remote.url, summary)
            return PushResult(remote=remote, pushed=True, targets=tuple(targets), message=summary)
        error = (completed.stderr or completed.stdout).strip()[-800:]
        logger.warning("dvc push to %s failed (attempt %d of %d): %s", remote.url, attempt, attempts, error)
        if attempt < attempts:
            time.sleep(backoff_s * 2 ** (attempt - 1))
    raise PushError(f"dvc push to remote {remote.name!r} ({remote.url}) failed {attempts} times: {error}")


def dvc_executable() -> str:
    """The ``dvc`` installed beside this interpreter (the project's venv), else the one on PATH."""
    local = Path(sys.executable).parent / "dvc"
    return str(local) if local.exists() else (shutil.which("dvc") or "dvc")


def run_dvc(workspace: Path, *args: str, timeout_s: float = 600) -> str:
    """``dvc ARGS`` in ``workspace``, its standard output; a failure raises with DVC's own last words."""
    completed = subprocess.run(
        [dvc_executable(), *args],
        cwd=workspace,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    if completed.returncode != 0:
        detail = (completed.stderr or completed.stdout).strip()[-800:]
        raise InfrastructureError(f"dvc {' '.join(args)} in {workspace} failed: {detail}")
    return completed.stdout


# -- the run's ref -----------------------------------------------------------------------------------------


def run_ref_name(run_id: str) -> str:
    """The ref a run's commit goes to: ``refs/colbert-runs/<run id>``, ':' made '-'; invalid ones refused."""
    name = RUN_REF_PREFIX + _REF_UNSAFE.sub("-", run_id.strip())
    check = subprocess.run(["git", "check-ref-format", name], capture_output=True, check=False)
    valid = check.returncode == 0
    if not run_id.strip() or not valid or ".." in run_id or "/" in run_id:
        raise RunRefError(
            f"run id {run_id!r} makes no valid git ref name ({name!r}); "
            "use letters, digits and . _ - + in run ids"
        )
    return name


def _git(workspace: Path, *args: str, env: dict[str, str] | None = None, check: bool = True) -> str:
    completed = subprocess.run(
        ["git", *args], cwd=workspace, capture_output=True, text=True, env=env, timeout=120, check=False
    )
    if check and completed.returncode != 0:
        raise InfrastructureError(f"git {' '.join(args)} in {workspace}: {completed.stderr.strip()[-500:]}")
    return completed.stdout.strip()


def is_git_checkout(workspace: Path) -> bool:
    """True when ``workspace`` is inside a git work tree with at least one commit."""
    completed = subprocess.run(
        ["git", "rev-parse", "--verify", "HEAD"], cwd=workspace, capture_output=True, check=False
    )
    return completed.returncode == 0


def identity_env(workspace: Path, env: dict[str, str]) -> dict[str, str]:
    """``env`` with a fallback committer for a workspace whose git names none (a bare worker)."""
    # Use the workspace's configured identity; a bare worker may have none, and commit-tree needs one.
    for role in ("AUTHOR", "COMMITTER"):
        for field in ("name", "email"):
            if not _git(workspace, "config", f"user.{field}", check=False):
                env.setdefault(f"GIT_{role}_{field.upper()}", FALLBACK_IDENTITY[field])
    return env


def commit_run(workspace: Path, run_id: str, message: str) -> RunRef:
    """Commit the workspace as it ran (code, ``params.yaml``, ``dvc.lock``, tracked metrics) to the run's ref.

    Everything git would add (``git add -A``: ignored outputs stay out) goes into a temporary index, so the
    checked-out branch, the real index and the files are untouched. A ref that already exists is accepted
    only when it holds the same tree (an Airflow retry of the same run); otherwise it is refused.
    """
    workspace = Path(workspace).resolve()
    ref = run_ref_name(run_id)
    if not is_git_checkout(workspace):
        raise RunRefError(f"{workspace} is not a git checkout with a commit: no ref can record {run_id!r}")
    git_dir = Path(_git(workspace, "rev-parse", "--absolute-git-dir"))
    with tempfile.TemporaryDirectory(prefix="colbert-run-index-") as scratch:
        index = Path(scratch) / "index"
        if (git_dir / "index").exists():
            shutil.copyfile(git_dir / "index", index)  # keeps git's stat cache: add -A rehashes only changes
        env = identity_env(workspace, {**os.environ, "GIT_INDEX_FILE": str(index)})
        if not (git_dir / "index").exists():
            _git(workspace, "read-tree", "HEAD", env=env)
        _git(workspace, "add", "-A", ".", env=env)
        tree = _git(workspace, "write-tree", env=env)
        existing = _git(workspace, "rev-parse", "--verify", "--quiet", ref, check=False)
        if existing:
            if _git(workspace, "rev-parse", f"{existing}^{{tree}}") == tree:
                logger.info("run ref %s already records this state (%s)", ref, existing[:12])
                return RunRef(ref=ref, commit=existing, created=False)
            raise RunRefError(
                f"{ref} already exists at {existing[:12]} with other contents: a run id is used once"
            )
        commit = _git(workspace, "commit-tree", tree, "-p", "HEAD", "-m", message, env=env)
        # The empty old value makes the update fail if another process created the ref meanwhile.
        _git(workspace, "update-ref", "-m", f"colbert-pipeline: run {run_id}", ref, commit, "")
    logger.info("run ref %s -> %s", ref, commit[:12])
    return RunRef(ref=ref, commit=commit, created=True)


def version_tags(run_ref: RunRef | None, push: PushResult) -> dict[str, str]:
    """The tags that let ``reproduce`` find a model version's run: ref, commit, remote URL, whether pushed."""
    tags = {DVC_PUSHED_TAG: "true" if push.pushed else "false"}
    if push.remote is not None:
        tags[DVC_REMOTE_TAG] = push.remote.url
    if run_ref is not None:
        tags[RUN_REF_TAG] = run_ref.ref
        tags[RUN_COMMIT_TAG] = run_ref.commit
    return tags


def record_run(
    workspace: Path,
    run_id: str,
    stages: Sequence[str],
    *,
    remote_name: str | None = None,
    model_name: str | None = None,
    version: str | None = None,
    tracking_uri: str | None = None,
) -> dict[str, Any]:
    """After a run's stages: push their outputs, commit the run's ref, tag the new model version with both.

    The push comes first, so a version is only ever tagged ``colbert.dvc_pushed=true`` for outputs the remote
    holds; a failed push raises before the ref or any tag is written (the task's retry runs it again).
    Without a remote the run is still recorded, and the warning says the outputs were not pushed.
    """
    if stages and (Path(workspace) / ".dvc").is_dir():
        push = push_outputs(workspace, stages, remote_name)
    else:
        push = PushResult(None, False, (), "stages ran without DVC (the cli runner): nothing to push")
    if not push.pushed:
        logger.warning("%s", push.message)
    run_ref = None
    if is_git_checkout(workspace):
        message = f"colbert-pipeline run {run_id}\n\nstages: {', '.join(stages)}"
        run_ref = commit_run(workspace, run_id, message)
    else:
        logger.warning("%s is not a git checkout: run %s gets no ref", workspace, run_id)
    tags = version_tags(run_ref, push)
    if model_name and version:
        from mlflow import MlflowClient

        client = MlflowClient(tracking_uri=tracking_uri)
        for key, value in tags.items():
            client.set_model_version_tag(model_name, version, key, value)
        logger.info("tagged %s v%s with %s", model_name, version, tags)
    return {
        "pushed": push.pushed,
        "remote": dataclasses.asdict(push.remote) if push.remote else None,
        "push_message": push.message,
        "ref": run_ref.ref if run_ref else None,
        "commit": run_ref.commit if run_ref else None,
        "version": version,
        "tags": tags,
    }


def local_run_id(now: datetime.datetime | None = None) -> str:
    """The id of a run no orchestrator named (``dvc repro``): ``local__<UTC time>``, like ``manual__<time>``.

    Example:
        >>> local_run_id(datetime.datetime(2026, 12, 7, 9, 30, tzinfo=datetime.UTC))
        'local__2026-12-07T09-30-00.000000Z'
    """
    moment = now or datetime.datetime.now(datetime.UTC)
    return "local__" + moment.strftime("%Y-%m-%dT%H-%M-%S.%fZ")


def record_registered_version(
    project: Path, model_name: str, version: str, tracking_uri: str | None
) -> dict[str, Any] | None:
    """Make the version a register stage just made reproducible: tag it with its run's ref and data remote.

    Who records depends on who ran the stage (:data:`RECORDER_ENV`): the DAG's ``record_run`` task (nothing
    to do here); a stateless task (its run's ref, the commit the stage ran at, the remote its inputs came
    from); else this stage, run by ``dvc repro`` or by hand: push the lineage stages' outputs, commit the
    workspace to a new ``local__<time>`` ref, and push that ref only to a git remote a setting names.
    Recording never fails the stage (the version exists): a failure is one warning that says what to do.
    A version that already names its run (registered again unchanged) keeps its tags.
    """
    from mlflow import MlflowClient

    recorder = os.environ.get(RECORDER_ENV, "").strip()
    if recorder == "dag":
        return None
    client = MlflowClient(tracking_uri=tracking_uri)
    found = client.get_model_version(model_name, version)
    if (found.tags or {}).get(RUN_REF_TAG):
        return None
    if recorder == "task":
        tags = {
            RUN_REF_TAG: os.environ[RUN_REF_ENV],
            RUN_COMMIT_TAG: _git(project, "rev-parse", "HEAD"),
            DVC_REMOTE_TAG: os.environ[RUN_REMOTE_URL_ENV],
            DVC_PUSHED_TAG: "true",  # the task pulled every lineage output of this commit from that remote
        }
        for key, value in tags.items():
            client.set_model_version_tag(model_name, version, key, value)
        return {"ref": tags[RUN_REF_TAG], "commit": tags[RUN_COMMIT_TAG], "tags": tags}
    if not is_git_checkout(project):
        logger.warning(
            "%s v%s: %s is not a git checkout, so no run ref can record it", model_name, version, project
        )
        return None
    try:
        record = record_run(
            project,
            local_run_id(),
            LINEAGE_STAGES,
            model_name=model_name,
            version=version,
            remote_name=os.environ.get(DVC_REMOTE_ENV, "").strip() or None,
            tracking_uri=tracking_uri,
        )
    except PipelineError as error:
        logger.warning("%s v%s is registered but not reproducible: %s", model_name, version, error)
        return None
    if record["ref"]:
        _push_local_ref(project, record["ref"], record["commit"], f"{model_name} v{version}")
    return record


def _push_local_ref(project: Path, ref: str, commit: str, label: str) -> None:
    # Only to a remote a setting names: a `dvc repro` must never stop at a credential prompt, nor push
    # somewhere its user did not choose.
    from pipeline.ops import git_remote

    setting = os.environ.get(git_remote.GIT_REMOTE_ENV, "").strip()
    if not setting:
        logger.warning(
            "%s: its run ref %s is kept in this repository (no git remote named in %s); a clone of this "
            "one can fetch it, and `git push origin %s` makes it reproducible from any clone",
            label,
            ref,
            git_remote.GIT_REMOTE_ENV,
            ref,
        )
        return
    try:
        url = git_remote.resolve_url(project, setting)
        if git_remote.push(project, url, commit, ref, git_remote.Retry()):
            logger.info("%s: pushed its run ref %s to %s", label, ref, url)
            return
        problem = f"{url} already has {ref} at another commit (not overwritten)"
    except PipelineError as error:
        problem = str(error)
    logger.warning("%s: its run ref %s stays in this repository: %s", label, ref, problem)
