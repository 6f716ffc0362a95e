"""The platform's services, their commands and environment, in one place.

``docker/compose.yaml`` and the deployment tests (``tests/deploy/``) start every service through this module,
so the tests run exactly what compose runs::

    python -m pipeline.ops.services init              # airflow db migrate, the admin login, the DAG's pools
    python -m pipeline.ops.services api-server        # also: scheduler, dag-processor, triggerer
    python -m pipeline.ops.services worker --queue gpu --concurrency 1
    python -m pipeline.ops.services worker --queue gpu,default   # a GPU host that takes CPU stages too
    python -m pipeline.ops.services mlflow            # tracking server on the Postgres backend store
    python -m pipeline.ops.services serve             # colbert-pipeline serve: <name>@champion, followed
    python -m pipeline.ops.services env worker        # print the environment a service gets (secrets masked)

A service command replaces this process (``exec``): under compose it is the container's main process, in the
tests it is the process the fixture stops.

Inputs, read from the environment (the defaults are compose's service names and local-only secrets). One
convention: Airflow's own ``AIRFLOW__SECTION__KEY`` where a setting is Airflow configuration, MLflow's own
``MLFLOW_TRACKING_URI``, ``COLBERT_PIPELINE_*`` for the project's (``docker/.env.example`` lists them all):

=======================================  ================================================================
``COLBERT_PIPELINE_BIND_HOST``           address servers listen on (``127.0.0.1``; compose's bridge
                                         network: ``0.0.0.0``)
``COLBERT_PIPELINE_POSTGRES_HOST/PORT``  the PostgreSQL server (``postgres``, ``5432``) holding two
                                         databases: ``airflow`` (role ``airflow``,
                                         ``COLBERT_PIPELINE_POSTGRES_PASSWORD``) and ``mlflow`` (role
                                         ``mlflow``, ``COLBERT_PIPELINE_MLFLOW_DB_PASSWORD``)
``COLBERT_PIPELINE_REDIS_URL``           the Celery broker (``redis://redis:6379/0``)
``AIRFLOW__API__PORT``                   the API server's port (``8080``)
``COLBERT_PIPELINE_AIRFLOW_API_URL``     where workers reach the API server
                                         (``http://airflow-apiserver:<AIRFLOW__API__PORT>``)
``COLBERT_PIPELINE_MLFLOW_PORT``         the tracking server's port (``5000``); ``MLFLOW_TRACKING_URI``
                                         where the other services reach it (``http://mlflow:<port>``)
``COLBERT_PIPELINE_MLFLOW_ARTIFACTS``    the tracking server's artifact root (``/mlflow/artifacts``)
``COLBERT_PIPELINE_SERVE_PORT``          the model server's port (``5001``);
                                         ``COLBERT_PIPELINE_MODEL_NAME`` the registered model it serves
                                         (``colbert-pipeline``), followed at alias
                                         ``COLBERT_PIPELINE_MODEL_ALIAS`` (``champion``)
``COLBERT_PIPELINE_HOSTNAME``            the host name task instances record for this worker (the FQDN)
``COLBERT_PIPELINE_GPU_SLOTS``           the ``gpu`` pool's size (``1``)
``COLBERT_PIPELINE_ADMIN_PASSWORD``      the Airflow UI's ``admin`` password (``admin``)
``AIRFLOW__API_AUTH__JWT_SECRET``,       shared by every Airflow component (local-only defaults; set real
``AIRFLOW__API__SECRET_KEY``,            ones), the Fernet key empty unless set
``AIRFLOW__CORE__FERNET_KEY``
=======================================  ================================================================

Any ``AIRFLOW__SECTION__KEY`` already in the environment wins over what this module would set. A variable of
an old name (``COLBERT_BIND_HOST``, ``AIRFLOW_FERNET_KEY``, ...: :data:`RENAMED`) is an error naming its new
one: set in an old ``docker/.env``, it would otherwise be ignored without a word.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import urllib.parse
from collections.abc import Mapping, Sequence
from pathlib import Path

#: The DAG's pools (``dags/colbert_pipeline.py``: DVC_POOL, GPU_POOL); a deploy test checks they agree.
DVC_POOL = "colbert_dvc_workspace"
GPU_POOL = "gpu"
#: Stateless mode (``COLBERT_PIPELINE_STATELESS=1``): the register tasks of all runs take turns.
REGISTER_POOL = "colbert_register"
QUEUES = ("default", "gpu")
AIRFLOW_SERVICES = ("api-server", "scheduler", "dag-processor", "triggerer", "worker")
SERVICES = ("init", *AIRFLOW_SERVICES, "mlflow", "serve")
ADMIN_USER = "admin"
MLFLOW_DB = "mlflow"
AIRFLOW_DB = "airflow"

_DEFAULTS = {
    "COLBERT_PIPELINE_BIND_HOST": "127.0.0.1",
    "COLBERT_PIPELINE_POSTGRES_HOST": "postgres",
    "COLBERT_PIPELINE_POSTGRES_PORT": "5432",
    "COLBERT_PIPELINE_POSTGRES_PASSWORD": "airflow",
    "COLBERT_PIPELINE_MLFLOW_DB_PASSWORD": "mlflow",
    "COLBERT_PIPELINE_REDIS_URL": "redis://redis:6379/0",
    "AIRFLOW__API__PORT": "8080",
    "COLBERT_PIPELINE_MLFLOW_PORT": "5000",
    "COLBERT_PIPELINE_MLFLOW_ARTIFACTS": "/mlflow/artifacts",
    "COLBERT_PIPELINE_SERVE_PORT": "5001",
    "COLBERT_PIPELINE_MODEL_NAME": "colbert-pipeline",
    "COLBERT_PIPELINE_MODEL_ALIAS": "champion",
    "COLBERT_PIPELINE_GPU_SLOTS": "1",
    "COLBERT_PIPELINE_ADMIN_PASSWORD": "admin",
    "AIRFLOW__API_AUTH__JWT_SECRET": "local-only-change-me-jwt-secret",
    "AIRFLOW__API__SECRET_KEY": "local-only-change-me-api-secret",
}
#: Defaults that follow another setting: a changed port moves the URL the other services use with it.
_DERIVED = {
    "COLBERT_PIPELINE_AIRFLOW_API_URL": lambda env: (
        f"http://airflow-apiserver:{setting(env, 'AIRFLOW__API__PORT')}"
    ),
    "MLFLOW_TRACKING_URI": lambda env: f"http://mlflow:{setting(env, 'COLBERT_PIPELINE_MLFLOW_PORT')}",
}
#: The variables' names before one convention (issue 33): old name -> new name. Only the project's own: a
#: generic old name (``POSTGRES_PORT``, ``MLFLOW_PORT``) may be another's (Kubernetes: ``<NAME>_PORT``).
RENAMED = {
    "COLBERT_BIND_HOST": "COLBERT_PIPELINE_BIND_HOST",
    "COLBERT_POSTGRES_HOST": "COLBERT_PIPELINE_POSTGRES_HOST",
    "COLBERT_POSTGRES_PORT": "COLBERT_PIPELINE_POSTGRES_PORT",
    "MLFLOW_DB_PASSWORD": "COLBERT_PIPELINE_MLFLOW_DB_PASSWORD",
    "COLBERT_REDIS_URL": "COLBERT_PIPELINE_REDIS_URL",
    "COLBERT_AIRFLOW_API_URL": "COLBERT_PIPELINE_AIRFLOW_API_URL",
    "COLBERT_AIRFLOW_API_PORT": "AIRFLOW__API__PORT",
    "COLBERT_MLFLOW_PORT": "COLBERT_PIPELINE_MLFLOW_PORT",
    "COLBERT_MLFLOW_ARTIFACTS": "COLBERT_PIPELINE_MLFLOW_ARTIFACTS",
    "COLBERT_SERVE_PORT": "COLBERT_PIPELINE_SERVE_PORT",
    "COLBERT_MODEL_NAME": "COLBERT_PIPELINE_MODEL_NAME",
    # `colbert-pipeline serve` follows a registered model's alias; a fixed URI would not follow promotions.
    "COLBERT_MODEL_URI": "COLBERT_PIPELINE_MODEL_NAME + COLBERT_PIPELINE_MODEL_ALIAS",
    "COLBERT_HOSTNAME": "COLBERT_PIPELINE_HOSTNAME",
    "COLBERT_GPU_SLOTS": "COLBERT_PIPELINE_GPU_SLOTS",
    "COLBERT_QUEUE": "COLBERT_PIPELINE_QUEUE",
    "COLBERT_DAGS_FOLDER": "AIRFLOW__CORE__DAGS_FOLDER",
    "COLBERT_CANARY_QUERIES": "COLBERT_PIPELINE_CANARY_QUERIES",
    "AIRFLOW_ADMIN_PASSWORD": "COLBERT_PIPELINE_ADMIN_PASSWORD",
    "AIRFLOW_JWT_SECRET": "AIRFLOW__API_AUTH__JWT_SECRET",
    "AIRFLOW_API_SECRET_KEY": "AIRFLOW__API__SECRET_KEY",
    "AIRFLOW_FERNET_KEY": "AIRFLOW__CORE__FERNET_KEY",
    "AIRFLOW_EXECUTOR": "AIRFLOW__CORE__EXECUTOR",
}
_SECRETS = ("PASSWORD", "SECRET", "FERNET", "SQL_ALCHEMY_CONN", "RESULT_BACKEND", "BACKEND_STORE")


class ServiceError(RuntimeError):
    """A service could not be set up (a bad setting, a failed init step), naming what failed."""


def setting(env: Mapping[str, str], name: str) -> str:
    """``env[name]`` when set and non-empty, else this module's default."""
    return env.get(name) or (_DERIVED[name](env) if name in _DERIVED else _DEFAULTS[name])


def check_names(env: Mapping[str, str]) -> None:
    """Refuse a variable of an old name: set, it would be ignored, and the service would run without it."""
    old = sorted(name for name in RENAMED if name in env)
    if old:
        renamed = ", ".join(f"{name} is now {RENAMED[name]}" for name in old)
        raise ServiceError(f"renamed settings (docker/.env or the environment): {renamed}")


def _quote(text: str) -> str:
    return urllib.parse.quote(text, safe="")


def postgres_url(env: Mapping[str, str], database: str, driver: str = "postgresql+psycopg2") -> str:
    """SQLAlchemy URL of ``database`` (``airflow`` or ``mlflow``, each with the role of the same name)."""
    password = setting(
        env,
        "COLBERT_PIPELINE_POSTGRES_PASSWORD"
        if database == AIRFLOW_DB
        else "COLBERT_PIPELINE_MLFLOW_DB_PASSWORD",
    )
    host, port = (
        setting(env, "COLBERT_PIPELINE_POSTGRES_HOST"),
        setting(env, "COLBERT_PIPELINE_POSTGRES_PORT"),
    )
    return f"{driver}://{database}:{_quote(password)}@{host}:{port}/{database}"


def airflow_environment(env: Mapping[str, str]) -> dict[str, str]:
    """The ``AIRFLOW__*`` settings every Airflow component shares (CeleryExecutor on Postgres and Redis)."""
    airflow_home = Path(env.get("AIRFLOW_HOME") or Path.home() / "airflow")
    api_url = setting(env, "COLBERT_PIPELINE_AIRFLOW_API_URL").rstrip("/")
    settings = {
        "AIRFLOW_HOME": str(airflow_home),
        "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": postgres_url(env, AIRFLOW_DB),
        "AIRFLOW__CELERY__BROKER_URL": setting(env, "COLBERT_PIPELINE_REDIS_URL"),
        # The driver named: in the image a bare postgresql:// picked psycopg 3, whose version probe failed.
        "AIRFLOW__CELERY__RESULT_BACKEND": postgres_url(env, AIRFLOW_DB, driver="db+postgresql+psycopg2"),
        # Task runners report to the API server: it must be reachable at this URL from every worker.
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{api_url}/execution/",
        "AIRFLOW__API__HOST": setting(env, "COLBERT_PIPELINE_BIND_HOST"),
        "AIRFLOW__API__PORT": setting(env, "AIRFLOW__API__PORT"),
        "AIRFLOW__API__BASE_URL": api_url,
        "AIRFLOW__API_AUTH__JWT_SECRET": setting(env, "AIRFLOW__API_AUTH__JWT_SECRET"),
        "AIRFLOW__API__SECRET_KEY": setting(env, "AIRFLOW__API__SECRET_KEY"),
        "AIRFLOW__CORE__FERNET_KEY": env.get("AIRFLOW__CORE__FERNET_KEY", ""),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "false",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "true",
        "AIRFLOW__CORE__AUTH_MANAGER": (
            "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
        ),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{ADMIN_USER}:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(airflow_home / "auth" / "passwords.json"),
        # Task instances record this host name: COLBERT_PIPELINE_HOSTNAME when set (two workers on one host).
        "AIRFLOW__CORE__HOSTNAME_CALLABLE": "pipeline.ops.services.hostname",
        "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_HOST": setting(env, "COLBERT_PIPELINE_BIND_HOST"),
        # A worker busy training (or a shared 2-core test machine) answers slowly: Airflow's 5 s timeout on
        # the task runner's calls to the API server failed tasks before they started (seen in tests/deploy).
        "AIRFLOW__WORKERS__EXECUTION_API_TIMEOUT": "30",
        "MLFLOW_TRACKING_URI": setting(env, "MLFLOW_TRACKING_URI"),
    }
    return settings


def hostname() -> str:
    """Airflow's ``[core] hostname_callable``: ``COLBERT_PIPELINE_HOSTNAME``, else this machine's FQDN."""
    return os.environ.get("COLBERT_PIPELINE_HOSTNAME") or socket.getfqdn()


def _bin(name: str) -> str:
    # The console scripts beside this interpreter (the project venv) first: `mlflow models serve` starts
    # uvicorn by name, and the Airflow CLI must be the one of this environment.
    local = Path(sys.executable).parent / name
    return str(local) if local.exists() else (shutil.which(name) or name)


def worker_queues(text: str) -> list[str]:
    """A worker's ``--queue``: one of :data:`QUEUES`, or several comma-separated (a GPU host that also
    takes CPU stages serves ``gpu,default``, so a task of a lost worker can be retried on it).

    Example:
        >>> worker_queues("gpu, default")
        ['gpu', 'default']
    """
    queues = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in queues if name not in QUEUES]
    if not queues or unknown or len(set(queues)) != len(queues):
        raise ServiceError(
            f"worker --queue: {text!r} is not one or more of {', '.join(QUEUES)}, comma-separated"
        )
    return queues


def command(service: str, env: Mapping[str, str], queue: str = "default", concurrency: int = 1) -> list[str]:
    """The command line of one service."""
    host = setting(env, "COLBERT_PIPELINE_BIND_HOST")
    if service == "api-server":
        return [
            _bin("airflow"),
            "api-server",
            "--host",
            host,
            "--port",
            setting(env, "AIRFLOW__API__PORT"),
        ]
    if service in ("scheduler", "dag-processor"):
        return [_bin("airflow"), service]
    if service == "triggerer":
        # Task logs live on the shared logs folder; the log server would listen on every interface.
        return [_bin("airflow"), "triggerer", "--skip-serve-logs"]
    if service == "worker":
        queues = worker_queues(queue)
        return [
            _bin("airflow"),
            "celery",
            "worker",
            "--queues",
            ",".join(queues),
            "--concurrency",
            str(concurrency),
            "--celery-hostname",
            f"{queues[0]}@{env.get('COLBERT_PIPELINE_HOSTNAME') or socket.gethostname()}",
            "--skip-serve-logs",
        ]
    if service == "mlflow":
        port = setting(env, "COLBERT_PIPELINE_MLFLOW_PORT")
        tracking_host = urllib.parse.urlsplit(setting(env, "MLFLOW_TRACKING_URI")).hostname or "mlflow"
        allowed = sorted({tracking_host, "localhost", "127.0.0.1"})
        return [
            _bin("mlflow"),
            "server",
            "--host",
            host,
            "--port",
            port,
            "--backend-store-uri",
            postgres_url(env, MLFLOW_DB),
            "--artifacts-destination",
            setting(env, "COLBERT_PIPELINE_MLFLOW_ARTIFACTS"),
            "--serve-artifacts",
            "--allowed-hosts",
            ",".join(f"{name},{name}:{port}" for name in allowed),
            "--workers",
            "1",
        ]
    if service == "serve":
        # The champion, followed as it is promoted (`mlflow models serve` resolves the alias once).
        return [
            _bin("colbert-pipeline"),
            "serve",
            "--host",
            host,
            "--port",
            setting(env, "COLBERT_PIPELINE_SERVE_PORT"),
            "--model",
            setting(env, "COLBERT_PIPELINE_MODEL_NAME"),
            "--alias",
            setting(env, "COLBERT_PIPELINE_MODEL_ALIAS"),
        ]
    raise ServiceError(f"unknown service {service!r}; one of {', '.join(SERVICES)}")


def environment(service: str, env: Mapping[str, str]) -> dict[str, str]:
    """The environment a service runs with: ``env`` plus this module's settings (``env`` wins)."""
    result = dict(env)
    # The venv's bin first: `mlflow models serve --env-manager local` and Airflow start helpers by name.
    bin_dir = str(Path(sys.executable).parent)
    result["PATH"] = os.pathsep.join([bin_dir, *[p for p in env.get("PATH", "").split(os.pathsep) if p]])
    result.setdefault("PYTHONUNBUFFERED", "1")
    if service in ("init", *AIRFLOW_SERVICES):
        for key, value in airflow_environment(env).items():
            if key not in env or not env[key]:
                result[key] = value
    else:
        result["MLFLOW_TRACKING_URI"] = setting(env, "MLFLOW_TRACKING_URI")
    if service == "mlflow":
        # MLflow's job executor (huey consumers for its GenAI jobs) is unused here and slows start-up.
        result.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    return result


def masked(env: Mapping[str, str]) -> dict[str, str]:
    """``env`` with secret values (passwords, keys, URLs with credentials) replaced by ``***``."""
    return {key: "***" if any(word in key for word in _SECRETS) else value for key, value in env.items()}


def create_pools(gpu_slots: int) -> None:
    """The DAG's pools: one slot for DVC's workspace lock, ``gpu_slots`` for GPU tasks (create or update)."""
    from airflow.models.pool import Pool  # Airflow reads its settings at import: after the environment is set

    Pool.create_or_update_pool(
        name=DVC_POOL,
        slots=1,
        description="one dvc repro at a time in the colbert-pipeline workspace",
        include_deferred=False,
    )
    Pool.create_or_update_pool(
        name=GPU_POOL, slots=gpu_slots, description="GPU tasks (one per GPU)", include_deferred=False
    )
    Pool.create_or_update_pool(
        name=REGISTER_POOL,
        slots=1,
        description="one register (promotion) at a time across runs (stateless mode)",
        include_deferred=False,
    )


def write_passwords_file(path: Path, password: str) -> None:
    """SimpleAuthManager's logins file (``{"admin": password}``), written atomically, mode 600."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as stream:
        json.dump({ADMIN_USER: password}, stream)
    os.replace(temporary, path)


def init(env: Mapping[str, str]) -> None:
    """One-shot set-up before the Airflow components start: schema, admin login, pools (idempotent)."""
    full = environment("init", env)
    migrate = subprocess.run(
        [_bin("airflow"), "db", "migrate"], env=full, stdin=subprocess.DEVNULL, capture_output=True, text=True
    )
    if migrate.returncode != 0:
        tail = "\n".join((migrate.stdout + migrate.stderr).splitlines()[-20:])
        raise ServiceError(f"airflow db migrate failed (exit status {migrate.returncode}):\n{tail}")
    write_passwords_file(
        Path(full["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"]),
        setting(env, "COLBERT_PIPELINE_ADMIN_PASSWORD"),
    )
    os.environ.update(full)
    try:
        slots = int(setting(env, "COLBERT_PIPELINE_GPU_SLOTS"))
    except ValueError:
        given = env.get("COLBERT_PIPELINE_GPU_SLOTS")
        raise ServiceError(f"COLBERT_PIPELINE_GPU_SLOTS: {given!r} is not an integer") from None
    create_pools(slots)
    print(
        f"init done: schema migrated, login {ADMIN_USER!r}, pools {DVC_POOL} (1), {GPU_POOL} ({slots}) "
        f"and {REGISTER_POOL} (1)"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.ops.services", description=__doc__.splitlines()[0]
    )
    parser.add_argument("service", choices=[*SERVICES, "env", "command"])
    parser.add_argument("target", nargs="?", help="for env/command: the service to describe")
    parser.add_argument(
        "--queue",
        default="default",
        help=f"worker: the Celery queue it takes, or several comma-separated (of {', '.join(QUEUES)})",
    )
    parser.add_argument("--concurrency", type=int, default=1, help="worker: tasks at once")
    args = parser.parse_args(argv)
    env = dict(os.environ)
    try:
        check_names(env)
        if args.service in ("env", "command"):
            target = args.target or "worker"
            if target not in SERVICES:
                parser.error(f"{args.service}: unknown service {target!r}")
            if args.service == "env":
                for key, value in sorted(masked(environment(target, env)).items()):
                    if key.startswith(("AIRFLOW", "COLBERT", "MLFLOW")):
                        print(f"{key}={value}")
            else:
                print(" ".join(command(target, env, args.queue, args.concurrency)))
            return 0
        if args.service == "init":
            init(env)
            return 0
        argv_ = command(args.service, env, args.queue, args.concurrency)
        full = environment(args.service, env)
    except ServiceError as error:
        print(f"pipeline.ops.services {args.service}: error: {error}", file=sys.stderr)
        return 2
    sys.stdout.flush()
    os.execvpe(argv_[0], argv_, full)
    return 0  # not reached


if __name__ == "__main__":
    raise SystemExit(main())
