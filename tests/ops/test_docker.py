"""The deployment files, checked offline (the real build and stack: docker/test-docker.sh, the last step of
`make test`).

``docker/compose.yaml`` is parsed and its services, profiles, healthchecks, volumes, environment, ports and
GPU reservation asserted; the Dockerfile's build inputs must exist and match the DAG's pools and queues; the
shell scripts must parse. ``docker compose config`` validates the file when a Compose CLI is installed.
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
DOCKER = REPO_ROOT / "docker"
COMPOSE = DOCKER / "compose.yaml"
DOCKERFILE = DOCKER / "Dockerfile"

BASE_SERVICES = {
    "postgres",
    "airflow-init",
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
    "mlflow",
}
CELERY_SERVICES = {"redis", "airflow-worker", "airflow-worker-gpu"}
SERVE_SERVICES = {"serve"}
AIRFLOW_SERVICES = {name for name in BASE_SERVICES | CELERY_SERVICES if name.startswith("airflow-")}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    return compose["services"]


def _dag_constants() -> dict[str, Any]:
    """Module-level string constants of the DAG file (pools, queues), read without importing Airflow."""
    tree = ast.parse((REPO_ROOT / "dags" / "colbert_pipeline.py").read_text())
    constants = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    constants[target.id] = node.value.value
    return constants


def _command(service: dict[str, Any]) -> str:
    command = service.get("command", "")
    return " ".join(command) if isinstance(command, list) else command


def test_services_and_profiles(services: dict[str, Any]) -> None:
    assert set(services) == BASE_SERVICES | CELERY_SERVICES | SERVE_SERVICES
    for name in BASE_SERVICES:
        assert "profiles" not in services[name], f"{name} must start with a plain `docker compose up`"
    for name in CELERY_SERVICES:
        assert services[name]["profiles"] == ["celery"], name
    assert services["serve"]["profiles"] == ["serve"]  # it needs a champion: started after the first run


def test_every_long_running_service_has_a_healthcheck(services: dict[str, Any]) -> None:
    for name, service in services.items():
        if name == "airflow-init":
            assert service["restart"] == "no"  # a one-shot job
            continue
        check = service.get("healthcheck")
        assert check and check["test"] and check.get("interval"), name


def test_start_order(services: dict[str, Any]) -> None:
    assert services["airflow-init"]["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    for name in AIRFLOW_SERVICES - {"airflow-init"}:
        depends = services[name]["depends_on"]
        assert depends["airflow-init"] == {"condition": "service_completed_successfully"}, name
        assert depends["postgres"] == {"condition": "service_healthy"}, name
    for name in ("airflow-worker", "airflow-worker-gpu"):
        assert services[name]["depends_on"]["redis"] == {"condition": "service_healthy"}
    assert services["mlflow"]["depends_on"] == {"postgres": {"condition": "service_healthy"}}


def test_ports_are_published_on_loopback_only(services: dict[str, Any]) -> None:
    published = {name: service["ports"] for name, service in services.items() if service.get("ports")}
    assert set(published) == {"airflow-apiserver", "mlflow", "serve"}
    for name, ports in published.items():
        for port in ports:
            assert str(port).startswith("127.0.0.1:"), f"{name}: {port}"


def test_volumes(compose: dict[str, Any], services: dict[str, Any]) -> None:
    declared = set(compose["volumes"])
    assert {"postgres-data", "workspace", "mlflow-artifacts", "airflow-logs"} <= declared
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if not source.startswith((".", "/")):
                assert source in declared, f"{name}: undeclared volume {source}"
            else:
                assert (DOCKER / source).exists(), f"{name}: bind mount {source} does not exist"
    assert "postgres-data:/var/lib/postgresql/data" in services["postgres"]["volumes"]
    assert "mlflow-artifacts:/mlflow/artifacts" in services["mlflow"]["volumes"]
    for name in AIRFLOW_SERVICES:
        assert "workspace:/workspace" in services[name]["volumes"], name


def _compose_env(service: dict[str, Any]) -> dict[str, str]:
    """A service's environment with compose's ``${NAME:-default}`` defaults filled in."""
    return {
        key: re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", str(value))
        for key, value in service.get("environment", {}).items()
    }


def test_environment(services: dict[str, Any]) -> None:
    """Compose gives pipeline.ops.services its inputs; the module derives what each service gets."""
    from pipeline.ops import services as platform

    for name in AIRFLOW_SERVICES:
        assert (
            _command(services[name]).startswith("python -m pipeline.ops.services ") or name == "airflow-init"
        )
        env = platform.environment("scheduler", _compose_env(services[name]))
        assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg2://"), name
        assert "@postgres:5432/airflow" in env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"], name
        assert env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000", name
        assert env["COLBERT_PIPELINE_WORKSPACE"] == "/workspace", name
        assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://airflow-apiserver:8080/execution/"
        assert env["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"  # the celery profile sets CeleryExecutor
        assert env["AIRFLOW__CORE__LOAD_EXAMPLES"] == "false"
    mlflow_env = _compose_env(services["mlflow"])
    mlflow = " ".join(platform.command("mlflow", mlflow_env))
    assert "--backend-store-uri postgresql+psycopg2://mlflow:" in mlflow and "@postgres:5432/mlflow" in mlflow
    assert "--artifacts-destination /mlflow/artifacts" in mlflow and "--serve-artifacts" in mlflow
    # MLflow 3 checks the Host header: the name other containers use must be allowed.
    assert re.search(r"--allowed-hosts \S*\bmlflow:5000\b", mlflow)
    assert services["postgres"]["environment"]["POSTGRES_DB"] == "airflow"
    assert services["airflow-init"]["environment"]["AIRFLOW_ADMIN_PASSWORD"]


def test_gpu_worker_takes_the_dags_gpu_queue_with_a_reserved_gpu(services: dict[str, Any]) -> None:
    constants = _dag_constants()
    worker = services["airflow-worker-gpu"]
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    assert re.search(rf"--queue {constants['GPU_QUEUE']}\b", _command(worker))
    assert re.search(rf"--queue {constants['DEFAULT_QUEUE']}\b", _command(services["airflow-worker"]))
    for name in set(services) - {"airflow-worker-gpu"}:
        assert "deploy" not in services[name], f"{name} must not need a GPU"


def test_init_creates_the_dags_pools() -> None:
    from pipeline.ops import services as platform

    constants = _dag_constants()
    script = (DOCKER / "airflow-init.sh").read_text()
    assert "python -m pipeline.ops.services init" in script  # migrate, login, pools: tests/deploy runs it too
    assert (constants["DVC_POOL"], constants["GPU_POOL"]) == (platform.DVC_POOL, platform.GPU_POOL)


def test_shell_scripts_parse() -> None:
    scripts = sorted(DOCKER.glob("*.sh"))
    assert {script.name for script in scripts} >= {"airflow-init.sh", "init-workspace.sh", "postgres-init.sh"}
    for script in scripts:
        result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
        assert result.returncode == 0, f"{script.name}: {result.stderr}"
        assert script.stat().st_mode & 0o111, f"{script.name} must be executable"


def _docker_tier(tmp_path: Path, ci: str, **env: str) -> subprocess.CompletedProcess:
    """docker/test-docker.sh as ``make test`` runs it, up to the reason it cannot run (it stops there)."""
    command = ["bash", str(DOCKER / "test-docker.sh")]
    if env.pop("as_user", "") == "nobody" and os.geteuid() == 0:  # the not-root reason, from root too
        command = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *command]
    full_env = {**os.environ, "CI": ci, "COLBERT_TEST_DOCKER_OPTIONAL": "1", **env}
    full_env["COLBERT_TEST_DOCKER_STATE"] = str(tmp_path / "state")  # never the machine's kept state
    return subprocess.run(command, cwd=tmp_path, env=full_env, capture_output=True, text=True, timeout=60)


def test_on_ci_the_docker_tier_skips_only_for_lack_of_disk(tmp_path: Path) -> None:
    no_room = {"COLBERT_TEST_DOCKER_ROOM_GB": "100000000"}  # more than any disk: the disk reason
    for ci in ("true", ""):
        result = _docker_tier(tmp_path, ci, **no_room)
        if "needs root" in result.stderr:  # not root here: the disk check comes after the root check
            break
        assert result.returncode == 0, result.stderr
        assert re.search(
            r"SKIPPED \(not run, not passed\): \d+ GB free under .*needs about 100000000 GB", result.stderr
        )
    assert os.geteuid() != 0 or shutil.which("setpriv"), "setpriv (util-linux) drops root for the check below"
    on_ci = _docker_tier(tmp_path, "true", as_user="nobody")
    assert on_ci.returncode == 1, on_ci.stderr
    assert "needs root" in on_ci.stderr and "only too little disk may skip this tier on CI" in on_ci.stderr
    off_ci = _docker_tier(tmp_path, "", as_user="nobody")
    assert off_ci.returncode == 0 and "SKIPPED (not run, not passed): needs root" in off_ci.stderr


def test_dockerfile_builds_from_the_lock_as_a_non_root_user() -> None:
    text = DOCKERFILE.read_text()
    # Base images are build arguments whose defaults are the public images.
    assert "ARG PYTHON_IMAGE=python:${PYTHON_VERSION}-slim-bookworm" in text
    assert "ARG UV_IMAGE=ghcr.io/astral-sh/uv:${UV_VERSION}" in text
    bases = re.findall(r"^FROM (\S+)", text, re.MULTILINE)
    assert bases == ["${UV_IMAGE}", "${PYTHON_IMAGE}", "${PYTHON_IMAGE}"]
    # The CA bundle of a test build is a secret mount, never copied into the image.
    assert "ca-certificates.crt" not in text and not re.search(r"^(COPY|ADD)\b.*\bca\b", text, re.MULTILINE)
    assert "ARG PYTHON_VERSION=3.11" in text
    syncs = re.findall(r"uv sync ([^\n]*)", text)
    assert syncs and all("--frozen" in line for line in syncs)
    assert "--extra-index-url" not in text and "download.pytorch.org" not in text  # torch comes from the lock
    users = re.findall(r"^USER (\S+)", text, re.MULTILINE)
    assert users and users[-1] not in {"root", "0"}
    # Every file the build copies from the context exists (and is not excluded from the context).
    ignored = {line.strip() for line in (DOCKER / "Dockerfile.dockerignore").read_text().splitlines()}
    assert ".venv" in ignored and ".git" in ignored
    for line in re.findall(r"^COPY (?!--from)(.*?)(?<!\\)$", text.replace("\\\n", " "), re.MULTILINE):
        parts = [part for part in line.split() if not part.startswith("--")]
        for source in parts[:-1]:
            assert (REPO_ROOT / source).exists(), f"COPY source {source} is missing"
            assert source.split("/")[0] not in ignored, (
                f"COPY source {source} is excluded by the dockerignore"
            )


TEMPLATE = "/opt/colbert-pipeline"


def _template_sources() -> dict[str, str]:
    """Each build-context path the Dockerfile copies into the workspace template: its path there."""
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    copied = {}
    for line in re.findall(r"^COPY (?!--from)(.*?)$", text, re.MULTILINE):
        *sources, destination = [part for part in line.split() if not part.startswith("--")]
        if not destination.startswith(TEMPLATE):
            continue
        for source in sources:
            target = destination + Path(source).name if destination.endswith("/") else destination
            copied[source] = target.removeprefix(TEMPLATE + "/")
    return copied


def _stage_deps() -> set[str]:
    """Every dependency path of every dvc.yaml stage, ``${...}`` resolved from params.yaml."""
    params = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())

    def resolve(match: re.Match) -> str:
        value: Any = params
        for key in match.group(1).split("."):
            value = value[key]
        return "" if value is None else str(value)

    stages = yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text())["stages"]
    deps = {
        re.sub(r"\$\{([^}]+)\}", resolve, dep) for stage in stages.values() for dep in stage.get("deps", [])
    }
    return {dep for dep in deps if dep}


def test_workspace_template_holds_every_tracked_stage_dependency() -> None:
    """docker/init-workspace.sh makes the workspace from the template: a dependency DVC finds missing there
    fails the stage (the `prepare.data` folder, `inputs/`, once did), however well the image builds."""
    copied = _template_sources()
    for source, target in copied.items():
        assert source == target, f"{source} lands at {TEMPLATE}/{target}: the template mirrors the repository"
    listed = subprocess.run(
        ["git", "ls-files", "--", *sorted(_stage_deps())], cwd=REPO_ROOT, capture_output=True, text=True
    ).stdout.splitlines()  # git-tracked: not the outputs of other stages, whatever a local run left
    tracked = [dep for dep in _stage_deps() if any(f == dep or f.startswith(dep + "/") for f in listed)]
    assert "inputs" in tracked and any(dep.startswith("pipeline/") for dep in tracked)
    for dep in tracked:
        assert any(dep == src or dep.startswith(src + "/") or src.startswith(dep + "/") for src in copied), (
            f"dvc.yaml depends on {dep}, which the Dockerfile does not copy into {TEMPLATE}"
        )


def _compose_cli() -> list[str] | None:
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True)
        if probe.returncode == 0:
            return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return None


def test_compose_config_validates(tmp_path: Path) -> None:
    cli = _compose_cli()
    if cli is None:
        pytest.skip("no Compose CLI here (neither `docker compose` nor `docker-compose`)")
    compose_file = COMPOSE
    if cli == ["docker-compose"]:
        # Compose v1 (Debian's docker-compose 1.29) predates the top-level `name`; validate the rest.
        data = yaml.safe_load(COMPOSE.read_text())
        assert data.pop("name") == "colbert-pipeline"
        compose_file = tmp_path / "compose.yaml"
        compose_file.write_text(COMPOSE.read_text().replace("name: colbert-pipeline\n", "", 1))
    for profile in ([], ["--profile", "celery"]):
        result = subprocess.run(
            [*cli, "-f", str(compose_file), "--project-directory", str(DOCKER), *profile, "config", "-q"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr
