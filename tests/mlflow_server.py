"""A real ``mlflow server`` process for tests: 127.0.0.1, a free port, SQLite backend, local artifacts.

Shared by the registry tests, the Airflow DAG test and the pipeline end-to-end test, so all of them talk to a
tracking server over HTTP exactly as a deployment does (REST client, proxied artifact uploads, retries).

Used as (a server takes seconds to start, so this is not a doctest; the registry tests run it)::

    with running_mlflow_server(tmp_path) as uri:
        MlflowClient(tracking_uri=uri).search_experiments()
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

logger = logging.getLogger(__name__)

HOST = "127.0.0.1"


def free_port(host: str = HOST) -> int:
    """A TCP port nothing listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _mlflow_executable() -> str:
    local = Path(sys.executable).parent / "mlflow"
    return str(local) if local.exists() else "mlflow"


def _healthy(uri: str) -> bool:
    try:
        with urllib.request.urlopen(f"{uri}/health", timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


class MlflowServer:
    """An ``mlflow server`` process: :meth:`start` returns at once, :meth:`wait` blocks until it is healthy.

    Starting early and waiting late lets a test build its fixtures while the server boots (30-90 s on a
    busy machine). Use :func:`running_mlflow_server` unless you need that.
    """

    def __init__(self, workdir: str | os.PathLike[str]) -> None:
        self.workdir = Path(workdir).resolve()
        self.port = free_port()
        self.uri = f"http://{HOST}:{self.port}"
        self.log_path = self.workdir / "mlflow-server.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> MlflowServer:
        self.workdir.mkdir(parents=True, exist_ok=True)
        command = [
            _mlflow_executable(),
            "server",
            "--host",
            HOST,
            "--port",
            str(self.port),
            "--workers",
            "1",
            "--backend-store-uri",
            f"sqlite:///{self.workdir / 'mlflow.db'}",
            "--artifacts-destination",
            str(self.workdir / "artifacts"),
        ]
        # The job executor (huey consumers for MLflow's GenAI jobs) triples start-up time and is unused here.
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        env.pop("MLFLOW_TRACKING_URI", None)
        # Under the stage runner's supervisor, as the deploy tier's services: a test process that dies without
        # stop() (a pytest worker SIGTERMed or SIGKILLed) takes the server with it. A make test interrupted
        # on 2026-12-08 left an orphaned server, reparented to init, before this.
        supervised = [sys.executable, "-m", "pipeline.ops.runner", "--parent", str(os.getpid()), "--"]
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [*supervised, *command],
                cwd=self.workdir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: stop() ends uvicorn too
            )
        return self

    def wait(self, timeout: float = 180.0) -> str:
        """Block until ``/health`` answers; return the URI. Raises with the log's tail if it never does."""
        assert self.process is not None, "start() first"
        deadline = time.monotonic() + timeout
        while not _healthy(self.uri):
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"mlflow server exited with status {self.process.returncode}: {_tail(self.log_path)}"
                )
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"mlflow server at {self.uri} not healthy after {timeout:.0f}s: {_tail(self.log_path)}"
                )
            time.sleep(0.25)
        logger.info("mlflow server up at %s (pid %d)", self.uri, self.process.pid)
        return self.uri

    def stop(self) -> None:
        if self.process is not None:
            _stop(self.process)


@contextlib.contextmanager
def running_mlflow_server(workdir: str | os.PathLike[str], startup_timeout: float = 180.0) -> Iterator[str]:
    """Start ``mlflow server`` (SQLite ``<workdir>/mlflow.db``, ``<workdir>/artifacts``); yield its URI.

    The server binds 127.0.0.1 on a free port, runs in its own process group (stopped with SIGTERM, then
    SIGKILL, on exit) and logs to ``<workdir>/mlflow-server.log``; a server that is not healthy within
    ``startup_timeout`` seconds is an error that quotes the end of that log.
    """
    server = MlflowServer(workdir).start()
    try:
        yield server.wait(startup_timeout)
    finally:
        server.stop()


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, 15.0), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        try:
            process.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue
