"""The whole pipeline through ``dvc repro`` against a real MLflow tracking server, on a tiny offline sample.

One workspace (a copy of the tracked files, as a fresh clone has them) is reused by the tests below, in order:
the first ``dvc repro`` runs every stage and registers the champion; a second does nothing; ``search``
answers from the champion; a DVC push to a local remote and a pull into a fresh clone give identical data,
model and index.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline.config import apply_overrides, load_params

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
TINY = {
    "prepare.sample.n_train_entities": 6,
    "prepare.sample.n_eval_entities": 4,
    "prepare.sample.n_distractors": 20,
    "prepare.eval_queries": 12,
    "prepare.eval_documents": 80,
    "train.max_steps": 3,
    "train.batch_size": 8,
    "train.device": "cpu",
    "evaluate.device": "cpu",
    "index.device": "cpu",
}
OUTPUTS = ["data/prepared/train", "data/prepared/eval", "models/colbert", "indexes/sample"]

pytestmark = pytest.mark.slow


def run(
    command: list[str], cwd: Path, env: dict[str, str], timeout: int = 900
) -> subprocess.CompletedProcess:
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, (
        f"{' '.join(command)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    )
    return result


def tree_md5(path: Path) -> str:
    digest = hashlib.md5()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(str(file.relative_to(path)).encode())
        digest.update(file.read_bytes())
    return digest.hexdigest()


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    """A git repository holding the project's tracked files, with tiny params."""
    root = tmp_path_factory.mktemp("workspace") / "project"
    files = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    for name in files.splitlines():
        source = REPO / name
        if source.is_file():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, root / name)
    raw = yaml.safe_load((root / "params.yaml").read_text())
    (root / "params.yaml").write_text(yaml.safe_dump(apply_overrides(raw, TINY), sort_keys=False))
    load_params(root / "params.yaml")  # still valid
    for command in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "workspace"]):
        subprocess.run(command, cwd=root, check=True, env={**os.environ, **GIT_IDENTITY})
    return root


GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "test",
    "GIT_AUTHOR_EMAIL": "test@example.invalid",
    "GIT_COMMITTER_NAME": "test",
    "GIT_COMMITTER_EMAIL": "test@example.invalid",
}


@pytest.fixture(scope="module")
def tracking_server(tmp_path_factory):
    from tests.mlflow_server import running_mlflow_server

    with running_mlflow_server(tmp_path_factory.mktemp("mlflow-server")) as uri:
        yield uri


@pytest.fixture(scope="module")
def env(tracking_server) -> dict[str, str]:
    return {
        **os.environ,
        **GIT_IDENTITY,
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
        "MLFLOW_TRACKING_URI": tracking_server,
        "HF_HUB_OFFLINE": "1",
    }


@pytest.fixture(scope="module")
def first_repro(workspace, env) -> subprocess.CompletedProcess:
    return run(["dvc", "repro"], workspace, env)


def test_repro_runs_every_stage_and_registers_a_champion(workspace, first_repro):
    for stage in ("prepare", "baseline", "train", "evaluate", "index", "register"):
        assert f"Running stage '{stage}'" in first_repro.stdout
    metrics = json.loads((workspace / "metrics" / "eval.json").read_text())
    baseline = json.loads((workspace / "metrics" / "baseline.json").read_text())
    assert set(metrics) == set(baseline) and "NanoSample_MaxSim_ndcg@10" in metrics
    index = json.loads((workspace / "metrics" / "index.json").read_text())
    assert (
        index["documents"]
        == json.loads((workspace / "data/prepared/stats.json").read_text())["eval_documents"]
    )
    registry = json.loads((workspace / "metrics" / "registry.json").read_text())
    assert registry["promoted"] is True  # the first version always becomes champion
    assert (workspace / "metrics" / "comparison.png").stat().st_size > 0


def test_second_repro_does_nothing(workspace, env, first_repro):
    stamps = {name: (workspace / name).stat().st_mtime_ns for name in OUTPUTS}
    second = run(["dvc", "repro"], workspace, env)
    assert "Running stage" not in second.stdout
    assert {name: (workspace / name).stat().st_mtime_ns for name in OUTPUTS} == stamps


def test_search_answers_from_the_champion(workspace, env, first_repro):
    result = run(["colbert-pipeline", "search", "where is it based?", "--k", "3"], workspace, env)
    assert "doc-" in result.stdout or "noise-" in result.stdout


def test_dvc_push_and_pull_into_a_fresh_clone_gives_identical_outputs(workspace, env, first_repro, tmp_path):
    remote = tmp_path / "remote"
    run(["dvc", "remote", "add", "-d", "local", str(remote)], workspace, env)
    run(["git", "add", "-A"], workspace, env)
    run(["git", "commit", "-qm", "pipeline outputs"], workspace, env)
    run(["dvc", "push"], workspace, env)
    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(workspace), str(clone)], tmp_path, env)
    run(["dvc", "pull"], clone, env)
    for name in OUTPUTS:
        assert tree_md5(clone / name) == tree_md5(workspace / name), name
    status = run(["dvc", "status"], clone, env)
    assert "up to date" in status.stdout.lower()
