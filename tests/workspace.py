"""A project workspace for end-to-end tests: the tracked files, as a fresh clone has them, in git."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from pipeline.project.params_file import apply_overrides, load_params

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "test",
    "GIT_AUTHOR_EMAIL": "test@example.invalid",
    "GIT_COMMITTER_NAME": "test",
    "GIT_COMMITTER_EMAIL": "test@example.invalid",
}
#: Params small enough for a whole pipeline run in a test on two CPU cores.
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

#: The DAG's run Params at test size (``{"overrides": DAG_TINY}``): a few training steps on a few entities,
#: a tiny benchmark and index; shared by the DAG's end-to-end, deploy and compose-stack tests.
DAG_TINY = {
    "prepare.sample.n_train_entities": 8,
    "prepare.sample.n_eval_entities": 2,
    "prepare.sample.n_distractors": 20,
    "prepare.eval_queries": 8,
    "prepare.eval_documents": 24,
    "train.max_steps": 2,
    "train.batch_size": 4,
    "train.save_steps": 1000,
    "evaluate.batch_size": 16,
    "index.kmeans_niters": 1,
}


def run(
    command: list[str], cwd: Path, env: Mapping[str, str], timeout: int = 900
) -> subprocess.CompletedProcess:
    """Run ``command``; a failure shows the end of its output."""
    result = subprocess.run(command, cwd=cwd, env=dict(env), capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, (
        f"{' '.join(command)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    )
    return result


#: Files DVC ignores (.dvcignore): the index's timing-dependent search.json is not pushed or pulled.
DVC_IGNORED = ("search.json",)


def tree_md5(path: Path) -> str:
    """One md5 over a folder's relative file names and bytes (the files DVC tracks)."""
    digest = hashlib.md5()
    for file in sorted(p for p in path.rglob("*") if p.is_file() and p.name not in DVC_IGNORED):
        digest.update(str(file.relative_to(path)).encode())
        digest.update(file.read_bytes())
    return digest.hexdigest()


def make_workspace(
    root: Path, overrides: Mapping[str, Any] = TINY, files: Mapping[str, str] | None = None
) -> Path:
    """Copy the project's files and ``files`` (name -> text) to ``root``, with ``overrides``; commit them.

    The files are git's: tracked ones and new ones not ignored (the code under test, without outputs, caches
    or the venv), as a fresh clone of this change would have them.
    """
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for name in filter(None, listed.split("\0")):
        source = REPO / name
        if source.is_file():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, root / name)
    for name, text in (files or {}).items():  # e.g. input data the overrides point at
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    if overrides:
        raw = yaml.safe_load((root / "params.yaml").read_text())
        changed = apply_overrides(raw, dict(overrides))
        (root / "params.yaml").write_text(yaml.safe_dump(changed, sort_keys=False))
        load_params(root / "params.yaml")  # still valid
    for command in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "workspace"]):
        subprocess.run(command, cwd=root, check=True, env={**os.environ, **GIT_IDENTITY})
    return root


def workspace_env(tracking_uri: str, workspace: Path | None = None) -> dict[str, str]:
    """The environment a stage gets in a test workspace: the project's venv first, offline, this store.

    With ``workspace``, its copy of the code runs (as the orchestrator arranges): the code DVC hashes.
    """
    env = {
        **os.environ,
        **GIT_IDENTITY,
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
        "MLFLOW_TRACKING_URI": tracking_uri,
        "HF_HUB_OFFLINE": "1",
    }
    if workspace is not None:
        env["PYTHONPATH"] = str(workspace)
    return env
