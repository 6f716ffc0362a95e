"""The whole platform as local processes: PostgreSQL, Redis, MLflow, Airflow 3 on Celery, the model server.

Every Airflow and MLflow service starts through ``python -m pipeline.ops.services`` (what
``docker/compose.yaml`` runs); this module only supplies what compose's network would (addresses, ports, a
temporary folder) and the two servers compose takes from public images (PostgreSQL and Redis, here the
machine's own binaries). Everything binds 127.0.0.1 on free ports, logs to ``<root>/logs/<service>.log``,
runs in its own process group and is stopped (SIGTERM, then SIGKILL) by :meth:`Platform.stop`. Nothing
outlives the process that started it, even one killed outright (a test run stopped with SIGTERM or SIGKILL
runs no finaliser): each service runs under the stage runner's supervisor (``python -m pipeline.ops.runner
--parent PID``), which stops its group when that process dies; PostgreSQL, which runs as its own user, gets
the kernel's parent-death signal instead (SIGINT: a fast shutdown). Every wait is bounded; a service that
exits or never answers fails naming itself, with the end of its log.

Driving it is up to the caller, through public interfaces only: :class:`AirflowApi` (REST API v2 with a token
from the API server's ``/auth/token``) and MLflow's client over HTTP.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import psutil

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:  # run as a script: the repository's tests package
    sys.path.insert(0, str(REPO_ROOT))

from pipeline.ops import runner  # noqa: E402
from tests.workspace import make_workspace  # noqa: E402

HOST = "127.0.0.1"
BIN = Path(sys.executable).parent
STARTUP_TIMEOUT = 240.0


class ServiceFailed(RuntimeError):
    """A service exited or did not answer in time; the message names it and quotes its log."""


def binary(name: str) -> str | None:
    """``name`` on PATH, else Debian's PostgreSQL folder (``/usr/lib/postgresql/<version>/bin``)."""
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"), key=lambda p: p.parts[-3])
    return str(candidates[-1]) if candidates else None


def free_port() -> int:
    """A TCP port nothing listens on right now on 127.0.0.1 (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def wait_until(what: str, check: Callable[[], Any], timeout: float, interval: float = 1.0) -> Any:
    """Poll ``check`` until it returns something truthy; ``TimeoutError`` naming ``what`` when time is up."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not reached within {timeout:.0f} s")
        time.sleep(interval)


def http_json(
    method: str, url: str, body: Any = None, headers: dict[str, str] | None = None, timeout: float = 60.0
) -> tuple[int, Any]:
    """One JSON request; returns ``(status, decoded body)`` for any HTTP status."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    for key, value in (headers or {}).items():
        request.add_header(key, value)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            raw = response.read()
            status = response.status
    except urllib.error.HTTPError as error:
        raw, status = error.read(), error.code
    try:
        return status, json.loads(raw) if raw else None
    except json.JSONDecodeError:
        return status, raw.decode(errors="replace")


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=3) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _service_user() -> pwd.struct_passwd | None:
    """PostgreSQL refuses to run as root: as root, run it as ``postgres`` (or ``nobody``)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise ServiceFailed("postgres: running as root and neither a 'postgres' nor a 'nobody' user exists")


def _parent_death_signal(sig: int) -> Callable[[], None]:
    """A ``preexec_fn`` asking the kernel for ``sig`` when the starting process dies (Linux; after Popen's
    user switch, which would clear it). ``sig`` is reset to its default action first: an ignored signal
    stays ignored across exec, and pytest-xdist's workers ignore SIGINT."""

    def ask() -> None:
        signal.signal(sig, signal.SIG_DFL)
        runner._set_parent_death_signal(sig)  # the stage runner's prctl(PR_SET_PDEATHSIG)

    return ask


class Process:
    """One started service: its process group, its log, and how to tell it died."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log: Path, cwd: Path, **popen: Any):
        self.name, self.argv, self.env, self.log, self.cwd, self.popen = name, argv, env, log, cwd, popen
        self.process: subprocess.Popen[bytes] | None = None
        self.stopped = False  # stopped on purpose: no longer expected to be up

    def start(self) -> Process:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        argv, popen, env = list(self.argv), dict(self.popen), dict(self.env)
        if "user" in popen:
            # Another user cannot run this interpreter (it may live under /root): the kernel signals instead.
            popen["preexec_fn"] = _parent_death_signal(signal.SIGINT)
        else:
            argv = [sys.executable, "-m", "pipeline.ops.runner", "--parent", str(os.getpid()), "--", *argv]
            # the supervisor imports this checkout's package, whatever the service's own path
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [env.get("PYTHONPATH"), str(REPO_ROOT)]))
        with open(self.log, "ab") as stream:
            self.process = subprocess.Popen(
                argv,
                env=env,
                cwd=self.cwd,
                stdin=subprocess.DEVNULL,
                stdout=stream,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: stop() ends its children too
                **popen,
            )
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def check_alive(self) -> None:
        if not self.stopped and self.process is not None and self.process.poll() is not None:
            raise ServiceFailed(
                f"{self.name} exited with status {self.process.returncode}; "
                f"end of {self.log}:\n{tail(self.log)}"
            )

    def wait_ready(self, check: Callable[[], bool], timeout: float = STARTUP_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            self.check_alive()
            if time.monotonic() > deadline:
                raise ServiceFailed(
                    f"{self.name} did not come up within {timeout:.0f} s; "
                    f"end of {self.log}:\n{tail(self.log)}"
                )
            time.sleep(0.5)

    def group_members(self) -> list[psutil.Process]:
        """Every live process of this service's process group."""
        if self.process is None:
            return []
        members = []
        for proc in psutil.process_iter(["pid"]):
            with contextlib.suppress(psutil.Error):
                if os.getpgid(proc.pid) == self.process.pid:
                    members.append(proc)
        return members

    def kill_group(self) -> None:
        """SIGKILL the whole process group at once (a worker dying without any chance to clean up)."""
        assert self.process is not None
        self.stopped = True
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        self.stopped = True
        if self.process is None or self.process.poll() is not None:
            return
        for sig, grace in ((signal.SIGTERM, 20.0), (signal.SIGKILL, 10.0)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, sig)
            try:
                self.process.wait(timeout=grace)
                break
            except subprocess.TimeoutExpired:
                continue
        with contextlib.suppress(ProcessLookupError):  # a child that outlived its leader
            os.killpg(self.process.pid, signal.SIGKILL)


class Platform:
    """Start with :meth:`start`, always :meth:`stop` (use :func:`running_platform`)."""

    def __init__(self, root: Path | None = None, extra_env: dict[str, str] | None = None) -> None:
        self.root = Path(root or tempfile.mkdtemp(prefix="colbert-deploy-")).resolve()
        self.logs = self.root / "logs"
        self.services: dict[str, Process] = {}
        self.extra_env = dict(extra_env or {})
        self.admin_password = secrets.token_urlsafe(12)
        self.postgres_password = secrets.token_urlsafe(12)
        # One of each for every service: a task's token must verify on the API server.
        self.jwt_secret = secrets.token_urlsafe(24)
        self.api_secret = secrets.token_urlsafe(24)
        self.ports = {name: free_port() for name in ("postgres", "redis", "api", "mlflow", "serve")}
        self.api_url = f"http://{HOST}:{self.ports['api']}"
        self.mlflow_url = f"http://{HOST}:{self.ports['mlflow']}"
        self.serve_url = f"http://{HOST}:{self.ports['serve']}"
        self.workspace = self.root / "workspace"
        self._pg_dir: Path | None = None

    # -- the environment every service gets: what compose's `environment:` blocks give its containers ----
    def env(self, **extra: str) -> dict[str, str]:
        env = {
            **os.environ,
            "COLBERT_PIPELINE_BIND_HOST": HOST,
            "COLBERT_PIPELINE_POSTGRES_HOST": HOST,
            "COLBERT_PIPELINE_POSTGRES_PORT": str(self.ports["postgres"]),
            "COLBERT_PIPELINE_POSTGRES_PASSWORD": self.postgres_password,
            "COLBERT_PIPELINE_MLFLOW_DB_PASSWORD": self.postgres_password + "-m",
            "COLBERT_PIPELINE_REDIS_URL": f"redis://{HOST}:{self.ports['redis']}/0",
            "COLBERT_PIPELINE_AIRFLOW_API_URL": self.api_url,
            "AIRFLOW__API__PORT": str(self.ports["api"]),
            "COLBERT_PIPELINE_MLFLOW_PORT": str(self.ports["mlflow"]),
            "MLFLOW_TRACKING_URI": self.mlflow_url,
            "COLBERT_PIPELINE_MLFLOW_ARTIFACTS": str(self.root / "mlflow-artifacts"),
            "COLBERT_PIPELINE_SERVE_PORT": str(self.ports["serve"]),
            "COLBERT_PIPELINE_ADMIN_PASSWORD": self.admin_password,
            "AIRFLOW__API_AUTH__JWT_SECRET": self.jwt_secret,
            "AIRFLOW__API__SECRET_KEY": self.api_secret,
            "AIRFLOW_HOME": str(self.root / "airflow-home"),
            "AIRFLOW__CORE__DAGS_FOLDER": str(REPO_ROOT / "dags"),
            "COLBERT_PIPELINE_WORKSPACE": str(self.workspace),
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "HF_DATASETS_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false",
            # No DAG file changes while a test platform runs: re-parsing every file each 30 s (Airflow's
            # default) cost the dag-processor 8 CPU-seconds in every 2 idle minutes, taken from the runs.
            "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "600",
            **self.extra_env,
            **extra,
        }
        for name in ("COLBERT_PIPELINE_HOSTNAME", "PYTEST_CURRENT_TEST"):
            if name not in extra:
                env.pop(name, None)
        return env

    def _service(self, name: str, args: list[str], cwd: Path | None = None, **env: str) -> Process:
        process = Process(
            name,
            [sys.executable, "-m", "pipeline.ops.services", *args],
            self.env(**env),
            self.logs / f"{name}.log",
            cwd or self.root,
        ).start()
        self.services[name] = process
        return process

    # -- what a variant of the platform changes (tests/deploy/stateless_platform.py) -----------------------
    #: Each worker's queue (its name: ``worker-<queue>``) and the queues it serves; and its tasks at once
    #: (``--concurrency``; 1 where not named).
    WORKERS: ClassVar[dict[str, str]] = {"default": "default", "gpu": "gpu"}
    CONCURRENCY: ClassVar[dict[str, int]] = {}

    def prepare_code(self) -> None:
        """The code the stages run: here one workspace, shared by every worker."""
        make_workspace(self.workspace, overrides={})  # a fresh git + DVC checkout of this change

    def service_env(self, name: str) -> dict[str, str]:
        """What service ``name`` gets on top of :meth:`env` (a worker: its host name)."""
        return {"COLBERT_PIPELINE_HOSTNAME": name} if name.startswith("worker-") else {}

    def service_cwd(self, name: str) -> Path:
        return self.root

    def stage_roots(self) -> list[Path]:
        """The folders stage processes run in (what :meth:`stage_processes` looks for)."""
        return [self.workspace]

    # -- PostgreSQL and Redis: compose takes them from public images; here, the machine's binaries --------
    def _start_postgres(self) -> None:
        user = _service_user()
        self._pg_dir = Path(tempfile.mkdtemp(prefix="colbert-deploy-pg-"))
        data = self._pg_dir / "data"
        pwfile = self._pg_dir / "pw"
        pwfile.write_text(self.postgres_password + "-su\n")
        ids: dict[str, Any] = {}
        if user is not None:
            for path in (self._pg_dir, pwfile):
                os.chown(path, user.pw_uid, user.pw_gid)
            ids = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}
        initdb = subprocess.run(
            [
                binary("initdb") or "initdb",
                "-D",
                str(data),
                "-U",
                "postgres",
                f"--pwfile={pwfile}",
                "--auth=scram-sha-256",
            ],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=self._pg_dir,
            **ids,
        )
        if initdb.returncode != 0:
            raise ServiceFailed(f"postgres: initdb failed:\n{(initdb.stdout + initdb.stderr)[-3000:]}")
        log = self.logs / "postgres.log"
        self.logs.mkdir(parents=True, exist_ok=True)
        argv = [
            binary("postgres") or "postgres",
            "-D",
            str(data),
            "-h",
            HOST,
            "-p",
            str(self.ports["postgres"]),
            "-k",
            str(self._pg_dir),
            # A throwaway cluster: durability settings off, it only has to be correct while it runs.
            "-c",
            "fsync=off",
            "-c",
            "synchronous_commit=off",
            "-c",
            "full_page_writes=off",
            "-c",
            "max_connections=200",
        ]
        process = Process("postgres", argv, dict(os.environ), log, self._pg_dir, **ids).start()
        self.services["postgres"] = process
        env = {**os.environ, "PGPASSWORD": self.postgres_password + "-su"}

        def psql(*sql: str) -> subprocess.CompletedProcess[str]:
            argv = [
                "psql",
                "-h",
                HOST,
                "-p",
                str(self.ports["postgres"]),
                "-U",
                "postgres",
                "-v",
                "ON_ERROR_STOP=1",
            ]
            for statement in sql:
                argv += ["-c", statement]
            return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)

        process.wait_ready(lambda: psql("SELECT 1").returncode == 0, timeout=60)
        # What docker/postgres-init.sh does in compose: one database and role for each of Airflow and MLflow.
        result = psql(
            f"CREATE ROLE airflow LOGIN PASSWORD '{self.postgres_password}'",
            "CREATE DATABASE airflow OWNER airflow",
            f"CREATE ROLE mlflow LOGIN PASSWORD '{self.postgres_password}-m'",
            "CREATE DATABASE mlflow OWNER mlflow",
        )
        if result.returncode != 0:
            raise ServiceFailed(f"postgres: creating the databases failed: {result.stderr[-2000:]}")

    def _start_redis(self) -> None:
        server = binary("redis-server")
        if server is None:
            raise ServiceFailed("redis: no redis-server on PATH (`make services` installs it)")
        argv = [
            server,
            "--bind",
            HOST,
            "--port",
            str(self.ports["redis"]),
            "--save",
            "",
            "--appendonly",
            "no",
        ]
        argv += ["--dir", str(self.root), "--protected-mode", "yes"]
        process = Process("redis", argv, dict(os.environ), self.logs / "redis.log", self.root).start()
        self.services["redis"] = process

        def pong() -> bool:
            try:
                with socket.create_connection((HOST, self.ports["redis"]), timeout=2) as sock:
                    sock.sendall(b"PING\r\n")
                    return sock.recv(16).startswith(b"+PONG")
            except OSError:
                return False

        process.wait_ready(pong, timeout=30)

    # -- the platform -------------------------------------------------------------------------------------
    def start(self) -> Platform:
        self.root.mkdir(parents=True, exist_ok=True)
        self.prepare_code()
        self._start_postgres()
        self._start_redis()
        mlflow = self._service("mlflow", ["mlflow"], **self.service_env("mlflow"))
        init = subprocess.run(
            [sys.executable, "-m", "pipeline.ops.services", "init"],
            env=self.env(),
            cwd=self.root,
            capture_output=True,
            text=True,
            timeout=STARTUP_TIMEOUT,
        )
        (self.logs / "init.log").write_text(init.stdout + init.stderr)
        if init.returncode != 0:
            raise ServiceFailed(f"init exited with status {init.returncode}:\n{tail(self.logs / 'init.log')}")
        for name in ("api-server", "scheduler", "dag-processor", "triggerer"):
            self._service(name, [name])
        for queue in self.WORKERS:
            self.start_worker(queue)
        mlflow.wait_ready(lambda: _answers(f"{self.mlflow_url}/health"))
        self.services["api-server"].wait_ready(lambda: _answers(f"{self.api_url}/api/v2/monitor/health"))
        return self

    def crash_broker(self, down_for: float) -> None:
        """SIGKILL Redis (a crash: every connection cut), leave it down ``down_for`` seconds, start it again.

        It comes back on the same port without what it had not saved: queued messages are gone.
        """
        self.services["redis"].kill_group()
        time.sleep(down_for)
        self._start_redis()

    def start_worker(self, queue: str, serves: str | None = None) -> Process:
        """Worker ``worker-<queue>``, serving ``serves`` (comma-separated; default :data:`WORKERS`')."""
        name = f"worker-{queue}"
        serves = serves or self.WORKERS[queue]
        concurrency = str(self.CONCURRENCY.get(queue, 1))
        return self._service(
            name,
            ["worker", "--queue", serves, "--concurrency", concurrency],
            self.service_cwd(name),
            **self.service_env(name),
        )

    def check_alive(self, names: list[str] | None = None) -> None:
        for name in names or list(self.services):
            self.services[name].check_alive()

    def stage_processes(self, roots: list[Path] | None = None) -> list[psutil.Process]:
        """Processes running in ``roots`` (default :meth:`stage_roots`: stages, ``dvc repro`` and what it
        started)."""
        found = []
        folders = [str(root) for root in (roots or self.stage_roots())]
        for proc in psutil.process_iter(["pid", "cwd", "cmdline"]):
            with contextlib.suppress(psutil.Error):
                cwd = proc.info.get("cwd") or ""
                if any(cwd == root or cwd.startswith(root + os.sep) for root in folders):
                    found.append(proc)
        return found

    def stop(self) -> None:
        for name in reversed(list(self.services)):
            with contextlib.suppress(Exception):
                self.services[name].stop()
        for proc in self.stage_processes():  # anything left in the workspace (see the SIGKILL test)
            with contextlib.suppress(psutil.Error):
                proc.kill()
        if self._pg_dir is not None:
            shutil.rmtree(self._pg_dir, ignore_errors=True)
        if os.environ.get("COLBERT_DEPLOY_KEEP") == "1":
            print(f"deploy platform: kept {self.root} (COLBERT_DEPLOY_KEEP=1)")
        else:
            shutil.rmtree(self.root, ignore_errors=True)


@contextlib.contextmanager
def running_platform(
    root: Path | None = None, extra_env: dict[str, str] | None = None, kind: type[Platform] | None = None
) -> Iterator[Platform]:
    """A started platform (``kind``: :class:`Platform` or a variant), stopped when the block ends."""
    platform = (kind or Platform)(root, extra_env)
    try:
        yield platform.start()
    finally:
        platform.stop()


class AirflowApi:
    """Airflow's REST API v2 as an operator uses it: a JWT from ``/auth/token``, then bearer requests."""

    def __init__(self, base_url: str, username: str, password: str) -> None:
        self.base_url = base_url.rstrip("/")
        status, body = http_json(
            "POST", f"{self.base_url}/auth/token", {"username": username, "password": password}
        )
        if status not in (200, 201) or not isinstance(body, dict) or "access_token" not in body:
            raise RuntimeError(f"POST /auth/token: HTTP {status}: {body}")
        self.token = body["access_token"]

    def request(self, method: str, path: str, body: Any = None, expect: tuple[int, ...] = (200,)) -> Any:
        status, payload = http_json(
            method, f"{self.base_url}/api/v2{path}", body, {"Authorization": f"Bearer {self.token}"}
        )
        if status not in expect:
            raise RuntimeError(f"{method} /api/v2{path}: HTTP {status}: {payload}")
        return payload

    def get(self, path: str, expect: tuple[int, ...] = (200,)) -> Any:
        return self.request("GET", path, expect=expect)

    def trigger(self, dag_id: str, conf: dict[str, Any]) -> str:
        run = self.request("POST", f"/dags/{dag_id}/dagRuns", {"logical_date": None, "conf": conf})
        return run["dag_run_id"]

    def wait_run(self, dag_id: str, run_id: str, timeout: float, platform: Platform | None = None) -> str:
        """Poll the run until it succeeds or fails; a service that dies meanwhile fails the wait at once."""

        def finished() -> str | None:
            if platform is not None:
                platform.check_alive()
            try:
                state = self.get(f"/dags/{dag_id}/dagRuns/{run_id}")["state"]
            except OSError:  # a slow answer from a busy API server: ask again (the wait stays bounded)
                return None
            return state if state in ("success", "failed") else None

        return wait_until(f"DAG run {dag_id}/{run_id}", finished, timeout, interval=2.0)

    def task_instances(self, dag_id: str, run_id: str) -> dict[str, dict[str, Any]]:
        body = self.get(f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances?limit=100")
        return {ti["task_id"]: ti for ti in body["task_instances"]}

    def tries(self, dag_id: str, run_id: str, task_id: str) -> list[dict[str, Any]]:
        """Every try of one task instance (state, hostname, try_number), the first first."""
        body = self.get(f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/tries")
        return sorted(body["task_instances"], key=lambda ti: ti["try_number"])

    def wait_parsed(self, dag_ids: list[str], platform: Platform, timeout: float = 240) -> None:
        """Until the dag-processor has parsed every DAG of ``dag_ids``; an import error fails at once."""

        def parsed() -> bool:
            platform.check_alive()
            errors = self.get("/importErrors")["import_errors"]
            if errors:
                raise AssertionError(f"DAG import errors: {errors}")
            found = {dag_id: self.get(f"/dags/{dag_id}", expect=(200, 404)) for dag_id in dag_ids}
            return all(body.get("dag_id") == dag_id for dag_id, body in found.items())

        wait_until(f"{', '.join(dag_ids)} parsed by the dag-processor", parsed, timeout, interval=2.0)


def missing(message: str) -> None:
    """Skip the test for what the machine lacks; fail it with ``COLBERT_DEPLOY_REQUIRED=1`` (make test)."""
    import pytest

    if os.environ.get("COLBERT_DEPLOY_REQUIRED") == "1":
        pytest.fail(message)
    pytest.skip(message)


def require_binaries() -> None:
    """:func:`missing` when the machine lacks a server binary of the platform."""
    absent = [name for name in ("initdb", "postgres", "psql", "redis-server") if binary(name) is None]
    if absent:
        missing(f"the deploy tier needs {', '.join(absent)} on PATH (`make services` installs redis-server)")


def main() -> int:
    """``python tests/deploy/deploy_platform.py``: start the platform, print addresses; Ctrl-C stops it."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument(
        "--root", type=Path, help="folder for logs, databases and the workspace (default: temp)"
    )
    args = parser.parse_args()
    return serve_until_stopped(
        args.root,
        Platform,
        lambda platform: (
            f"MLflow    {platform.mlflow_url}\n"
            f"serve     MLFLOW_TRACKING_URI={platform.mlflow_url} "
            f"COLBERT_PIPELINE_SERVE_PORT={platform.ports['serve']} "
            "python -m pipeline.ops.services serve\n"
            f"workspace {platform.workspace}\nlogs      {platform.logs}"
        ),
    )


def serve_until_stopped(root: Path | None, kind: type[Platform], describe: Callable[[Any], str]) -> int:
    """Start a platform of ``kind`` for a person: print its addresses, watch it until SIGTERM or Ctrl-C."""
    stop: list[bool] = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(True))
    extra = {"COLBERT_PIPELINE_SCHEDULE": "none", "AIRFLOW__API__WORKERS": "1"}
    with running_platform(root, extra, kind=kind) as platform:
        print(
            f"Airflow   {platform.api_url}  (admin / {platform.admin_password})\n"
            f"{describe(platform)}\nCtrl-C stops everything.",
            flush=True,
        )
        try:
            while not stop:
                platform.check_alive()
                time.sleep(2)
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
