"""Fault injection: every stage SIGKILLed under ``dvc repro`` at a seeded point, then recovered.

One reference ``dvc repro register`` (the DAG's six stages, tiny params) gives the DVC hashes of every output.
Then each stage is re-run with ``dvc repro --force --single-item <stage>`` in its own process group, and the
whole group (DVC and the stage) is SIGKILLed at one of three points, drawn per stage from a seeded shuffle so
that each point is hit twice:

- ``early``: after a seeded delay of 0.3-2 s, while DVC and Python are still starting;
- ``write``: inside the stage's first atomic write (half a file, or a whole temporary folder, on disk);
- ``rename``: just before that write's rename (for a folder: the old one already moved aside).

``write`` and ``rename`` are exact: the stage kills its own group there (``COLBERT_PIPELINE_FAULT``, see
:func:`pipeline.project.io.fault_point`). Each time, no process of the group survives, and the next
``dvc repro register`` completes without a lock error and leaves outputs whose DVC hashes equal the
reference's (every output here is deterministic on CPU) and metrics with the same keys. It prints the counts.
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

from pipeline.project.io import FAULT_ENV
from pipeline.project.layout import STAGES
from tests.workspace import make_workspace, run, workspace_env

pytestmark = [pytest.mark.slow, pytest.mark.faults]

SEED = 20261128
POINTS = ("early", "write", "rename")
EARLY_WINDOW = (0.3, 2.0)
TARGET = "register"  # the last stage of the DAG: `dvc repro register` runs the six, not quality/report


def lock_outputs(workspace: Path) -> dict[str, str]:
    stages = yaml.safe_load((workspace / "dvc.lock").read_text())["stages"]
    return {out["path"]: out["md5"] for stage in stages.values() for out in stage.get("outs") or []}


def metric_keys(workspace: Path) -> dict[str, list[str]]:
    """Each metrics file's keys (of a list of rows, e.g. comparison.json: every row's keys)."""

    def keys(data: dict | list) -> list[str]:
        return sorted(data) if isinstance(data, dict) else sorted({key for row in data for key in row})

    return {p.name: keys(json.loads(p.read_text())) for p in sorted((workspace / "metrics").glob("*.json"))}


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def schedule(seed: int = SEED) -> list[tuple[str, str, float]]:
    """(stage, point, early delay) per stage: each point twice over the six stages, in a seeded order."""
    rng = random.Random(seed)
    points = [POINTS[i % len(POINTS)] for i in range(len(STAGES))]
    rng.shuffle(points)
    return [
        (stage, point, round(rng.uniform(*EARLY_WINDOW), 2))
        for stage, point in zip(STAGES, points, strict=True)
    ]


@pytest.fixture(scope="module")
def reference(module_tmp_path: Path) -> tuple[Path, dict[str, str], dict[str, list[str]], dict[str, str]]:
    root = module_tmp_path
    workspace = make_workspace(root / "project")
    env = workspace_env(f"sqlite:///{root / 'mlruns.db'}", workspace)
    env.pop(FAULT_ENV, None)
    run(["dvc", "repro", TARGET], workspace, env, timeout=1200)
    return workspace, lock_outputs(workspace), metric_keys(workspace), env


def test_schedule_hits_every_point_in_every_stage_order():
    drawn = schedule()
    assert [stage for stage, _, _ in drawn] == list(STAGES)
    assert sorted(point for _, point, _ in drawn) == sorted(POINTS * (len(STAGES) // len(POINTS)))


def test_a_stage_killed_anywhere_recovers_to_the_same_outputs(reference) -> None:
    workspace, expected_outputs, expected_metrics, env = reference
    rows = []
    for stage, point, delay in schedule():
        fault_env = dict(env) if point == "early" else {**env, FAULT_ENV: point}
        process = subprocess.Popen(
            ["dvc", "repro", "--force", "--single-item", stage],
            cwd=workspace,
            env=fault_env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        if point == "early":
            try:
                process.wait(delay)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)  # the machine or the worker dies: everything at once
        returncode = process.wait(900)
        killed = returncode == -signal.SIGKILL
        deadline = time.monotonic() + 10
        while group_alive(process.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not group_alive(process.pid), f"{stage}: processes survived the kill"
        recovered = subprocess.run(
            ["dvc", "repro", TARGET], cwd=workspace, env=env, capture_output=True, text=True, timeout=1200
        )
        same = recovered.returncode == 0 and lock_outputs(workspace) == expected_outputs
        same = same and metric_keys(workspace) == expected_metrics
        rows.append((stage, point, "killed" if killed else f"exit {returncode}", same))
        assert recovered.returncode == 0, f"{stage} @ {point}: {recovered.stderr[-2000:]}"
        assert lock_outputs(workspace) == expected_outputs, f"{stage} @ {point}: outputs differ"
        assert metric_keys(workspace) == expected_metrics, f"{stage} @ {point}: metrics differ"
    killed = [row for row in rows if row[2] == "killed"]
    print("\nstage      point    what happened   recovered identical")
    for stage, point, what, same in rows:
        print(f"{stage:<10} {point:<8} {what:<15} {same}")
    lost = sum(not row[3] for row in rows)
    print(f"faults injected {len(killed)}, recovered {sum(row[3] for row in killed)}, lost {lost}")
    assert len(killed) == len(rows), f"every kill must land while its stage runs: {rows}"
