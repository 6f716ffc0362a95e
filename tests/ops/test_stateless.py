"""Stateless tasks: stages of one run in clones that share only a git daemon, an S3 API and a tracking store.

Each clone has its own HOME and folder; a run's ref (``refs/colbert-runs/<run>``) and data travel through the
servers (``tests/remotes.py``). The faults use a toy project whose stages are shell commands (seconds
each); the last test runs the project's own ``prepare`` and ``baseline`` on the tiny sample in two clones.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipeline.ops import git_remote, stateless, task_origin
from tests import remotes
from tests.workspace import GIT_IDENTITY, make_workspace

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent
BUCKET = "runs"
TOY_PARAMS = "prepare:\n  seed: 1\ntrain:\n  max_steps: 10\n"
TOY_STAGES = """\
stages:
  prepare:
    cmd: mkdir -p data && echo "prepared ${prepare.seed}" > data/prepared.txt
    params: [prepare.seed]
    outs: [data/prepared.txt]
  baseline:
    cmd: mkdir -p metrics && wc -c < data/prepared.txt > metrics/baseline.json
    deps: [data/prepared.txt]
    metrics:
      - metrics/baseline.json:
          cache: false
  train:
    cmd: mkdir -p models && cat data/prepared.txt > models/model.txt
    deps: [data/prepared.txt]
    params: [train.max_steps]
    outs: [models/model.txt]
  broken:
    cmd: echo "this stage fails" && false
    deps: [data/prepared.txt]
    outs: [models/broken.txt]
"""


def _git(cwd: Path, *args: str) -> str:
    completed = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True)
    return completed.stdout.strip()


def snapshot(clone: Path) -> dict[str, Any]:
    """Everything a task could change in the clone it starts from: files (with .git's), HEAD, status."""
    files = {
        str(path.relative_to(clone)): (path.stat().st_mtime_ns, path.stat().st_size)
        for path in sorted(clone.rglob("*"))
        if path.is_file()
    }
    status = _git(clone, "--no-optional-locks", "status", "--porcelain", "--ignored")
    return {"files": files, "head": _git(clone, "rev-parse", "HEAD"), "status": status}


@pytest.fixture(scope="module")
def servers(module_tmp_path: Path) -> Iterator[dict[str, str]]:
    """The git daemon (serving ``served/``) and the S3 API with one bucket, for the whole module."""
    served = module_tmp_path / "served"
    with remotes.git_daemon(served) as git_url, remotes.s3_server(module_tmp_path / "s3") as endpoint:
        remotes.make_bucket(endpoint, BUCKET)
        yield {"git": git_url, "s3": endpoint, "served": str(module_tmp_path / "served")}


def new_clone(root: Path, name: str, url: str, endpoint: str, prefix: str) -> tuple[Path, dict[str, str]]:
    """A clone with its own HOME, whose default DVC remote is ``s3://runs/<prefix>``; and its environment."""
    home = root / f"home-{name}"
    home.mkdir(parents=True)
    env = {
        **os.environ,
        **GIT_IDENTITY,
        "HOME": str(home),
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
        task_origin.BACKOFF_ENV: "0.1",
    }
    clone = remotes.clone_from(url, root / f"clone-{name}", env)
    remotes.add_s3_remote(clone, "store", f"s3://{BUCKET}/{prefix}", endpoint)
    return clone, env


def task(clone: Path, env: dict[str, str], stage: str, run: str, *sets: str, **extra: str):
    command = [str(BIN / "colbert-pipeline"), "task", stage, "--run", run]
    command += [arg for value in sets for arg in ("--set", value)]
    return subprocess.run(
        command, cwd=clone, env={**env, **extra}, capture_output=True, text=True, timeout=900, check=False
    )


def remote_lock(clone: Path, ref: str) -> dict[str, Any]:
    """The run's ``dvc.lock`` as the git remote has it (fetched into the test's own clone)."""
    _git(clone, "fetch", "-q", "origin", f"+{ref}:{ref}")
    return yaml.safe_load(_git(clone, "show", f"{ref}:dvc.lock"))


@pytest.fixture(scope="module")
def toy(module_tmp_path: Path, servers: dict[str, str]) -> dict[str, Any]:
    """The toy project served as ``toy.git``; two clones (own HOMEs) with the same S3 remote."""
    return make_toy(module_tmp_path, servers)


def make_toy(module_tmp_path: Path, servers: dict[str, str]) -> dict[str, Any]:
    """What the ``toy`` fixture makes (also used by ``test_stateless_dag``)."""
    source = module_tmp_path / "toy-source"
    source.mkdir()
    (source / "params.yaml").write_text(TOY_PARAMS)
    (source / "dvc.yaml").write_text(TOY_STAGES)
    (source / ".gitignore").write_text("/data/\n/models/\n")
    env = {**os.environ, **GIT_IDENTITY}
    # On `main`: the branch a task without a clone starts a new run from.
    for command in (
        ["git", "init", "-q", "-b", "main"],
        [str(BIN / "dvc"), "init", "-q"],
        ["git", "add", "-A"],
    ):
        subprocess.run(command, cwd=source, env=env, check=True)
    subprocess.run(["git", "commit", "-qm", "toy"], cwd=source, env=env, check=True)
    remotes.serve_repository(source, Path(servers["served"]), "toy.git")
    url = f"{servers['git']}/toy.git"
    a = new_clone(module_tmp_path / "toy", "a", url, servers["s3"], "toy")
    b = new_clone(module_tmp_path / "toy", "b", url, servers["s3"], "toy")
    return {"a": a, "b": b, "url": url}


def test_consecutive_stages_in_two_clones_share_one_ref(toy: dict[str, Any], servers: dict[str, str]) -> None:
    (a, env_a), (b, env_b) = toy["a"], toy["b"]
    before = {"a": snapshot(a), "b": snapshot(b)}
    first = task(a, env_a, "prepare", "two-clones", "prepare.seed=5")
    assert first.returncode == 0, first.stderr[-3000:]
    second = task(b, env_b, "baseline", "two-clones", "prepare.seed=5")
    assert second.returncode == 0, second.stderr[-3000:]
    assert {"a": snapshot(a), "b": snapshot(b)} == before  # the clones it started from: untouched

    ref = "refs/colbert-runs/two-clones"
    lock = remote_lock(a, ref)
    assert list(lock["stages"]) == ["prepare", "baseline"]
    assert yaml.safe_load(_git(a, "show", f"{ref}:params.yaml"))["prepare"]["seed"] == 5
    assert _git(a, "show", f"{ref}:metrics/baseline.json") == "11"  # "prepared 5\n", pulled from S3
    assert _git(a, "log", "--format=%(trailers:key=Colbert-Run-Id,valueonly)", ref).split() == [
        "two-clones",
        "two-clones",
    ]
    # The data went to the S3 API (DVC's content-addressed files), not to any folder the clones share.
    prepared = lock["stages"]["prepare"]["outs"][0]["md5"]
    keys = remotes.bucket_keys(servers["s3"], BUCKET, "toy/")
    assert f"toy/files/md5/{prepared[:2]}/{prepared[2:]}" in keys


def test_a_moved_ref_is_fetched_and_the_stage_reapplied(
    toy: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``baseline`` and ``train`` race after ``prepare``: train's push lands between baseline's fetch and
    push; baseline's push is rejected, and its dvc.lock entry is merged onto train's commit."""
    (a, env_a), (b, env_b) = toy["a"], toy["b"]
    assert task(a, env_a, "prepare", "race").returncode == 0
    ref = "refs/colbert-runs/race"
    original_push, raced = git_remote.push, []

    def push_after_another_task(*args: Any, **kwargs: Any) -> bool:
        if not raced:  # the first push only: another task of the run moves the ref just before it
            raced.append(task(b, env_b, "train", "race"))
            assert raced[0].returncode == 0, raced[0].stderr[-3000:]
        return original_push(*args, **kwargs)

    monkeypatch.setattr(git_remote, "push", push_after_another_task)
    monkeypatch.setenv("HOME", env_a["HOME"])
    before = snapshot(a)
    result = stateless.run_task("baseline", "race", {}, stateless.TaskSettings.resolve(a))

    assert result.reapplied == 1 and not result.first
    assert snapshot(a) == before
    lock = remote_lock(a, ref)
    assert list(lock["stages"]) == ["prepare", "baseline", "train"]  # both stages recorded, none lost
    subjects = _git(a, "log", "--format=%s", ref).splitlines()
    order = ("baseline", "train", "prepare")
    assert subjects[:3] == [f"colbert-pipeline task {stage} of run race" for stage in order]
    assert _git(a, "show", f"{ref}:metrics/baseline.json") == "11"

    # A retry of a task that had pushed: its outputs are pulled, DVC finds it up to date, nothing is new.
    again = task(a, env_a, "train", "race")
    assert again.returncode == 0, again.stderr[-3000:]
    assert '"skipped": true' in again.stdout
    assert git_remote.remote_tip(toy["url"], ref, git_remote.Retry(), a) == result.commit


def test_unreachable_git_remote_is_an_infrastructure_error(toy: dict[str, Any]) -> None:
    a, env = toy["a"]
    before = snapshot(a)
    down = f"git://127.0.0.1:{_closed_port()}/toy.git"
    failed = task(a, env, "prepare", "no-git", **{git_remote.GIT_REMOTE_ENV: down})
    assert failed.returncode == 3, failed.stderr[-2000:]  # infrastructure: the orchestrator retries
    assert "unavailable" in failed.stderr and "failed 3 times" in failed.stderr
    assert git_remote.remote_tip(toy["url"], "refs/colbert-runs/no-git", git_remote.Retry(), a) is None
    assert snapshot(a) == before


def test_unreachable_dvc_remote_records_nothing(toy: dict[str, Any], module_tmp_path: Path) -> None:
    url = toy["url"]
    down = f"http://127.0.0.1:{_closed_port()}"  # the S3 API's address with nothing listening
    clone, env = new_clone(module_tmp_path / "toy-down", "down", url, down, "x")
    failed = task(clone, env, "prepare", "no-s3", AWS_MAX_ATTEMPTS="1")  # botocore's own retries: once
    assert failed.returncode == 3, failed.stderr[-2000:]
    assert "dvc push" in failed.stderr and "failed 3 times" in failed.stderr
    assert git_remote.remote_tip(url, "refs/colbert-runs/no-s3", git_remote.Retry(), clone) is None


def test_inputs_never_made_or_never_pushed_are_input_errors(toy: dict[str, Any], servers: dict) -> None:
    (a, env_a), (b, env_b) = toy["a"], toy["b"]
    never_made = task(b, env_b, "baseline", "no-prepare")
    assert never_made.returncode == 2, never_made.stderr[-2000:]
    assert "reads data/prepared.txt, which stage 'prepare' makes" in never_made.stderr
    # prepare ran and was recorded, but its data is gone from the remote (pushed elsewhere, or deleted)
    assert task(a, env_a, "prepare", "lost", "prepare.seed=9").returncode == 0
    md5 = remote_lock(a, "refs/colbert-runs/lost")["stages"]["prepare"]["outs"][0]["md5"]
    remotes.s3_client(servers["s3"]).delete_object(Bucket=BUCKET, Key=f"toy/files/md5/{md5[:2]}/{md5[2:]}")
    lost = task(b, env_b, "baseline", "lost", "prepare.seed=9")
    assert lost.returncode == 2, lost.stderr[-2000:]
    assert "the DVC remote lacks an output" in lost.stderr and "made by prepare" in lost.stderr


def test_a_failing_stage_leaves_the_ref_and_other_params_are_refused(toy: dict[str, Any]) -> None:
    (a, env_a), (b, env_b) = toy["a"], toy["b"]
    assert task(a, env_a, "prepare", "fails", "prepare.seed=3").returncode == 0
    ref = "refs/colbert-runs/fails"
    tip = git_remote.remote_tip(toy["url"], ref, git_remote.Retry(), a)
    broken = task(b, env_b, "broken", "fails", "prepare.seed=3")
    assert broken.returncode != 0 and "this stage fails" in broken.stderr + broken.stdout
    other = task(b, env_b, "train", "fails", "prepare.seed=4")
    assert other.returncode == 2 and "prepare.seed: the ref has 3, --set gives 4" in other.stderr
    assert git_remote.remote_tip(toy["url"], ref, git_remote.Retry(), a) == tip


def test_a_task_without_a_clone_takes_its_services_from_settings(
    toy: dict[str, Any], servers: dict[str, str], module_tmp_path: Path
) -> None:
    """What a container of the image runs: no clone (no .git), every service a setting, a new run from the
    git remote's ``main``; a clone's task then finds its push; an image of other code is refused."""
    b, env_b = toy["b"]
    folder, home = module_tmp_path / "no-clone", module_tmp_path / "home-no-clone"
    folder.mkdir()
    home.mkdir()
    main = git_remote.remote_tip(toy["url"], "refs/heads/main", git_remote.Retry(), folder)
    assert main
    options = " ".join(f"{key}={value}" for key, value in remotes.S3_CREDENTIALS.items())
    env = {
        **env_b,
        "HOME": str(home),
        git_remote.GIT_REMOTE_ENV: toy["url"],
        task_origin.DVC_URL_ENV: f"s3://{BUCKET}/toy",
        task_origin.DVC_OPTIONS_ENV: f"endpointurl={servers['s3']} {options}",
        task_origin.IMAGE_COMMIT_ENV: main,  # the image's code is main's
    }
    first = task(folder, env, "prepare", "no-clone", "prepare.seed=6")
    assert first.returncode == 0, first.stderr[-3000:]
    assert list(folder.iterdir()) == []  # the folder it ran in: untouched

    ref = "refs/colbert-runs/no-clone"
    assert list(remote_lock(b, ref)["stages"]) == ["prepare"]
    assert _git(b, "rev-parse", f"{ref}~1") == main  # started from the remote's main
    second = task(b, env_b, "baseline", "no-clone", "prepare.seed=6")  # a clone, its own S3 settings
    assert second.returncode == 0, second.stderr[-3000:]
    assert list(remote_lock(b, ref)["stages"]) == ["prepare", "baseline"]
    assert _git(b, "show", f"{ref}:metrics/baseline.json") == "11"  # "prepared 6\n", the first task's push

    # An image built from a commit whose package differs: refused before any work, both commits named.
    other = module_tmp_path / "other-code"
    remotes.clone_from(toy["url"], other, env_b)
    (other / "pipeline").mkdir()
    (other / "pipeline" / "__init__.py").write_text("VERSION = 2\n")
    _git(other, "add", "-A")
    subprocess.run(
        ["git", "commit", "-qm", "code"], cwd=other, env={**os.environ, **GIT_IDENTITY}, check=True
    )
    _git(other, "push", "-q", "origin", "HEAD:refs/heads/other-code")
    image = _git(other, "rev-parse", "HEAD")
    tip = git_remote.remote_tip(toy["url"], ref, git_remote.Retry(), folder)
    refused = task(
        folder, {**env, task_origin.IMAGE_COMMIT_ENV: image}, "train", "no-clone", "prepare.seed=6"
    )
    assert refused.returncode == 2, refused.stderr[-2000:]
    assert f"this image carries the code of commit {image}" in refused.stderr
    assert f"holds the code of commit {main}" in refused.stderr and "differ in pipeline" in refused.stderr
    assert git_remote.remote_tip(toy["url"], ref, git_remote.Retry(), folder) == tip


def _closed_port() -> int:
    from tests.mlflow_server import free_port

    return free_port()  # nothing listens there: every connection is refused


def test_the_project_stages_run_in_two_clones(module_tmp_path: Path, servers: dict[str, str]) -> None:
    """The real ``prepare`` then ``baseline`` of one run on the tiny sample, each in its own clone."""
    source = make_workspace(module_tmp_path / "project-source")
    remotes.serve_repository(source, Path(servers["served"]), "project.git")
    url = f"{servers['git']}/project.git"
    a, env_a = new_clone(module_tmp_path / "project", "a", url, servers["s3"], "project")
    b, env_b = new_clone(module_tmp_path / "project", "b", url, servers["s3"], "project")
    before = {"a": snapshot(a), "b": snapshot(b)}
    sets = ("prepare.eval_queries=10",)
    first = task(a, env_a, "prepare", "project-run", *sets)
    assert first.returncode == 0, first.stderr[-3000:]
    second = task(b, env_b, "baseline", "project-run", *sets)
    assert second.returncode == 0, second.stderr[-3000:]
    assert {"a": snapshot(a), "b": snapshot(b)} == before

    ref = "refs/colbert-runs/project-run"
    lock = remote_lock(a, ref)
    assert list(lock["stages"]) == ["prepare", "baseline"]
    read = {dep["path"]: dep["md5"] for dep in lock["stages"]["baseline"]["deps"]}
    made = {out["path"]: out["md5"] for out in lock["stages"]["prepare"]["outs"]}
    assert read["data/prepared/eval"] == made["data/prepared/eval"]  # baseline read what prepare pushed
    baseline = yaml.safe_load(_git(a, "show", f"{ref}:metrics/baseline.json"))
    assert any(key.endswith("ndcg@10") for key in baseline)
    assert yaml.safe_load(_git(a, "show", f"{ref}:params.yaml"))["prepare"]["eval_queries"] == 10
    assert not (a / "mlruns").exists() and not (b / "mlruns").exists()
