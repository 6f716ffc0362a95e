"""The deploy platform with no shared disk: stateless tasks over a git daemon, an S3 API and MLflow.

:class:`StatelessPlatform` is :class:`deploy_platform.Platform` (PostgreSQL, Redis, ``mlflow server``, the
Airflow 3 components, two Celery workers, all through ``python -m pipeline.ops.services``) with what
issue 31's deployment needs instead of one shared workspace:

- ``git daemon`` serving the project (``git://``, fetch and push: the run refs) and moto's S3 API, the two
  servers of ``tests/remotes.py``, started here under the same supervisor as every other service;
- ``mlflow server --artifacts-destination s3://colbert/mlartifacts`` (``--serve-artifacts``): only the
  tracking server holds the S3 endpoint and keys, so a worker can reach artifacts only through its HTTP API;
- each worker in a folder of its own (``workers/<name>/``): its ``HOME``, ``TMPDIR`` (where a task's
  throwaway workspace goes), ``AIRFLOW_HOME`` (its task logs), DAGs folder and clone of the project, cloned
  from the git daemon (``origin``), whose default DVC remote is ``s3://colbert/dvc`` on the S3 API
  (``endpointurl`` and keys in the clone's ``.dvc/config.local``);
- ``COLBERT_PIPELINE_STATELESS=1`` for every Airflow component: each stage task runs
  ``colbert-pipeline task STAGE --run <run id>`` from its worker's clone (docs/stateless.md).

The control plane (scheduler, API server, DAG processor, triggerer) keeps the platform's own folders; the
workers share none of them, nor any with each other (``test_deploy_stateless.py`` checks the running
processes). They do run one installed environment (this venv), as two hosts run one image.

By hand: ``python tests/deploy/stateless_platform.py`` starts it and prints its addresses (Ctrl-C stops it).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import ClassVar

import psutil

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:  # run as a script: the repository's tests package
    sys.path.insert(0, str(REPO_ROOT))

from tests import remotes  # noqa: E402
from tests.deploy.deploy_platform import HOST, Platform, Process, free_port, serve_until_stopped  # noqa: E402
from tests.workspace import GIT_IDENTITY  # noqa: E402

BUCKET = "colbert"
DVC_REMOTE_URL = f"s3://{BUCKET}/dvc"
MLFLOW_ARTIFACTS = f"s3://{BUCKET}/mlartifacts"
#: The worker names (``worker-<queue>``) and what each worker's own folder holds.
WORKER_NAMES = ("worker-default", "worker-gpu")
FOLDERS = ("HOME", "TMPDIR", "AIRFLOW_HOME", "clone")
#: The settings a worker's processes run with that name a folder; none may be another worker's.
FOLDER_SETTINGS = (
    "HOME",
    "TMPDIR",
    "AIRFLOW_HOME",
    "AIRFLOW__CORE__DAGS_FOLDER",
    "COLBERT_PIPELINE_WORKSPACE",
    "COLBERT_PIPELINE_TASK_CLONE",
)


def _listening(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=1):
            return True
    except OSError:
        return False


class StatelessPlatform(Platform):
    """Start with :meth:`start`, always :meth:`stop` (``running_platform(kind=StatelessPlatform)``)."""

    #: Two runs' CPU stages at once on the default worker (compose's CPU worker also takes 2).
    CONCURRENCY: ClassVar[dict[str, int]] = {"default": 2}

    def __init__(self, root: Path | None = None, extra_env: dict[str, str] | None = None) -> None:
        super().__init__(root, {"COLBERT_PIPELINE_STATELESS": "1", **(extra_env or {})})
        self.ports.update(s3=free_port(), git=free_port())
        self.s3_url = f"http://{HOST}:{self.ports['s3']}"
        self.served = self.root / "served"
        self.git_url = f"git://{HOST}:{self.ports['git']}/project.git"

    def folders(self, worker: str) -> dict[str, Path]:
        """The worker's own folders: ``HOME``, ``TMPDIR``, ``AIRFLOW_HOME`` and its ``clone``."""
        base = self.root / "workers" / worker
        return {name: base / name.lower() for name in FOLDERS}

    # -- the shared services that replace the shared disk -------------------------------------------------
    def _start_remotes(self) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        self.served.mkdir(parents=True)
        s3_dir = self.root / "s3"
        s3_dir.mkdir()
        s3 = Process(
            "s3",
            remotes.s3_server_command(self.ports["s3"]),
            dict(os.environ),
            self.logs / "s3.log",
            s3_dir,
        )
        self.services["s3"] = s3.start()
        command = remotes.git_daemon_command(self.served, self.ports["git"])
        git = Process("git-daemon", command, dict(os.environ), self.logs / "git-daemon.log", self.served)
        self.services["git-daemon"] = git.start()
        s3.wait_ready(lambda: _listening(self.ports["s3"]), timeout=60)
        remotes.wait_s3_answers(self.s3_url)
        remotes.make_bucket(self.s3_url, BUCKET)
        git.wait_ready(lambda: _listening(self.ports["git"]), timeout=60)

    def prepare_code(self) -> None:
        """The project served by the git daemon, and each worker's folders with its own clone of it."""
        super().prepare_code()  # the developer's checkout: served, never seen by a worker
        self._start_remotes()
        remotes.serve_repository(self.workspace, self.served, name="project.git")
        for worker in WORKER_NAMES:
            folders = self.folders(worker)
            for path in folders.values():
                path.parent.mkdir(parents=True, exist_ok=True)
            for name in ("HOME", "TMPDIR", "AIRFLOW_HOME"):
                folders[name].mkdir()
            env = {**os.environ, **GIT_IDENTITY, "HOME": str(folders["HOME"])}
            remotes.clone_from(self.git_url, folders["clone"], env)
            remotes.add_s3_remote(folders["clone"], "runs", DVC_REMOTE_URL, self.s3_url)

    def service_env(self, name: str) -> dict[str, str]:
        if name == "mlflow":  # the one service that holds the artifact store's address and keys
            return {
                "COLBERT_PIPELINE_MLFLOW_ARTIFACTS": MLFLOW_ARTIFACTS,
                "MLFLOW_S3_ENDPOINT_URL": self.s3_url,
                "AWS_ACCESS_KEY_ID": remotes.S3_CREDENTIALS["access_key_id"],
                "AWS_SECRET_ACCESS_KEY": remotes.S3_CREDENTIALS["secret_access_key"],
                "AWS_DEFAULT_REGION": remotes.S3_CREDENTIALS["region"],
            }
        if name not in WORKER_NAMES:
            return super().service_env(name)
        folders = self.folders(name)
        clone = str(folders["clone"])
        return {
            **super().service_env(name),
            "HOME": str(folders["HOME"]),
            "TMPDIR": str(folders["TMPDIR"]),
            "AIRFLOW_HOME": str(folders["AIRFLOW_HOME"]),
            "AIRFLOW__CORE__DAGS_FOLDER": str(folders["clone"] / "dags"),
            "COLBERT_PIPELINE_WORKSPACE": clone,
            "COLBERT_PIPELINE_TASK_CLONE": clone,
        }

    def service_cwd(self, name: str) -> Path:
        return self.folders(name)["HOME"] if name in WORKER_NAMES else self.root

    def stage_roots(self) -> list[Path]:
        """Each worker's clone (the task command starts there) and its TMPDIR (the task's workspace)."""
        return [self.folders(w)[name] for w in WORKER_NAMES for name in ("clone", "TMPDIR")]

    def worker_settings(self, worker: str) -> dict[str, str]:
        """The folder settings the worker's running processes have (read from them, not from this object)."""
        found: dict[str, str] = {}
        for proc in self.services[worker].group_members():
            environ = proc.environ()  # empty for Celery's processes: their title overwrites it in /proc
            found |= {name: environ[name] for name in FOLDER_SETTINGS if name in environ}
            found[f"cwd of {proc.pid}"] = proc.cwd()
        return found

    def worker_of(self, pid: int) -> str | None:
        """The worker whose folders a process runs in (its cwd), if any."""
        cwd = psutil.Process(pid).cwd()
        for worker in WORKER_NAMES:
            for path in self.folders(worker).values():
                if cwd == str(path) or cwd.startswith(str(path) + os.sep):
                    return worker
        return None


def git_ref(clone: Path, url: str, ref: str) -> str:
    """Fetch ``ref`` from ``url`` into ``clone``; its commit."""
    subprocess.run(["git", "fetch", "-q", url, f"+{ref}:{ref}"], cwd=clone, check=True, capture_output=True)
    return subprocess.run(
        ["git", "rev-parse", ref], cwd=clone, check=True, capture_output=True, text=True
    ).stdout.strip()


def main() -> int:
    """``python tests/deploy/stateless_platform.py``: start it, print addresses; Ctrl-C stops it."""
    return serve_until_stopped(
        None,
        StatelessPlatform,
        lambda platform: (
            f"MLflow    {platform.mlflow_url}  (artifacts: {MLFLOW_ARTIFACTS})\n"
            f"S3        {platform.s3_url}  (keys: test / test)\ngit       {platform.git_url}\n"
            f"workers   {platform.root / 'workers'}\nlogs      {platform.logs}"
        ),
    )


if __name__ == "__main__":
    raise SystemExit(main())
