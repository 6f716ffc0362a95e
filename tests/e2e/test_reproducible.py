"""Two workspaces of the same commit, the same stages: the same DVC hashes for every deterministic output.

Nothing machine- or time-specific may sit inside a hashed output (absolute paths, timestamps, random names):
the benchmark's meta files record no folder, the model card no training time, index versions no random suffix.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.workspace import make_workspace, run, workspace_env

pytestmark = [pytest.mark.slow, pytest.mark.repro]

#: The stages whose outputs are bit-reproducible on CPU for a seed (the chain the DAG trains and serves).
CHAIN = "index"


def lock_outputs(workspace: Path) -> dict[str, str]:
    stages = yaml.safe_load((workspace / "dvc.lock").read_text())["stages"]
    return {out["path"]: out["md5"] for stage in stages.values() for out in stage.get("outs") or []}


def test_two_workspaces_give_identical_dvc_hashes(tmp_path: Path) -> None:
    locks = []
    for name in ("first", "second"):
        workspace = make_workspace(tmp_path / name / "project")
        env = workspace_env(f"sqlite:///{tmp_path / name / 'mlruns.db'}", workspace)
        run(["dvc", "repro", CHAIN], workspace, env, timeout=1500)
        locks.append(lock_outputs(workspace))
    first, second = locks
    assert {"data/prepared/train", "data/prepared/eval", "models/colbert", "indexes/sample"} <= set(first)
    assert first == second
