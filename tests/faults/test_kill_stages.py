"""Fault injection: every stage SIGKILLed under ``dvc repro`` at a seeded point, then recovered.

One reference ``dvc repro register`` (the DAG's six stages, tiny params) records every output (DVC hashes,
and the metrics' values: tests/faults/outputs.py). Then each stage is re-run with ``dvc repro --force
--single-item <stage>`` in its own process group, and the whole group (DVC and the stage) is SIGKILLed at one
of three points, drawn per stage from a seeded shuffle so that each point is hit twice:

- ``early``: a seeded 0.3-2 s after the stage's own code started (its imports, loading its inputs);
- ``write``: inside the stage's first atomic write (half a file, or a whole temporary folder, on disk);
- ``rename``: just before that write's rename (for a folder: the old one already moved aside).

``write`` and ``rename`` are exact: the stage kills its own group there (``COLBERT_PIPELINE_FAULT``, see
:func:`pipeline.project.io.fault_point`). Every kill is checked to have landed inside the stage: the stage
runner writes a marker file once the stage's code runs (``COLBERT_PIPELINE_STAGE_STARTED``), and a kill
without it would be ``dvc repro`` still starting, which tests DVC's recovery, not the stage's (the table
would say so, and the test fails). Each time, no process of the group survives, and the next ``dvc repro
register`` completes without a lock error and leaves outputs equal to the reference's: the same DVC hashes
(every output here is deterministic on CPU) and the same metric values, timings left out by name. The table
and its counts are what the test observed.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from pipeline.project.io import FAULT_ENV, STARTED_ENV
from pipeline.project.layout import STAGES
from tests.faults.outputs import differences, record
from tests.workspace import make_workspace, run, workspace_env

pytestmark = [pytest.mark.slow, pytest.mark.faults]

SEED = 20261128
POINTS = ("early", "write", "rename")
EARLY_WINDOW = (0.3, 2.0)
TARGET = "register"  # the last stage of the DAG: `dvc repro register` runs the six, not quality/report
STARTUP = "DVC start-up (no marker)"  # what a kill before the stage's code ran is labelled


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
def reference(module_tmp_path: Path) -> tuple[Path, dict[str, Any], dict[str, str]]:
    root = module_tmp_path
    workspace = make_workspace(root / "project")
    env = workspace_env(f"sqlite:///{root / 'mlruns.db'}", workspace)
    env.pop(FAULT_ENV, None)
    env.pop(STARTED_ENV, None)
    run(["dvc", "repro", TARGET], workspace, env, timeout=1200)
    return workspace, record(workspace), env


def test_schedule_hits_every_point_in_every_stage_order():
    drawn = schedule()
    assert [stage for stage, _, _ in drawn] == list(STAGES)
    assert sorted(point for _, point, _ in drawn) == sorted(POINTS * (len(STAGES) // len(POINTS)))


@dataclass
class Fault:
    """One seeded kill and what the test saw of it and of the recovery after it."""

    stage: str
    point: str
    killed: bool = False  # the process group ended by SIGKILL
    outcome: str = ""  # "killed", or how it ended instead
    in_stage: bool = False  # the stage's marker was there when the group died
    recovery_code: int | None = None  # the next `dvc repro register`'s exit status
    recovery_error: str = ""
    differences: list[str] = field(default_factory=list)  # outputs unlike the reference's

    @property
    def recovered(self) -> bool:
        return self.recovery_code == 0 and not self.differences


def _kill_after_start(process: subprocess.Popen, marker: Path, delay: float) -> None:
    """SIGKILL the group ``delay`` seconds after the stage's marker appears (the machine or worker dies)."""
    deadline = time.monotonic() + 600  # bounded: a DVC that never starts the stage is killed all the same
    while not marker.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        process.wait(delay)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)


def _inject(workspace: Path, env: dict[str, str], fault: Fault, delay: float, marker: Path) -> None:
    marker.unlink(missing_ok=True)
    fault_env = {**env, STARTED_ENV: str(marker)}
    if fault.point != "early":
        fault_env[FAULT_ENV] = fault.point
    process = subprocess.Popen(
        ["dvc", "repro", "--force", "--single-item", fault.stage],
        cwd=workspace,
        env=fault_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    if fault.point == "early":
        _kill_after_start(process, marker, delay)
    returncode = process.wait(900)
    fault.killed = returncode == -signal.SIGKILL
    fault.outcome = "killed" if fault.killed else f"exit {returncode}"
    fault.in_stage = marker.is_file() and marker.read_text() == fault.stage  # written before any kill point
    deadline = time.monotonic() + 10
    while group_alive(process.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not group_alive(process.pid), f"{fault.stage}: processes survived the kill"


def test_a_stage_killed_anywhere_recovers_to_the_same_outputs(reference) -> None:
    workspace, expected, env = reference
    marker = workspace.parent / "stage-started"  # outside the workspace: neither git's nor DVC's
    faults = []
    for stage, point, delay in schedule():
        fault = Fault(stage, point)
        faults.append(fault)
        _inject(workspace, env, fault, delay, marker)
        recovered = subprocess.run(
            ["dvc", "repro", TARGET], cwd=workspace, env=env, capture_output=True, text=True, timeout=1200
        )
        fault.recovery_code = recovered.returncode
        fault.recovery_error = recovered.stderr[-2000:]
        fault.differences = differences(expected, record(workspace)) if recovered.returncode == 0 else []
        if not (fault.killed and fault.in_stage and fault.recovered):
            break  # the workspace is not the reference's any more: later rows would not mean anything

    print("\nstage      point    what happened   where the kill landed      recovered identical")
    for fault in faults:
        where = "inside the stage (marker)" if fault.in_stage else STARTUP
        print(f"{fault.stage:<10} {fault.point:<8} {fault.outcome:<15} {where:<26} {fault.recovered}")
    killed = [fault for fault in faults if fault.killed]
    print(
        f"faults injected {len(killed)} ({sum(f.in_stage for f in killed)} inside their stage), "
        f"recovered {sum(f.recovered for f in killed)}, lost {sum(not f.recovered for f in faults)}"
    )
    for fault in faults:
        label = f"{fault.stage} @ {fault.point}"
        assert fault.killed, f"{label}: {fault.outcome}: every kill must land while its stage runs"
        assert fault.in_stage, f"{label}: killed before the stage's code ran ({STARTUP})"
        assert fault.recovery_code == 0, f"{label}: {fault.recovery_error}"
        assert not fault.differences, f"{label}: outputs differ from the reference's: {fault.differences}"
    assert len(faults) == len(STAGES)
