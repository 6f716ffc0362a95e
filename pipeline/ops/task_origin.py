"""Where a stateless task's run comes from: its settings, the commit a run starts from, the image's code.

A task (:mod:`pipeline.ops.stateless`) starts either in a git clone of the project, whose ``origin`` and
default DVC remote are the run's, or where there is no clone at all: a container of the project's image
(``docker/Dockerfile`` copies the project's files but no ``.git``), started by a ``DockerOperator`` or a
``KubernetesPodOperator``. Without a clone every service is a setting:

- ``COLBERT_PIPELINE_GIT_REMOTE``: the git remote's URL (a remote's name needs a clone to look it up);
- ``COLBERT_PIPELINE_DVC_REMOTE_URL`` (``s3://bucket/path``, ...) and ``COLBERT_PIPELINE_DVC_REMOTE_OPTIONS``,
  DVC's options for that remote as space-separated ``key=value`` pairs (``endpointurl=http://host:9000
  region=eu-west-1``); credentials best come from the environment DVC documents (``AWS_ACCESS_KEY_ID``, ...).
  In a clone the URL setting, when given, replaces the clone's remote;
- ``MLFLOW_TRACKING_URI`` (required everywhere);
- ``COLBERT_PIPELINE_START_COMMIT``: the commit a new run starts from, a branch, tag or full commit id of
  the git remote. Default: the remote's ``main``, resolved once, by the run's first task (which creates
  the run's ref from it; later tasks follow the ref). In a clone the default is the clone's HEAD.

The image records the commit it was built from (build argument ``COLBERT_PIPELINE_COMMIT``, environment
``COLBERT_PIPELINE_IMAGE_COMMIT``). A task in it refuses to run a run whose ref holds other code, naming
both commits: the stage runs the ref's code, but the task machinery and the whole Python environment are the
image's, so a mismatch would record results under a commit that did not make them. "Other code" compares the
git trees of :data:`CODE_PATHS` rather than the commits: a run's ref is never the image's commit (every task
adds a commit of ``params.yaml`` and ``dvc.lock`` on top of its start), and a commit that changes only docs
or tests changes nothing the image runs.

Example (the DVC options setting, parsed):
    >>> parse_options("endpointurl=http://127.0.0.1:9000  region=us-east-1")
    {'endpointurl': 'http://127.0.0.1:9000', 'region': 'us-east-1'}
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
from collections.abc import Callable
from pathlib import Path

from pipeline.ops import dvc_remote, git_remote, orchestration
from pipeline.ops.git_remote import Retry, git, git_out
from pipeline.project.errors import InputError

logger = logging.getLogger(__name__)

START_ENV = "COLBERT_PIPELINE_START_COMMIT"
ATTEMPTS_ENV = "COLBERT_PIPELINE_REMOTE_ATTEMPTS"
BACKOFF_ENV = "COLBERT_PIPELINE_REMOTE_BACKOFF_S"
DVC_URL_ENV = "COLBERT_PIPELINE_DVC_REMOTE_URL"
DVC_OPTIONS_ENV = "COLBERT_PIPELINE_DVC_REMOTE_OPTIONS"
#: Set in the project's image (docker/Dockerfile) to the commit it was built from; unset outside an image.
IMAGE_COMMIT_ENV = "COLBERT_PIPELINE_IMAGE_COMMIT"
#: Without a clone, a new run starts from this branch of the git remote.
DEFAULT_START = "main"
#: What an image carries that a task runs from the image rather than from the run's checkout: the package
#: (the task machinery) and the locked environment.
CODE_PATHS = ("pipeline", "pyproject.toml", "uv.lock")
_FULL_ID = re.compile(r"[0-9a-f]{40}")


@dataclasses.dataclass(frozen=True)
class TaskSettings:
    """Where a task's run lives: the clone it starts from (None: no clone, settings only), the three shared
    services, the start commit, the retry policy and the image's commit (None outside an image)."""

    clone: Path | None
    git_url: str
    data_remote: dvc_remote.DataRemote
    tracking_uri: str
    start: str | None = None
    retry: Retry = dataclasses.field(default_factory=Retry)
    hf_offline: bool = True
    image_commit: str | None = None

    @classmethod
    def resolve(cls, folder: Path, lookup: Callable[[str], str | None] = os.environ.get) -> TaskSettings:
        """Read the settings (module docstring) through ``lookup``; each missing one is named."""
        folder = Path(folder).resolve()
        clone = toplevel(folder)
        uri = tracking_uri(lookup)
        if clone is None:
            git_url, remote = settings_without_clone(folder, lookup)
        else:
            git_url = git_remote.resolve_url(clone, lookup(git_remote.GIT_REMOTE_ENV))
            remote = data_remote_setting(lookup) or dvc_remote.read_remote(
                clone, lookup(dvc_remote.DVC_REMOTE_ENV)
            )
        offline = (lookup(orchestration.HF_OFFLINE_ENV) or "1").strip().lower()
        image = lookup(IMAGE_COMMIT_ENV)
        return cls(
            clone=clone,
            git_url=git_url,
            data_remote=remote,
            tracking_uri=uri,
            start=(lookup(START_ENV) or "").strip() or None,
            retry=Retry(int(lookup(ATTEMPTS_ENV) or 3), float(lookup(BACKOFF_ENV) or 2.0)),
            hf_offline=offline not in {"0", "false", "no", "off"},
            image_commit=None if image is None else image.strip(),
        )


def toplevel(folder: Path) -> Path | None:
    """The git clone ``folder`` is in, or None (a container of the image: no ``.git``)."""
    if not folder.is_dir():
        raise InputError(
            f"{folder} is not a directory: start a task in a clone, or in any folder with settings"
        )
    completed = git(folder, "rev-parse", "--show-toplevel")
    return Path(completed.stdout.strip()) if completed.returncode == 0 else None


def tracking_uri(lookup: Callable[[str], str | None]) -> str:
    uri = (lookup(orchestration.TRACKING_URI_ENV) or "").strip()
    if not uri:
        raise InputError(
            f"{orchestration.TRACKING_URI_ENV} is not set: a task's workspace is thrown away, so its "
            "runs must go to a tracking server (http://host:5000), or to an absolute sqlite:/// path"
        )
    if uri.startswith("sqlite:///") and not uri[len("sqlite:///") :].startswith("/"):
        raise InputError(
            f"{orchestration.TRACKING_URI_ENV}={uri}: a relative path would land in the "
            "throwaway workspace; give an absolute one or a server's URL"
        )
    return uri


def parse_options(text: str) -> dict[str, str]:
    """``key=value key=value`` (the DVC options setting) as a mapping; a malformed pair is refused."""
    options: dict[str, str] = {}
    for item in text.split():
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InputError(
                f"{DVC_OPTIONS_ENV}: {item!r} is not key=value (e.g. endpointurl=http://host:9000)"
            )
        options[key] = value
    return options


def data_remote_setting(lookup: Callable[[str], str | None]) -> dvc_remote.DataRemote | None:
    """The DVC remote the URL and options settings name (checked against DVC's schema), or None."""
    url = (lookup(DVC_URL_ENV) or "").strip()
    options_text = lookup(DVC_OPTIONS_ENV) or ""
    if not url:
        if options_text.strip():
            raise InputError(f"{DVC_OPTIONS_ENV} is set but {DVC_URL_ENV} is not: name the remote's URL too")
        return None
    if (lookup(dvc_remote.DVC_REMOTE_ENV) or "").strip():
        raise InputError(
            f"both {DVC_URL_ENV} (a remote by URL) and {dvc_remote.DVC_REMOTE_ENV} (a remote of the clone "
            "by name) are set: set one"
        )
    options = {**parse_options(options_text), "url": url}
    from dvc.config_schema import SCHEMA
    from voluptuous import Invalid, Schema

    try:
        Schema(SCHEMA)({"remote": {"settings": options}})
    except Invalid as error:
        raise InputError(f"{DVC_URL_ENV} / {DVC_OPTIONS_ENV}: DVC refuses the remote ({error})") from None
    return dvc_remote.DataRemote(name="settings", options=options)


def settings_without_clone(
    folder: Path, lookup: Callable[[str], str | None]
) -> tuple[str, dvc_remote.DataRemote]:
    """The git remote's URL and the DVC remote when no clone holds them: both settings, or both named."""
    git_setting = (lookup(git_remote.GIT_REMOTE_ENV) or "").strip()
    remote = data_remote_setting(lookup)
    missing = []
    if not git_remote.looks_like_url(git_setting):
        given = f" ({git_remote.GIT_REMOTE_ENV}={git_setting!r} names a remote, which needs a clone)"
        missing.append(
            f"{git_remote.GIT_REMOTE_ENV}, the git remote's URL (git://, https://, ssh://)"
            + (given if git_setting else "")
        )
    if remote is None:
        missing.append(
            f"{DVC_URL_ENV}, the DVC remote's URL (s3://bucket/path; options in {DVC_OPTIONS_ENV})"
        )
    if missing:
        raise InputError(
            f"{folder} is not in a git clone, so the task's remotes come from settings; not set: "
            + "; ".join(missing)
        )
    if git_setting.startswith(("./", "../", "~")) or git_setting in {".", ".."}:
        git_setting = str((folder / Path(git_setting).expanduser()).resolve())
    assert remote is not None
    return git_setting, remote


# -- the commit a new run starts from ---------------------------------------------------------------------


def fetch_start(settings: TaskSettings, workspace: Path) -> str:
    """The commit a run's first task starts from, fetched into ``workspace``.

    In a clone: ``COLBERT_PIPELINE_START_COMMIT`` or the clone's HEAD, fetched from the clone (git's
    upload-pack only reads it). Without one: that setting or ``main``, a branch, tag or full commit id of the
    git remote, fetched from it.
    """
    if settings.clone is not None:
        rev = settings.start or "HEAD"
        resolved = git(settings.clone, "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}")
        if resolved.returncode != 0:
            raise InputError(f"{START_ENV}={rev}: no such commit in {settings.clone}")
        start = resolved.stdout.strip()
        git_out(workspace, "fetch", "--quiet", "--no-tags", str(settings.clone), start)
        return start
    rev = settings.start or DEFAULT_START
    url = settings.git_url
    for ref in (f"refs/heads/{rev}", f"refs/tags/{rev}"):
        if git_remote.remote_tip(url, ref, settings.retry, workspace):
            git_remote.fetch(workspace, url, ref, settings.retry)
            start = git_out(workspace, "rev-parse", "FETCH_HEAD^{commit}")
            logger.info("a new run starts from %s (%s of %s)", start[:12], ref, url)
            return start
    if _FULL_ID.fullmatch(rev) and fetch_commit(workspace, url, rev):
        return rev
    setting = f"{START_ENV}={rev}" if settings.start else f"{START_ENV} is unset and its default, {rev},"
    raise InputError(
        f"{setting} is no branch, tag or commit of the git remote {url}: name one it has "
        "(a commit by its full 40-character id)"
    )


def fetch_commit(workspace: Path, source: str, commit: str) -> bool:
    """Whether ``workspace`` has ``commit`` once it is fetched from ``source`` (one try: the source was
    just reached, so a failure means it lacks the commit)."""
    if git(workspace, "cat-file", "-e", f"{commit}^{{commit}}").returncode == 0:
        return True
    git(workspace, "fetch", "--quiet", "--no-tags", source, commit)
    return git(workspace, "cat-file", "-e", f"{commit}^{{commit}}").returncode == 0


# -- the image's code against the run's ------------------------------------------------------------------


def code_trees(workspace: Path, commit: str) -> dict[str, str]:
    """The git object of each of :data:`CODE_PATHS` at ``commit`` (an absent path has none)."""
    listed = git_out(workspace, "ls-tree", commit, "--", *CODE_PATHS)
    trees = {}
    for line in listed.splitlines():
        meta, _, path = line.partition("\t")
        trees[path] = meta.split()[2]
    return trees


def run_start(workspace: Path, tip: str, trailer: str) -> str:
    """The commit a run's ref started from: the newest one below ``tip`` that no task of a run made."""
    found = git_out(workspace, "log", "-1", "--format=%H", "--invert-grep", f"--grep=^{trailer}: ", tip)
    return found or tip


def check_image_code(settings: TaskSettings, workspace: Path, base: str, ref: str, trailer: str) -> None:
    """Refuse a run whose ref (at ``base``) holds other code than the image this task runs in.

    Outside an image (no ``COLBERT_PIPELINE_IMAGE_COMMIT``) there is nothing to check. The image's commit is
    fetched from the clone or the git remote; one that neither has cannot be matched and is refused too.
    """
    image = settings.image_commit
    if image is None:
        return
    if not _FULL_ID.fullmatch(image):
        raise InputError(
            f"{IMAGE_COMMIT_ENV}={image!r}: this image records no commit, so its code cannot be matched "
            "with a run's; build it with --build-arg COLBERT_PIPELINE_COMMIT=$(git rev-parse HEAD)"
        )
    sources = [str(settings.clone)] if settings.clone is not None else []
    if not any(fetch_commit(workspace, source, image) for source in [*sources, settings.git_url]):
        raise InputError(
            f"this image was built from commit {image} ({IMAGE_COMMIT_ENV}), which the git remote "
            f"{settings.git_url} does not have, so its code cannot be matched with {ref} at {base}: "
            "push that commit, or run an image built from a pushed one"
        )
    ours, theirs = code_trees(workspace, image), code_trees(workspace, base)
    differ = sorted(path for path in set(ours) | set(theirs) if ours.get(path) != theirs.get(path))
    if differ:
        start = run_start(workspace, base, trailer)
        raise InputError(
            f"this image carries the code of commit {image}, but {ref} holds the code of commit {start} "
            f"(at {base[:12]}); they differ in {', '.join(differ)}. Run the task in the image built from "
            f"{start[:12]}, or start a new run from {image[:12]} ({START_ENV})"
        )
    logger.info("the image's code (%s) is the run's (%s)", image[:12], base[:12])
