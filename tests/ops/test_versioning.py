"""A run's versioning: its git ref (never the checked-out branch), the DVC push and its faults, data deps."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

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


@pytest.fixture
def lineage_project(tmp_path: Path) -> Path:
    """A git + DVC project whose stages have the lineage stages' names, run, with a local default remote."""
    root = tmp_path / "lineage"
    root.mkdir()
    stages = {name: {"cmd": f"echo {name} > {name}.txt", "outs": [f"{name}.txt"]} for name in LINEAGE}
    (root / "dvc.yaml").write_text(yaml.safe_dump({"stages": stages}))
    sh(root, "git", "init", "-q")
    sh(root, DVC, "init", "-q")
    sh(root, DVC, "remote", "add", "-d", "storage", str(tmp_path / "remote"))
    sh(root, "git", "add", "-A")
    sh(root, "git", "commit", "-qm", "project")
    sh(root, DVC, "repro", "-q")
    return root


LINEAGE = versioning.LINEAGE_STAGES


def _version(tmp_path: Path) -> tuple[str, str]:
    from mlflow import MlflowClient

    client, name = MlflowClient(), f"recorded-{tmp_path.name}"
    client.create_registered_model(name)
    return name, str(client.create_model_version(name, source=str(tmp_path)).version)


def test_register_records_a_run_nobody_else_records(
    lineage_project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog
) -> None:
    from mlflow import MlflowClient

    monkeypatch.delenv(versioning.RECORDER_ENV, raising=False)
    monkeypatch.delenv("COLBERT_PIPELINE_GIT_REMOTE", raising=False)
    caplog.set_level(logging.WARNING, logger="pipeline.ops.versioning")
    name, version = _version(tmp_path)
    record = versioning.record_registered_version(lineage_project, name, version, None)

    assert record is not None and record["pushed"] and record["ref"].startswith("refs/colbert-runs/local__")
    tags = MlflowClient().get_model_version(name, version).tags
    assert tags[versioning.RUN_REF_TAG] == record["ref"]
    assert tags[versioning.RUN_COMMIT_TAG] == record["commit"]
    assert tags[versioning.DVC_REMOTE_TAG] == str(tmp_path / "remote")
    assert tags[versioning.DVC_PUSHED_TAG] == "true"
    assert "prepare" in sh(lineage_project, "git", "show", f"{record['ref']}:dvc.lock")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and f"git push origin {record['ref']}" in warnings[0]  # said once, how to push
    # Registered again unchanged (the same version): its run stays the one recorded first.
    assert versioning.record_registered_version(lineage_project, name, version, None) is None

    # With a git remote named by the setting, the ref goes there too (a path here; never a prompt).
    bare = tmp_path / "shared.git"
    sh(tmp_path, "git", "init", "-q", "--bare", str(bare))
    monkeypatch.setenv("COLBERT_PIPELINE_GIT_REMOTE", str(bare))
    name, version = _version(tmp_path / "second")
    pushed = versioning.record_registered_version(lineage_project, name, version, None)
    assert pushed is not None and sh(bare, "git", "rev-parse", pushed["ref"]) == pushed["commit"]


def test_register_under_the_dag_or_a_task_records_no_ref_of_its_own(
    lineage_project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow import MlflowClient

    refs = sh(lineage_project, "git", "for-each-ref")
    name, version = _version(tmp_path)
    monkeypatch.setenv(versioning.RECORDER_ENV, "dag")  # the DAG's record_run task tags it later
    assert versioning.record_registered_version(lineage_project, name, version, None) is None
    assert versioning.RUN_REF_TAG not in MlflowClient().get_model_version(name, version).tags
    monkeypatch.setenv(versioning.RECORDER_ENV, "task")  # a stateless task: its run's ref and remote
    monkeypatch.setenv(versioning.RUN_REF_ENV, "refs/colbert-runs/nightly-1")
    monkeypatch.setenv(versioning.RUN_REMOTE_URL_ENV, "s3://runs/project")
    versioning.record_registered_version(lineage_project, name, version, None)
    tags = MlflowClient().get_model_version(name, version).tags
    assert tags[versioning.RUN_REF_TAG] == "refs/colbert-runs/nightly-1"
    assert tags[versioning.RUN_COMMIT_TAG] == sh(lineage_project, "git", "rev-parse", "HEAD")
    assert (tags[versioning.DVC_REMOTE_TAG], tags[versioning.DVC_PUSHED_TAG]) == ("s3://runs/project", "true")
    assert sh(lineage_project, "git", "for-each-ref") == refs  # no ref of its own either way
