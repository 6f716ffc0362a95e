"""A run's ref on a git remote: look it up, fetch it, push it, never forced and never with a prompt.

Stateless tasks (:mod:`pipeline.ops.stateless`) and recorded local runs share a git remote the way they
share a DVC remote: a run's ref (``refs/colbert-runs/<run id>``) is fetched from it before a stage and
pushed back after. A worker has no terminal, so every command here runs with git's prompts off (a missing
credential fails at once instead of hanging the task). A remote that does not answer is retried a bounded
number of times, then an :class:`~pipeline.project.errors.InfrastructureError` (the orchestrator retries
the task); a push that is not a fast-forward is reported to the caller, which re-applies its change on the
new tip: nothing here ever forces a ref.

Example (a remote by URL, or by its name in a clone's git config):
    >>> looks_like_url("git://127.0.0.1:9418/project.git"), looks_like_url("origin")
    (True, False)
    >>> rejected("!\\trefs/heads/x:refs/colbert-runs/r\\t[rejected] (fetch first)\\nDone")
    True
"""

from __future__ import annotations

import dataclasses
import logging
import os
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from pipeline.project.errors import InfrastructureError, InputError

logger = logging.getLogger(__name__)

#: The setting naming the git remote (a remote of the clone, or a URL) that run refs are fetched from and
#: pushed to. Unset: ``origin`` for stateless tasks; no push at all for local runs.
GIT_REMOTE_ENV = "COLBERT_PIPELINE_GIT_REMOTE"
DEFAULT_REMOTE = "origin"


class GitRemoteError(InfrastructureError):
    """The git remote did not answer (or refused) after the bounded retries."""


@dataclasses.dataclass(frozen=True)
class Retry:
    """How often a remote is tried, and the first pause between tries (doubled each time)."""

    attempts: int = 3
    backoff_s: float = 2.0

    def pause(self, attempt: int) -> None:
        if attempt < self.attempts:
            time.sleep(self.backoff_s * 2 ** (attempt - 1))


def noninteractive_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for git against a remote: no terminal prompt, no askpass dialog, ssh in batch mode.

    Credential helpers still run (a stored token works); anything that would ask a person fails instead.
    """
    env = dict(os.environ if base is None else base)
    env["GIT_TERMINAL_PROMPT"] = "0"
    env["GIT_ASKPASS"] = "true"  # answers every question with nothing: authentication fails, nothing waits
    env.setdefault("GIT_SSH_COMMAND", "ssh -o BatchMode=yes")
    return env


def git(
    cwd: Path, *args: str, env: Mapping[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """Run ``git args`` in ``cwd`` without prompts; the caller reads the return code."""
    return subprocess.run(
        ["git", *args],
        cwd=cwd,
        env=noninteractive_env(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def git_out(cwd: Path, *args: str, env: Mapping[str, str] | None = None) -> str:
    """``git args``'s output; a failure is an :class:`InfrastructureError` with git's own message."""
    completed = git(cwd, *args, env=env)
    if completed.returncode != 0:
        raise InfrastructureError(f"git {' '.join(args)} in {cwd}: {completed.stderr.strip()[-500:]}")
    return completed.stdout.strip()


def looks_like_url(text: str) -> bool:
    """A URL or scp-like address (``host:path``) or a path, rather than the name of a configured remote."""
    return "://" in text or text.startswith(("/", ".", "~")) or (":" in text and "@" in text)


def resolve_url(clone: Path, setting: str | None) -> str:
    """The git remote's URL: ``setting`` (a URL, or a remote of ``clone``), else the clone's ``origin``.

    A relative path is made absolute against the clone, so a throwaway checkout elsewhere finds it too.
    """
    name = (setting or "").strip() or DEFAULT_REMOTE
    url = name
    if not looks_like_url(name):
        completed = git(clone, "remote", "get-url", name)
        if completed.returncode != 0:
            raise InputError(
                f"no git remote {name!r} in {clone} ({completed.stderr.strip()[-200:]}): run refs travel "
                f"through a git remote; `git remote add {name} <url>`, or set {GIT_REMOTE_ENV} to a URL"
            )
        url = completed.stdout.strip()
    if url.startswith(("./", "../", "~")) or url in {".", ".."}:
        return str((Path(clone) / Path(url).expanduser()).resolve())
    return url


def _tried(what: str, url: str, retry: Retry, attempt: Sequence[str], cwd: Path) -> str:
    error = ""
    for number in range(1, retry.attempts + 1):
        completed = git(cwd, *attempt)
        if completed.returncode == 0:
            return completed.stdout
        error = (completed.stderr or completed.stdout).strip()[-500:]
        logger.warning("git %s %s failed (attempt %d of %d): %s", what, url, number, retry.attempts, error)
        retry.pause(number)
    raise GitRemoteError(f"git {what} {url} failed {retry.attempts} times: {error}")


def remote_tip(url: str, ref: str, retry: Retry, cwd: Path) -> str | None:
    """The commit ``ref`` points to on the remote, or None when the remote has no such ref."""
    listed = _tried("ls-remote", url, retry, ["ls-remote", "--refs", url, ref], cwd)
    for line in listed.splitlines():
        commit, _, name = line.partition("\t")
        if name.strip() == ref:
            return commit.strip()
    return None


def fetch(workspace: Path, url: str, refspec: str, retry: Retry) -> None:
    """``git fetch --no-tags url refspec`` into ``workspace``, with the bounded retries."""
    _tried("fetch", url, retry, ["fetch", "--quiet", "--no-tags", url, refspec], workspace)


def rejected(porcelain: str) -> bool:
    """Whether ``git push --porcelain`` says the ref moved on the remote (not a fast-forward), or another
    push held its lock at that moment: either way, fetch the new tip and re-apply."""
    for line in porcelain.splitlines():
        if line.startswith("!") and (
            "[rejected]" in line or ("[remote rejected]" in line and "lock" in line)
        ):
            return True
    return False


def push(workspace: Path, url: str, commit: str, ref: str, retry: Retry) -> bool:
    """Push ``commit`` to ``ref`` on the remote, never forced. True when pushed; False when rejected because
    the remote's ref moved (the caller fetches, re-applies and calls again); an unreachable remote is retried
    and then raises :class:`GitRemoteError`."""
    error = ""
    for number in range(1, retry.attempts + 1):
        completed = git(workspace, "push", "--porcelain", "--no-verify", url, f"{commit}:{ref}")
        if completed.returncode == 0:
            logger.info("pushed %s to %s (%s)", ref, url, commit[:12])
            return True
        if rejected(completed.stdout):
            logger.info("push of %s to %s rejected: another task moved it", ref, url)
            return False
        error = (completed.stderr or completed.stdout).strip()[-500:]
        logger.warning("git push %s failed (attempt %d of %d): %s", url, number, retry.attempts, error)
        retry.pause(number)
    raise GitRemoteError(f"git push {ref} to {url} failed {retry.attempts} times: {error}")
