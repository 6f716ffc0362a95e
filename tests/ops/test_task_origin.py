"""A task with no clone (the project's image): settings, the start commit, the image's code against the run's.

The git remote here is a bare repository by path (git fetches from it as from a server); the stateless
tests (tests/ops/test_stateless.py) run the same over ``git daemon`` and an S3 API, end to end.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from pipeline.ops import dvc_remote, task_origin
from pipeline.ops.task_origin import TaskSettings
from pipeline.project.errors import InputError
from tests.workspace import GIT_IDENTITY

TRACKING = {"MLFLOW_TRACKING_URI": "sqlite:////tmp/unused.db"}
S3 = {
    task_origin.DVC_URL_ENV: "s3://runs/project",
    task_origin.DVC_OPTIONS_ENV: "endpointurl=http://127.0.0.1:9 region=us-east-1",
}
TRAILER = "Colbert-Run-Id"


def _git(cwd: Path, *args: str) -> str:
    env = {**os.environ, **GIT_IDENTITY}
    return subprocess.run(
        ["git", *args], cwd=cwd, env=env, capture_output=True, text=True, check=True
    ).stdout.strip()


def _commit(repo: Path, files: dict[str, str], message: str) -> str:
    for name, text in files.items():
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text(text)
    _git(repo, "add", "-A")
    _git(repo, "commit", "-qm", message)
    return _git(repo, "rev-parse", "HEAD")


@pytest.fixture
def history(tmp_path: Path) -> dict[str, str]:
    """A served repository: ``v1`` (a tag) -> ``docs`` (main: README only) -> ``code`` (branch ``newer``:
    the package changed); ``unpushed``: a commit only the source has; ``run``: a task's commit on main."""
    source = tmp_path / "source"
    source.mkdir()
    _git(source, "init", "-q", "-b", "main")
    code = {"pipeline/__init__.py": "VERSION = 1\n", "pyproject.toml": "[project]\n", "uv.lock": "v1\n"}
    commits = {"v1": _commit(source, {**code, "README.md": "one\n"}, "v1")}
    _git(source, "tag", "-a", "v1", "-m", "release")
    commits["docs"] = _commit(source, {"README.md": "two\n"}, "docs only")
    _git(source, "checkout", "-qb", "newer")
    commits["code"] = _commit(source, {"pipeline/__init__.py": "VERSION = 2\n"}, "code")
    _git(source, "checkout", "-qb", "local")
    commits["unpushed"] = _commit(source, {"uv.lock": "v3\n"}, "unpushed")
    _git(source, "checkout", "-q", "main")
    commits["run"] = _commit(source, {"params.yaml": "a: 1\n"}, f"a task's record\n\n{TRAILER}: r1\n")
    remote = tmp_path / "remote.git"
    _git(tmp_path, "init", "-q", "--bare", str(remote))
    _git(source, "push", "-q", str(remote), "main", "newer", "refs/tags/v1")
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    _git(workspace, "init", "-q")
    return {**commits, "remote": str(remote), "workspace": str(workspace), "source": str(source)}


def _settings(history: dict[str, str], start: str | None = None, image: str | None = None) -> TaskSettings:
    return TaskSettings(
        clone=None,
        git_url=history["remote"],
        data_remote=dvc_remote.DataRemote("settings", {"url": "s3://runs/project"}),
        tracking_uri=TRACKING["MLFLOW_TRACKING_URI"],
        start=start,
        image_commit=image,
    )


def test_without_a_clone_every_service_comes_from_settings(tmp_path: Path) -> None:
    lookup = {**TRACKING, **S3, "COLBERT_PIPELINE_GIT_REMOTE": "git://127.0.0.1:9418/project.git"}
    settings = TaskSettings.resolve(tmp_path, lookup.get)
    assert settings.clone is None
    assert settings.git_url == "git://127.0.0.1:9418/project.git"
    assert settings.data_remote.options == {
        "url": "s3://runs/project",
        "endpointurl": "http://127.0.0.1:9",
        "region": "us-east-1",
    }
    assert settings.start is None and settings.image_commit is None


def test_missing_or_malformed_settings_are_named(tmp_path: Path) -> None:
    with pytest.raises(InputError) as both:
        TaskSettings.resolve(tmp_path, TRACKING.get)
    assert "is not in a git clone" in str(both.value)
    assert "COLBERT_PIPELINE_GIT_REMOTE, the git remote's URL" in str(both.value)
    assert "COLBERT_PIPELINE_DVC_REMOTE_URL, the DVC remote's URL" in str(both.value)

    by_name = {**TRACKING, **S3, "COLBERT_PIPELINE_GIT_REMOTE": "origin"}
    with pytest.raises(InputError, match="'origin' names a remote, which needs a clone") as named:
        TaskSettings.resolve(tmp_path, by_name.get)
    assert "COLBERT_PIPELINE_DVC_REMOTE_URL" not in str(named.value)  # only what is missing

    git = {**TRACKING, "COLBERT_PIPELINE_GIT_REMOTE": "git://127.0.0.1:9418/p.git"}
    bad_pair = {**git, **S3, task_origin.DVC_OPTIONS_ENV: "endpointurl"}
    with pytest.raises(
        InputError, match="COLBERT_PIPELINE_DVC_REMOTE_OPTIONS: 'endpointurl' is not key=value"
    ):
        TaskSettings.resolve(tmp_path, bad_pair.get)
    bad_key = {**git, **S3, task_origin.DVC_OPTIONS_ENV: "endpoint=http://x"}
    with pytest.raises(InputError, match=r"DVC refuses the remote .*endpoint"):
        TaskSettings.resolve(tmp_path, bad_key.get)
    options_only = {**git, task_origin.DVC_OPTIONS_ENV: "region=x"}
    with pytest.raises(InputError, match="COLBERT_PIPELINE_DVC_REMOTE_URL is not"):
        TaskSettings.resolve(tmp_path, options_only.get)
    with pytest.raises(InputError, match="MLFLOW_TRACKING_URI is not set"):
        TaskSettings.resolve(tmp_path, {**S3, "COLBERT_PIPELINE_GIT_REMOTE": "git://h/p.git"}.get)


def test_a_new_run_starts_from_the_remotes_main_or_the_named_commit(history: dict[str, str]) -> None:
    workspace = Path(history["workspace"])
    assert task_origin.fetch_start(_settings(history), workspace) == history["run"]
    assert task_origin.fetch_start(_settings(history, "v1"), workspace) == history["v1"]  # a tag, peeled
    assert task_origin.fetch_start(_settings(history, "newer"), workspace) == history["code"]
    assert task_origin.fetch_start(_settings(history, history["docs"]), workspace) == history["docs"]
    with pytest.raises(InputError, match="COLBERT_PIPELINE_START_COMMIT=nope is no branch, tag or commit"):
        task_origin.fetch_start(_settings(history, "nope"), workspace)
    with pytest.raises(InputError, match=f"={history['unpushed']} is no branch"):
        task_origin.fetch_start(_settings(history, history["unpushed"]), workspace)


def test_an_image_runs_only_a_run_of_its_own_code(history: dict[str, str]) -> None:
    workspace = Path(history["workspace"])
    task_origin.fetch_start(_settings(history), workspace)  # the run's ref: main's tip, a task's commit
    ref, run = "refs/colbert-runs/r1", history["run"]

    def check(image: str | None) -> None:
        task_origin.check_image_code(_settings(history, image=image), workspace, run, ref, TRAILER)

    check(None)  # not in an image: nothing to match
    check(history["v1"])  # another commit, the same code (docs and the run's record differ)
    with pytest.raises(InputError) as other:
        check(history["code"])
    message = str(other.value)
    # Both commits named: the image's, and the one the run started from (below the task's own commit).
    assert f"the code of commit {history['code']}" in message
    assert f"holds the code of commit {history['docs']} (at {run[:12]})" in message
    assert "they differ in pipeline." in message
    with pytest.raises(InputError, match=f"built from commit {history['unpushed']} .*, which the git remote"):
        check(history["unpushed"])
    with pytest.raises(InputError, match="records no commit"):
        check("")
