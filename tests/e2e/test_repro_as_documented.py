"""``.venv/bin/dvc repro`` as the README says, from a clone whose venv is not on PATH.

DVC runs each stage's ``cmd`` through ``/bin/sh`` with the caller's environment: called by its venv path with
the venv not activated, PATH does not hold ``colbert-pipeline`` and a stage that had to run failed with
"colbert-pipeline: command not found" (exit 127). dvc.yaml's commands fall back to the project's ``.venv``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.workspace import make_workspace

pytestmark = pytest.mark.slow

VENV = Path(sys.executable).parent.parent
#: A login shell's PATH without the venv: what a user who has not activated it has.
BARE_PATH = "/usr/bin:/bin"


def documented_repro(workspace: Path, *targets: str) -> subprocess.CompletedProcess:
    """``.venv/bin/dvc repro`` in ``workspace`` with only HOME and a PATH that lacks the venv."""
    return subprocess.run(
        [".venv/bin/dvc", "repro", *targets],
        cwd=workspace,
        env={"HOME": os.environ.get("HOME", str(workspace)), "PATH": BARE_PATH},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def test_a_changed_stage_runs_with_the_venv_off_path(tmp_path: Path) -> None:
    if not (VENV / "bin" / "dvc").is_file():
        pytest.skip(f"the tests do not run from the project's venv ({VENV} has no bin/dvc)")
    assert not any((Path(folder) / "colbert-pipeline").exists() for folder in BARE_PATH.split(":"))
    workspace = make_workspace(tmp_path / "clone")
    (workspace / ".venv").symlink_to(VENV)  # where `make install` puts it in a clone (git ignores it)

    first = documented_repro(workspace, "prepare")
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-2000:]
    assert "Running stage 'prepare'" in first.stdout
    before = _prepare_lock(workspace)

    # The README's promise: edit params.yaml, and what the change touches re-runs.
    params = yaml.safe_load((workspace / "params.yaml").read_text())
    params["prepare"]["seed"] += 1
    (workspace / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    again = documented_repro(workspace, "prepare")
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    assert "Running stage 'prepare'" in again.stdout
    after = _prepare_lock(workspace)
    assert after["params"]["params.yaml"]["prepare"]["seed"] == params["prepare"]["seed"]
    assert after["outs"] != before["outs"]  # another seed, other training rows: the stage really ran


def _prepare_lock(workspace: Path) -> dict:
    return yaml.safe_load((workspace / "dvc.lock").read_text())["stages"]["prepare"]
