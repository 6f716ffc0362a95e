"""The supervised stage process: it never outlives its runner, and progress bars do not flood the log."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from pipeline.ops import runner


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


def _wait_for(path: Path, seconds: float = 60) -> str:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().strip():
            return path.read_text().strip()
        time.sleep(0.1)
    raise AssertionError(f"{path} never appeared")


def test_sigkill_of_the_runner_stops_the_whole_stage_group(tmp_path: Path) -> None:
    """A runner SIGKILLed (an Airflow worker killed, an OOM kill) takes its stage and the stage's children."""
    pids = tmp_path / "pids"
    stage = tmp_path / "stage.py"
    stage.write_text(
        textwrap.dedent(
            f"""
            import os, subprocess, time
            child = subprocess.Popen(["sleep", "300"])
            open({str(pids)!r}, "w").write(f"{{os.getpid()}} {{child.pid}}")
            time.sleep(300)
            """
        )
    )
    runner_script = tmp_path / "runner.py"
    runner_script.write_text(
        "import sys\nfrom pipeline.ops.runner import run_process\n"
        f"run_process([sys.executable, {str(stage)!r}])\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(runner.__file__).resolve().parents[2])}
    process = subprocess.Popen([sys.executable, str(runner_script)], env=env)
    try:
        stage_pid, grandchild = (int(p) for p in _wait_for(pids).split())
        assert _alive(stage_pid) and _alive(grandchild)
        process.send_signal(signal.SIGKILL)
        process.wait(10)
        deadline = time.monotonic() + 20
        while (_alive(stage_pid) or _alive(grandchild)) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(stage_pid), "the stage outlived its runner"
        assert not _alive(grandchild), "the stage's own child outlived the runner"
    finally:
        process.kill()


def test_a_killed_worker_above_a_surviving_task_process_stops_the_stage(tmp_path: Path) -> None:
    """Airflow's shape: a worker starts a task process in a session of its own, which calls the runner. The
    worker SIGKILLed leaves the task process alive (nothing kills it), so only the worker's death can say the
    stage lost its owner: the supervisor watches the runner's ancestors too."""
    pids = tmp_path / "pids"
    stage = tmp_path / "stage.py"
    stage.write_text(f"import os, time\nopen({str(pids)!r}, 'w').write(str(os.getpid()))\ntime.sleep(300)\n")
    task = tmp_path / "task.py"  # the task process: calls the runner, survives the worker
    task.write_text(
        "import sys\nfrom pipeline.ops.runner import run_process\n"
        f"run_process([sys.executable, {str(stage)!r}])\n"
    )
    worker = tmp_path / "worker.py"  # the worker: starts the task in a new session, then waits
    worker.write_text(
        "import subprocess, sys, time\n"
        f"task = subprocess.Popen([sys.executable, {str(task)!r}], start_new_session=True)\n"
        f"open({str(tmp_path / 'task.pid')!r}, 'w').write(str(task.pid))\n"
        "time.sleep(300)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(runner.__file__).resolve().parents[2])}
    process = subprocess.Popen([sys.executable, str(worker)], env=env)
    task_pid = None
    try:
        stage_pid = int(_wait_for(pids))
        task_pid = int(_wait_for(tmp_path / "task.pid"))
        process.send_signal(signal.SIGKILL)  # the worker only: its task process lives on
        process.wait(10)
        deadline = time.monotonic() + 20
        while _alive(stage_pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(stage_pid), "the stage outlived the worker its task process ran under"
    finally:
        process.kill()
        if task_pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(task_pid, signal.SIGKILL)


def test_a_task_orphaned_before_its_stage_starts_starts_nothing(tmp_path: Path) -> None:
    """The CI race: the worker is killed while the task process is busy before the stage (``dvc status``).
    The task process lives on, orphaned; its ancestors taken *now* no longer name the worker, so the owners
    it captured when it began decide, and the stage never starts."""
    stage = tmp_path / "stage.py"
    started = tmp_path / "started"
    stage.write_text(f"open({str(started)!r}, 'w').write('yes')\n")
    outcome = tmp_path / "outcome"
    task = tmp_path / "task.py"
    task.write_text(
        textwrap.dedent(
            f"""
            import os, sys, time
            from pipeline.ops import runner
            owners = runner.ancestors(os.getpid())
            open({str(tmp_path / "captured")!r}, "w").write(repr(owners))
            while os.getppid() != 1 and runner._start_time(owners[0][0]) == owners[0][1]:
                time.sleep(0.05)  # busy elsewhere until the worker is gone
            try:
                runner.run_process([sys.executable, {str(stage)!r}], owners=owners, emit=lambda line: None)
                message = "started"
            except runner.OwnerGone as error:
                message = f"{{error.kind}}: {{error}}"
            open({str(outcome)!r}, "w").write(message)
            """
        )
    )
    worker = tmp_path / "worker.py"
    worker.write_text(
        "import subprocess, sys, time\n"
        f"subprocess.Popen([sys.executable, {str(task)!r}], start_new_session=True)\n"
        "time.sleep(300)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(runner.__file__).resolve().parents[2])}
    process = subprocess.Popen([sys.executable, str(worker)], env=env)
    try:
        captured = _wait_for(tmp_path / "captured")
        assert str(process.pid) in captured, captured  # the worker is one of the owners
        process.send_signal(signal.SIGKILL)
        process.wait(10)
        message = _wait_for(outcome)
        assert message.startswith("infrastructure: not starting") and str(process.pid) in message, message
        assert not started.exists(), "the stage ran although its worker was gone"
    finally:
        process.kill()


def test_exit_status_and_signals_come_back(tmp_path: Path) -> None:
    assert (
        runner.run_process([sys.executable, "-c", "raise SystemExit(7)"], emit=lambda line: None).returncode
        == 7
    )
    killed = runner.run_process(
        [sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"],
        emit=lambda line: None,
    )
    assert killed.returncode == 128 + signal.SIGKILL


def test_progress_refreshes_become_periodic_lines(tmp_path: Path) -> None:
    script = tmp_path / "bar.py"
    script.write_text(
        "import sys, time\n"
        "for i in range(200):\n"
        "    sys.stdout.write(f'\\rstep {i}/200'); sys.stdout.flush(); time.sleep(0.005)\n"
        "print()\nprint('done')\n"
    )
    lines: list[str] = []
    result = runner.run_process([sys.executable, str(script)], emit=lines.append, progress_seconds=3600)
    assert result.returncode == 0
    # At most one refresh shown early (when one arrives alone), then the final state: not 200 lines.
    assert lines[-2:] == ["step 199/200", "done"] and len(lines) <= 3


def test_an_interrupted_call_stops_the_group(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"

    class Interrupted(Exception):
        pass

    def emit(line: str) -> None:
        if line == "ready":
            raise Interrupted

    code = (
        f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); "
        "print('ready', flush=True); time.sleep(300)"
    )
    with pytest.raises(Interrupted):
        runner.run_process([sys.executable, "-c", code], emit=emit, grace_seconds=5)
    pid = int(pid_file.read_text())
    deadline = time.monotonic() + 15
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(pid)


def test_an_owner_that_exited_but_is_not_yet_reaped_counts_as_gone():
    """A SIGKILLed worker stays a zombie until its parent waits for it; its stat entry (and start time) stay.

    Under load the orphaned task could start its stage in that window; a zombie owner now counts as gone.
    """
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        start = runner._start_time(child.pid)
        assert start is not None and runner._ended([(child.pid, start)]) == []
        child.send_signal(signal.SIGKILL)
        deadline = time.monotonic() + 10
        while psutil.Process(child.pid).status() != psutil.STATUS_ZOMBIE and time.monotonic() < deadline:
            time.sleep(0.01)  # not reaped: no wait() yet, so the kernel keeps it as a zombie
        assert psutil.Process(child.pid).status() == psutil.STATUS_ZOMBIE
        assert runner._start_time(child.pid) is None
        assert runner._ended([(child.pid, start)]) == [child.pid]
    finally:
        child.kill()
        child.wait(10)
