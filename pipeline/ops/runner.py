"""Run a stage command in a child process group that never outlives the process that started it.

The command runs under a small supervisor (``python -m pipeline.ops.runner --parent PID -- COMMAND``) that
leads a new process group: the command and everything it starts (``dvc repro`` → ``colbert-pipeline <stage>``
→ data loader workers) share that group. The supervisor polls its parent and the runner's two nearest
ancestors (on Linux, by pid and start time); when one is gone (an Airflow worker SIGKILLed, an OOM kill), it
stops the whole group (SIGTERM, then SIGKILL), so no stage keeps running or keeps DVC's workspace lock. The
ancestors matter because Airflow runs a task in a process of its own session: when the Celery worker above it
is killed, that task process lives on, and only the worker's death says the stage has lost its owner. Only two
levels: further up sit launchers (a shell that started a worker in the background) whose exit must not stop a
stage. On Linux it also asks the kernel for ``SIGTERM`` on the parent's death (``PR_SET_PDEATHSIG``), which
wakes it at once instead of at its next poll.

Processes are read through psutil (parents, creation times, zombies, the members of a group), which covers
Linux and macOS alike. ``PR_SET_PDEATHSIG`` stays a ``prctl`` call through ctypes: psutil has no equivalent
(it reads processes; it does not set a process's own kernel attributes).

Output is read as bytes and split on newlines only: a progress bar's carriage-return refreshes are folded, so
a log gets one progress line per ``progress_seconds`` (and the last one), not one per refresh.

Example:
    >>> lines = []
    >>> run_process([sys.executable, "-c", "print('hello'); print('world')"], emit=lines.append).returncode
    0
    >>> lines
    ['hello', 'world']
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import ctypes
import dataclasses
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import psutil

from pipeline.project.errors import InfrastructureError

logger = logging.getLogger(__name__)

#: How often the supervisor checks that its parent is alive.
POLL_SECONDS = 0.5
#: After SIGTERM, how long the group gets before SIGKILL.
GRACE_SECONDS = 10.0
_PR_SET_PDEATHSIG = 1


class OwnerGone(InfrastructureError):
    """A process that owns a command (an Airflow worker above the task) died before the command started."""


@dataclasses.dataclass(frozen=True)
class ProcessResult:
    """Exit status, the last lines of output, and the wall time of one supervised command."""

    returncode: int
    tail: list[str]
    seconds: float


def run_process(
    command: Sequence[str],
    *,
    cwd: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    emit: Callable[[str], None] | None = None,
    tail_lines: int = 200,
    progress_seconds: float = 10.0,
    grace_seconds: float = 30.0,
    owners: Sequence[tuple[int, str]] | None = None,
) -> ProcessResult:
    """Run ``command`` under the supervisor, streaming its output lines to ``emit``.

    If this call is interrupted (an Airflow ``execution_timeout`` raises into it, or Ctrl-C), the child's
    whole process group gets SIGTERM, then SIGKILL after ``grace_seconds``. If this *process* dies, the
    supervisor does the same by itself.

    ``owners`` are the processes whose death also stops the command: by default this process's two nearest
    ancestors as they are now. A caller that did other work first passes the ones it captured when it began
    (:func:`ancestors`): an owner that died in between (this process was orphaned, so its ancestors *now*
    would say nothing) raises :class:`OwnerGone` and nothing starts.
    """
    emit = emit or (lambda line: logger.info("%s", line))
    owners = ancestors(os.getpid()) if owners is None else list(owners)
    gone = _ended(owners)
    if gone:
        raise OwnerGone(
            f"not starting {' '.join(command[:3])} ...: the process(es) that own it ended "
            f"(pid {', '.join(map(str, gone))}), so nobody would wait for its result"
        )
    watched = ",".join(f"{pid}:{start}" for pid, start in owners)
    supervised = [sys.executable, "-m", "pipeline.ops.runner", "--parent", str(os.getpid())]
    supervised += [*(["--watch", watched] if watched else []), "--", *command]
    child_env = dict(env if env is not None else os.environ)
    # The supervisor must import this package even when the command runs elsewhere.
    package_root = str(Path(__file__).resolve().parents[2])
    child_env["PYTHONPATH"] = os.pathsep.join(filter(None, [child_env.get("PYTHONPATH"), package_root]))
    started = time.monotonic()
    tail: collections.deque[str] = collections.deque(maxlen=tail_lines)
    process = subprocess.Popen(
        supervised,
        cwd=cwd,
        env=child_env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        # The supervisor leads a new process group: stopping the group stops everything it started.
        start_new_session=True,
    )
    try:
        assert process.stdout is not None
        for line in _lines(process.stdout, progress_seconds):
            tail.append(line)
            emit(line)
        returncode = process.wait()
    except BaseException:
        stop_group(process.pid, grace_seconds)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=grace_seconds + 5)
        raise
    return ProcessResult(returncode=returncode, tail=list(tail), seconds=round(time.monotonic() - started, 3))


def _lines(stream: object, progress_seconds: float):
    """Decoded output lines; carriage-return refreshes are emitted at most once per ``progress_seconds``."""
    buffer = b""
    last_progress = 0.0
    pending_progress: str | None = None
    read = stream.read1  # type: ignore[attr-defined]
    while True:
        chunk = read(65536)
        if not chunk:
            break
        buffer += chunk
        *complete, buffer = buffer.split(b"\n")
        for raw in complete:
            # A line that had refreshes keeps only its final state (tqdm's last write before the newline).
            text = raw.rsplit(b"\r", 1)[-1].decode("utf-8", "replace").rstrip()
            pending_progress = None
            yield text
        if b"\r" in buffer:
            # A progress bar refreshing in place: remember its latest state; show it now and then.
            latest = buffer.rstrip(b"\r").rsplit(b"\r", 1)[-1].decode("utf-8", "replace").strip()
            buffer = latest.encode()
            now = time.monotonic()
            if latest and now - last_progress >= progress_seconds:
                last_progress = now
                pending_progress = None
                yield latest
            else:
                pending_progress = latest or pending_progress
    rest = buffer.rsplit(b"\r", 1)[-1].decode("utf-8", "replace").rstrip()
    if rest:
        yield rest
    elif pending_progress:
        yield pending_progress


def stop_group(pgid: int, grace_seconds: float = GRACE_SECONDS) -> None:
    """SIGTERM the process group ``pgid``, then SIGKILL it if anything is left after ``grace_seconds``."""
    for sig, wait in ((signal.SIGTERM, grace_seconds), (signal.SIGKILL, 0.0)):
        try:
            os.killpg(pgid, sig)
        except (ProcessLookupError, PermissionError):
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not group_alive(pgid):
                return
            time.sleep(0.1)


def group_alive(pgid: int) -> bool:
    """Whether any process of group ``pgid`` is still running (zombies do not count)."""
    for process in psutil.process_iter():
        try:
            if os.getpgid(process.pid) == pgid and process.status() != psutil.STATUS_ZOMBIE:
                return True
        except (psutil.Error, ProcessLookupError, PermissionError):
            continue  # gone meanwhile, or not ours to look at
    return False


def _start_time(pid: int) -> str | None:
    """The creation time of ``pid`` as text; None when gone or a zombie.

    With the pid it names one process: a pid reused by a new process has another creation time (psutil's
    is the kernel's start time plus the boot time, the same number in every process that asks). A zombie has
    exited already; only its parent's ``wait`` keeps its entry (a killed worker whose parent is slow to reap
    it, seen under load), so it counts as gone.
    """
    try:
        process = psutil.Process(pid)
        if process.status() in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD):
            return None
        return repr(process.create_time())
    except psutil.Error:
        return None


def _ended(watched: Sequence[tuple[int, str]]) -> list[int]:
    """The pids of ``watched`` (pid, start time) that no longer run: gone, or reused by another process."""
    return [pid for pid, start in watched if _start_time(pid) != start]


def ancestors(pid: int, depth: int = 2) -> list[tuple[int, str]]:
    """``(pid, start time)`` of the ``depth`` nearest ancestors of ``pid``, never pid 1."""
    chain: list[tuple[int, str]] = []
    try:
        parents = psutil.Process(pid).parents()
    except psutil.Error:
        return chain
    for parent in parents:
        if parent.pid <= 1 or len(chain) >= depth:
            break
        start = _start_time(parent.pid)
        if start is None:
            break
        chain.append((parent.pid, start))
    return chain


def _set_parent_death_signal(sig: int) -> None:
    # psutil has no way to set this (it only reads processes): the kernel's prctl, where there is one.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0)


def supervise(parent: int, command: Sequence[str], watched: Sequence[tuple[int, str]] = ()) -> int:
    """The supervisor's body: run ``command`` in this process group; stop the group if ``parent`` dies, or
    any of ``watched`` (the runner's ancestors, by pid and start time)."""
    parent_gone = False

    def on_parent_death(signum: int, frame: object) -> None:
        nonlocal parent_gone
        parent_gone = True

    def owner_lost() -> bool:
        return os.getppid() != parent or bool(_ended(watched))

    signal.signal(signal.SIGTERM, on_parent_death)
    _set_parent_death_signal(signal.SIGTERM)
    if owner_lost():
        return 128 + signal.SIGTERM  # the owner died while this supervisor started: start nothing
    child = subprocess.Popen(list(command))
    while True:
        if owner_lost():
            parent_gone = True
        if parent_gone:
            # The runner is gone: nobody reads our output or waits for the result. Stop everything we started.
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            os.killpg(os.getpgrp(), signal.SIGTERM)
            deadline = time.monotonic() + GRACE_SECONDS
            while child.poll() is None and time.monotonic() < deadline:
                time.sleep(0.1)
            os.killpg(os.getpgrp(), signal.SIGKILL)  # includes this process: nothing of the stage is left
        try:
            code = child.wait(timeout=POLL_SECONDS)
        except subprocess.TimeoutExpired:
            continue
        return 128 - code if code < 0 else code  # killed by signal N: the shell's 128 + N


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.ops.runner", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--parent", type=int, required=True, help="pid whose death stops the command")
    parser.add_argument("--watch", default="", help="PID:STARTTIME,... whose death also stops it")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND [ARGS...]")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command given")
    watched = [
        (int(pid), start) for pid, _, start in (item.partition(":") for item in args.watch.split(",") if item)
    ]
    return supervise(args.parent, command, watched)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
