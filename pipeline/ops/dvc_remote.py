"""A run's data remote carried into another checkout, and ``dvc pull`` that tells a gap from an outage.

A stateless task (:mod:`pipeline.ops.stateless`) and ``colbert-pipeline reproduce`` both work in a fresh
checkout of a run's commit, whose committed ``.dvc/config`` names the project's default remote (a folder
beside the original workspace, or none at all). The remote that matters is the one the user configured in
the clone they started from, with every option (an S3 ``endpointurl``, a profile, credentials kept in
``.dvc/config.local``). :func:`read_remote` reads it from that clone's config files without opening the clone
as a DVC repo (which would write DVC's temporary files there), and :func:`configure` writes it into the new
checkout's git-ignored ``config.local`` under a name of its own.

A failed ``dvc pull`` means one of two things an orchestrator must tell apart: the remote lacks the files
(an upstream stage never pushed them: an input error, no retry helps) or the remote did not answer (an
infrastructure error, retried here a bounded number of times, then by the orchestrator).

Example (what counts as a gap in the remote, in DVC's own words):
    >>> missing_in_remote("WARNING: Some of the cache files do not exist neither locally nor on remote.")
    True
"""

from __future__ import annotations

import dataclasses
import logging
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pipeline.ops.git_remote import Retry
from pipeline.ops.versioning import dvc_executable
from pipeline.project.errors import InfrastructureError, InputError

logger = logging.getLogger(__name__)

#: The setting naming the clone's DVC remote that holds a run's data (unset: the clone's default remote).
DVC_REMOTE_ENV = "COLBERT_PIPELINE_DVC_REMOTE"  # the same setting the DAG reads (orchestration)


class PullError(InfrastructureError):
    """``dvc pull`` failed after its bounded retries for a reason other than missing files."""


class MissingInRemote(InputError):
    """The remote holds no copy of an output that a run's ``dvc.lock`` names."""


@dataclasses.dataclass(frozen=True)
class DataRemote:
    """A DVC remote as the clone configures it: its name there and every option (``url`` included)."""

    name: str
    options: dict[str, Any]

    @property
    def url(self) -> str:
        return str(self.options["url"])


def _config(dvc_dir: Path) -> Any:
    from dvc.config import Config

    # Reads .dvc/config, .dvc/config.local and the user's and system's files; relative paths come back
    # absolute (resolved against the file that set them); nothing is written.
    return Config(dvc_dir=str(dvc_dir))


def read_remote(clone: Path, name: str | None = None) -> DataRemote:
    """The remote ``name`` (or the clone's default remote) with all its options, read from the clone.

    Raises :class:`InputError` naming the setting when the clone has none, or not the one named.
    """
    dvc_dir = Path(clone) / ".dvc"
    if not dvc_dir.is_dir():
        raise InputError(f"{clone} is not a DVC project (no .dvc folder): start the task from a clone")
    config = _config(dvc_dir)
    remotes: dict[str, Any] = dict(config.get("remote") or {})
    chosen = (name or "").strip() or (config.get("core") or {}).get("remote")
    if not chosen:
        raise InputError(
            f"{clone} has no default DVC remote: name the run's data remote with "
            f"`dvc remote add -d <name> <url>` (s3://bucket/path, gs://..., azure://...) or {DVC_REMOTE_ENV}"
        )
    if chosen not in remotes:
        known = ", ".join(sorted(remotes)) or "none"
        raise InputError(
            f"DVC remote {chosen!r} ({DVC_REMOTE_ENV} or core.remote) is not configured in {clone} "
            f"(configured: {known}); add it with `dvc remote add {chosen} <url>`"
        )
    return DataRemote(name=chosen, options=dict(remotes[chosen]))


def find_by_url(clone: Path, url: str) -> DataRemote | None:
    """The clone's remote whose URL is ``url`` (to reuse its options, e.g. an S3 endpoint), if any."""
    if not (Path(clone) / ".dvc").is_dir():
        return None
    remotes: dict[str, Any] = dict(_config(Path(clone) / ".dvc").get("remote") or {})
    for name, options in sorted(remotes.items()):
        if str(options.get("url", "")).rstrip("/") == url.rstrip("/"):
            return DataRemote(name=name, options=dict(options))
    return None


def configure(workspace: Path, name: str, remote: DataRemote, site_cache_dir: Path | None = None) -> None:
    """Make ``remote`` the default of ``workspace`` as ``name``, in its git-ignored ``config.local``.

    ``site_cache_dir`` keeps DVC's per-repository scratch (normally under ``/var/tmp/dvc``) inside a folder
    the caller removes, so a throwaway checkout leaves nothing behind.
    """
    config = _config(Path(workspace) / ".dvc")
    with config.edit("local") as conf:
        conf["remote"][name] = dict(remote.options)
        conf["core"]["remote"] = name
        if site_cache_dir is not None:
            conf["core"]["site_cache_dir"] = str(site_cache_dir)


def missing_in_remote(output: str) -> bool:
    """Whether DVC's output says the remote (and the cache) lack files, rather than an outage."""
    return "Missing cache files" in output or "do not exist neither locally nor on remote" in output


def pull(
    workspace: Path,
    targets: Sequence[str],
    remote: str,
    retry: Retry,
    allow_missing: bool = False,
    timeout_s: float = 3600,
) -> None:
    """``dvc pull --remote remote targets`` in ``workspace``.

    Files missing from the remote raise :class:`MissingInRemote` at once (the caller names the stage that
    should have pushed them); any other failure is retried, then :class:`PullError`. With
    ``allow_missing`` missing files are skipped (DVC's ``--allow-missing``).
    """
    if not targets:
        return
    command = [dvc_executable(), "pull", "--remote", remote, *(["--allow-missing"] if allow_missing else [])]
    command += list(targets)
    error = ""
    for attempt in range(1, retry.attempts + 1):
        completed = subprocess.run(
            command, cwd=workspace, capture_output=True, text=True, timeout=timeout_s, check=False
        )
        output = f"{completed.stdout}\n{completed.stderr}"
        if completed.returncode == 0:
            logger.info("dvc pull %s: %s", " ".join(targets), (completed.stdout.strip() or "done")[-200:])
            return
        if missing_in_remote(output) and not allow_missing:
            raise MissingInRemote(f"the DVC remote holds no copy of {', '.join(targets)}: {output[-600:]}")
        error = output.strip()[-800:]
        logger.warning("dvc pull failed (attempt %d of %d): %s", attempt, retry.attempts, error)
        retry.pause(attempt)
    raise PullError(f"dvc pull of {', '.join(targets)} failed {retry.attempts} times: {error}")
