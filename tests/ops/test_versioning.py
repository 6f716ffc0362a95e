"""A run's versioning: its git ref (never the checked-out branch), the DVC push and its faults, data deps."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.ops import versioning
from pipeline.project.config import ConfigError, Params
from pipeline.project.params_file import check_tracked_inputs, untracked_inputs

DVC = str(Path(sys.executable).parent / "dvc")
IDENTITY = {
    "GIT_AUTHOR_NAME": "t",
    "GIT_AUTHOR_EMAIL": "t@example.invalid",
    "GIT_COMMITTER_NAME": "t",
    "GIT_COMMITTER_EMAIL": "t@example.invalid",
}


def sh(cwd: Path, *command: str) -> str:
    env = {**os.environ, **IDENTITY}
    completed = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, check=True)
    return completed.stdout.strip()


def porcelain(cwd: Path) -> set[str]:
    """``git status --porcelain`` lines, leading status columns intact."""
    completed = subprocess.run(["git", "status", "--porcelain"], cwd=cwd, capture_output=True, text=True)
    return set(completed.stdout.splitlines())


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A git + DVC project with one stage (``make``) whose output is in DVC's cache."""
    root = tmp_path / "project"
    root.mkdir()
    (root / "params.yaml").write_text("train:\n  max_steps: 10\n")
    (root / "dvc.yaml").write_text("stages:\n  make:\n    cmd: echo built > out.txt\n    outs: [out.txt]\n")
    sh(root, "git", "init", "-q")
    sh(root, DVC, "init", "-q")
    sh(root, "git", "add", "-A")
    sh(root, "git", "commit", "-qm", "project")
    sh(root, DVC, "repro", "-q")
    return root


def test_run_ref_names() -> None:
    assert versioning.run_ref_name("scheduled__2026-11-29T00:00:00+00:00") == (
        "refs/colbert-runs/scheduled__2026-11-29T00-00-00+00-00"
    )
    for bad in ("", "a b", "x..y", "a/b", "end.lock", "wild*card"):
        with pytest.raises(versioning.RunRefError, match="no valid git ref"):
            versioning.run_ref_name(bad)


def test_commit_run_records_the_workspace_without_touching_the_branch(project: Path) -> None:
    head, status = sh(project, "git", "rev-parse", "HEAD"), porcelain(project)
    (project / "params.yaml").write_text("train:\n  max_steps: 2\n")  # the run's Params

    ref = versioning.commit_run(project, "manual__1", "run 1")

    assert ref.created and ref.ref == "refs/colbert-runs/manual__1"
    assert sh(project, "git", "rev-parse", ref.ref) == ref.commit
    assert sh(project, "git", "show", f"{ref.commit}:params.yaml") == "train:\n  max_steps: 2"
    assert "out.txt" in sh(project, "git", "show", f"{ref.commit}:dvc.lock")
    assert sh(project, "git", "rev-parse", f"{ref.commit}^") == head  # a child of the checked-out commit
    # The branch, the index and the working tree are as they were (only the edit above shows).
    assert sh(project, "git", "rev-parse", "HEAD") == head
    assert porcelain(project) == status | {" M params.yaml"}
    assert sh(project, "git", "diff", "--cached") == ""
    # Ignored outputs stay out of the commit.
    assert "out.txt" not in sh(project, "git", "ls-tree", "-r", "--name-only", ref.commit).split()


def test_commit_run_retry_is_idempotent_and_a_reused_run_id_is_refused(project: Path) -> None:
    first = versioning.commit_run(project, "run-7", "run 7")
    again = versioning.commit_run(project, "run-7", "run 7")
    assert (again.commit, again.created) == (first.commit, False)
    (project / "params.yaml").write_text("train:\n  max_steps: 3\n")
    with pytest.raises(versioning.RunRefError, match="already exists"):
        versioning.commit_run(project, "run-7", "run 7 reused")
    assert sh(project, "git", "rev-parse", "refs/colbert-runs/run-7") == first.commit


def test_commit_run_needs_a_git_checkout(tmp_path: Path) -> None:
    with pytest.raises(versioning.RunRefError, match="not a git checkout"):
        versioning.commit_run(tmp_path, "run-1", "m")


def test_push_to_a_local_remote(project: Path, tmp_path: Path) -> None:
    remote = tmp_path / "remote"
    sh(project, DVC, "remote", "add", "-d", "storage", str(remote))
    result = versioning.push_outputs(project, ["make"])
    assert result.pushed and result.remote == versioning.Remote("storage", str(remote))
    pushed = [p for p in remote.rglob("*") if p.is_file()]
    assert len(pushed) == 1 and pushed[0].read_text() == "built\n"


def test_no_remote_means_not_pushed_and_one_warning(project: Path, caplog) -> None:
    caplog.set_level(logging.WARNING, logger="pipeline.ops.versioning")
    record = versioning.record_run(project, "run-1", ["make"])
    assert record["pushed"] is False and record["remote"] is None
    assert record["tags"][versioning.DVC_PUSHED_TAG] == "false"
    assert record["ref"] == "refs/colbert-runs/run-1"  # the run is still recorded
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "not pushed" in warnings[0]


def test_a_named_remote_that_is_not_configured_is_an_input_error(project: Path) -> None:
    with pytest.raises(versioning.InputError, match="'nowhere' is not configured"):
        versioning.push_outputs(project, ["make"], remote_name="nowhere")


def test_unreachable_remote_fails_after_bounded_tries_and_records_nothing(project: Path) -> None:
    with socket.socket() as probe:  # a port nothing listens on: every connection is refused
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    sh(project, DVC, "remote", "add", "-d", "down", f"http://127.0.0.1:{port}/store")
    calls = []
    original = subprocess.run

    def counting(command, *args, **kwargs):
        if command[:2] == [versioning.dvc_executable(), "push"]:
            calls.append(command)
        return original(command, *args, **kwargs)

    refs_before = sh(project, "git", "for-each-ref")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(versioning.subprocess, "run", counting)
        patch.setattr(versioning.time, "sleep", lambda seconds: None)
        with pytest.raises(versioning.PushError, match=f"127.0.0.1:{port}.*failed 3 times") as raised:
            versioning.record_run(project, "run-1", ["make"])
    assert len(calls) == 3
    assert raised.value.kind == "infrastructure"  # Airflow retries the task
    assert sh(project, "git", "for-each-ref") == refs_before  # no ref: nothing says this run was pushed


def test_inputs_outside_prepare_data_are_refused_under_dvc(tmp_path: Path) -> None:
    inside = tmp_path / "inputs" / "triplets.jsonl"
    outside = tmp_path / "elsewhere" / "corpus.jsonl"
    params = Params.model_validate(
        {
            "prepare": {"source": "triplets", "triplets": {"path": str(inside)}, "data": "inputs"},
            "index": {"corpus": str(outside)},
            "quality": {"dataset": None},
        }
    )
    assert untracked_inputs(params, tmp_path) == [("index.corpus", outside)]
    with pytest.raises(ConfigError, match=r"index.corpus .*outside prepare.data \(inputs\)"):
        check_tracked_inputs(params, tmp_path)
    hub = Params.model_validate({"prepare": {"source": "triplets", "triplets": {"path": "org/dataset"}}})
    check_tracked_inputs(hub, tmp_path)  # a Hub dataset id: nothing DVC could watch, nothing refused


def test_a_stage_run_by_dvc_refuses_an_input_dvc_does_not_watch(tmp_path: Path) -> None:
    data = tmp_path / "elsewhere" / "triplets.jsonl"
    data.parent.mkdir()
    data.write_text('{"query": "q", "positive": "p", "negative": "n"}\n')
    (tmp_path / "inputs").mkdir()
    params = f"prepare:\n  source: triplets\n  triplets:\n    path: {data}\n"
    (tmp_path / "params.yaml").write_text(params)
    env = {**os.environ, "DVC_STAGE": "prepare"}  # what `dvc repro` sets for the command it runs
    completed = subprocess.run(
        [str(Path(sys.executable).parent / "colbert-pipeline"), "prepare"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 2, completed.stderr[-2000:]
    assert f"prepare.triplets.path ({data}) outside prepare.data (inputs)" in completed.stderr
    assert not (tmp_path / "data").exists()  # refused before any work
