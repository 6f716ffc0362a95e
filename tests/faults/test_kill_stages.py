"""Fault injection: every stage SIGKILLed under ``dvc repro`` at seeded random points, then recovered.

One reference run gives the DVC hashes of every output. Then, for each stage,
``dvc repro --force --single-item <stage>`` is started in its own process group and the whole group is
SIGKILLed after a seeded random delay (early: DVC and Python still starting; later: the stage working or
writing). The next plain ``dvc repro`` must
complete without a lock error and leave outputs whose hashes equal the reference's (every output here is
deterministic on CPU), and metrics with the same keys. What happened to each fault is printed as a table.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from pipeline.layout import STAGES
from tests.workspace import make_workspace, run, workspace_env

pytestmark = [pytest.mark.slow, pytest.mark.faults]

SEED = 20261128
#: Seconds after the start at which a stage is killed: one early point and one later, drawn per stage.
KILL_WINDOWS = ((0.5, 3.0), (4.0, 12.0))


def lock_outputs(workspace: Path) -> dict[str, str]:
    stages = yaml.safe_load((workspace / "dvc.lock").read_text())["stages"]
    return {out["path"]: out["md5"] for stage in stages.values() for out in stage.get("outs") or []}


def metric_keys(workspace: Path) -> dict[str, list[str]]:
    return {p.name: sorted(json.loads(p.read_text())) for p in sorted((workspace / "metrics").glob("*.json"))}


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> tuple[Path, dict[str, str], dict[str, list[str]], dict[str, str]]:
    root = tmp_path_factory.mktemp("faults")
    workspace = make_workspace(root / "project")
    env = workspace_env(f"sqlite:///{root / 'mlruns.db'}", workspace)
    run(["dvc", "repro"], workspace, env, timeout=1500)
    return workspace, lock_outputs(workspace), metric_keys(workspace), env


def test_a_stage_killed_anywhere_recovers_to_the_same_outputs(reference) -> None:
    workspace, expected_outputs, expected_metrics, env = reference
    rng = random.Random(SEED)
    rows = []
    for stage in STAGES:
        for window in KILL_WINDOWS:
            delay = round(rng.uniform(*window), 2)
            process = subprocess.Popen(
                ["dvc", "repro", "--force", "--single-item", stage],
                cwd=workspace,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
            time.sleep(delay)
            finished_first = process.poll() is not None
            if not finished_first:
                os.killpg(process.pid, signal.SIGKILL)  # the machine or the worker dies: everything at once
            process.wait(30)
            deadline = time.monotonic() + 10
            while group_alive(process.pid) and time.monotonic() < deadline:
                time.sleep(0.1)
            assert not group_alive(process.pid), f"{stage}: processes survived the kill"
            recovered = subprocess.run(
                ["dvc", "repro"], cwd=workspace, env=env, capture_output=True, text=True, timeout=1500
            )
            same = recovered.returncode == 0 and lock_outputs(workspace) == expected_outputs
            same = same and metric_keys(workspace) == expected_metrics
            rows.append((stage, delay, "finished first" if finished_first else "killed", same))
            assert recovered.returncode == 0, f"{stage} @ {delay}s: {recovered.stderr[-2000:]}"
            assert lock_outputs(workspace) == expected_outputs, f"{stage} @ {delay}s: outputs differ"
            assert metric_keys(workspace) == expected_metrics, f"{stage} @ {delay}s: metrics differ"
    killed = [row for row in rows if row[2] == "killed"]
    print("\nstage      kill at  what happened   recovered identical")
    for stage, delay, what, same in rows:
        print(f"{stage:<10} {delay:>6.2f}s  {what:<15} {same}")
    lost = sum(not row[3] for row in rows)
    print(f"faults injected {len(killed)}, recovered {sum(row[3] for row in killed)}, lost {lost}")
    assert len(killed) >= len(STAGES), "most kills must land while the stage runs"
