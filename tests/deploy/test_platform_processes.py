"""The deploy tier's services never outlive the process that started them, even one killed outright.

A test run stopped with SIGTERM or SIGKILL (a CI timeout, a killed terminal) runs no fixture finaliser, so
``Platform.stop`` never comes; the services must stop by themselves. Here a stand-in service (``sleep``) is
started by ``deploy_platform.Process`` in a child process, which is then SIGKILLed.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

REPO = Path(__file__).resolve().parents[2]


def _group(leader: int) -> list[psutil.Process]:
    members = []
    for proc in psutil.process_iter(["pid"]):
        try:
            if os.getpgid(proc.pid) == leader:
                members.append(proc)
        except (ProcessLookupError, psutil.Error):
            continue
    return members


def _kill_starter_once_up(starter: str, up: Callable[[psutil.Process], bool], never: str) -> None:
    """Run ``starter`` (Python that starts a service and prints its group's leader), SIGKILL it once a
    member of that group is ``up``, and assert the whole group ends within 20 s."""
    process = subprocess.Popen([sys.executable, "-c", starter], stdout=subprocess.PIPE, text=True)
    leader = None
    try:
        assert process.stdout is not None
        leader = int(process.stdout.readline())
        deadline = time.monotonic() + 60
        while not any(up(p) for p in _group(leader) if p.is_running()):
            assert time.monotonic() < deadline, never
            time.sleep(0.2)
        members = _group(leader)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
        _gone, alive = psutil.wait_procs(members, timeout=20)
        assert not alive, f"outlived their starter: {[(p.pid, p.name()) for p in alive]}"
    finally:
        process.kill()
        if leader is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(leader, signal.SIGKILL)


@pytest.mark.parametrize("as_user", [False, True], ids=["as-this-user", "as-another-user"])
def test_a_service_stops_when_the_process_that_started_it_is_killed(tmp_path, as_user):
    ids = ""
    if as_user:  # PostgreSQL's path: Popen switches user, so the kernel's parent-death signal stops it
        if os.geteuid() != 0:
            pytest.skip("switching user needs root (CI and `make test` run as root)")
        nobody = pwd.getpwnam("nobody")
        ids = f", user={nobody.pw_uid}, group={nobody.pw_gid}, extra_groups=[]"
    starter = textwrap.dedent(
        f"""
        import os, signal, sys, time
        from pathlib import Path
        sys.path.insert(0, {str(REPO)!r})
        # as in a long test session, where earlier code may leave SIGINT ignored (inherited across exec)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        from tests.deploy.deploy_platform import Process
        service = Process(
            "sleeper", ["sleep", "600"], dict(os.environ), Path({str(tmp_path / "sleeper.log")!r}),
            Path("/"){ids},
        ).start()
        print(service.pid, flush=True)
        time.sleep(600)
        """
    )
    _kill_starter_once_up(starter, lambda p: p.name() == "sleep", "the stand-in service never started")


def test_the_tests_mlflow_server_stops_when_the_process_that_started_it_is_killed(tmp_path):
    """tests/mlflow_server.py's server (the registry, DAG and end-to-end tests' tracking server) too: an
    interrupted ``make test`` once left one running, reparented to init."""
    starter = textwrap.dedent(
        f"""
        import sys, time
        sys.path.insert(0, {str(REPO)!r})
        from tests.mlflow_server import MlflowServer
        server = MlflowServer({str(tmp_path / "mlflow")!r}).start()
        print(server.process.pid, flush=True)
        time.sleep(600)
        """
    )
    # uvicorn: the server mlflow's command starts, the process that was left behind
    _kill_starter_once_up(starter, lambda p: "uvicorn" in " ".join(p.cmdline()), "the server never started")
