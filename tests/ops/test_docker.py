"""The deployment files, checked offline (the real build and stack: docker/test-docker.sh, the last step of
`make test`).

``docker/compose.yaml`` is parsed and its services, profiles, healthchecks, volumes, environment, ports and
GPU reservation asserted; the Dockerfile's build inputs must exist and match the DAG's pools and queues; the
shell scripts must parse; ``docker/.env.example`` documents every variable, under one naming convention.
``docker compose config`` (or Debian's ``docker-compose`` 1.29) validates the file when a Compose CLI is
installed (``make services`` installs it as root), and shows a setting of ``docker/.env`` in every service.
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
ENV_EXAMPLE = DOCKER / ".env.example"
#: The Airflow containers' DAG folder (the image's AIRFLOW__CORE__DAGS_FOLDER).
DAGS_FOLDER = "/opt/colbert-pipeline/dags"
#: One convention: Airflow's AIRFLOW__SECTION__KEY, MLflow's own, the project's COLBERT_PIPELINE_*.
CONVENTION = re.compile(
    r"^(AIRFLOW__[A-Z0-9_]+__[A-Z0-9_]+|MLFLOW_TRACKING_URI|COLBERT_PIPELINE_[A-Z0-9_]+)$"
)

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
    # The champion followed as it is promoted (services.command: `colbert-pipeline serve`, tested in
    # tests/deploy/test_services.py); host, port, model and alias from the service's environment.
    assert _command(services["serve"]) == "python -m pipeline.ops.services serve"
    assert {
        "COLBERT_PIPELINE_BIND_HOST",
        "COLBERT_PIPELINE_SERVE_PORT",
        "COLBERT_PIPELINE_MODEL_NAME",
        "COLBERT_PIPELINE_MODEL_ALIAS",
    } <= set(services["serve"]["environment"])


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


def _with_defaults(text: str) -> str:
    """Compose's ``${NAME:-default}`` replaced by its default."""
    return re.sub(r"\$\{[A-Z0-9_]+:-([^}]*)\}", r"\1", text)


def test_volumes(compose: dict[str, Any], services: dict[str, Any]) -> None:
    declared = set(compose["volumes"])
    assert {"postgres-data", "workspace", "mlflow-artifacts", "airflow-logs"} <= declared
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = _with_defaults(volume).split(":")[0]
            if not source.startswith((".", "/")):
                assert source in declared, f"{name}: undeclared volume {source}"
            else:
                assert (DOCKER / source).exists(), f"{name}: bind mount {source} does not exist"
    assert "postgres-data:/var/lib/postgresql/data" in services["postgres"]["volumes"]
    assert "mlflow-artifacts:/mlflow/artifacts" in services["mlflow"]["volumes"]
    for name in AIRFLOW_SERVICES:
        assert "workspace:/workspace" in services[name]["volumes"], name


def test_the_dags_folder_is_this_checkouts_read_only(services: dict[str, Any]) -> None:
    """A DAG edit is live without a rebuild: every Airflow container mounts dags/ over the image's copy."""
    assert f"AIRFLOW__CORE__DAGS_FOLDER={DAGS_FOLDER}" in DOCKERFILE.read_text()
    for name in AIRFLOW_SERVICES | {"airflow-init"}:
        mounts = [_with_defaults(v) for v in services[name]["volumes"] if f":{DAGS_FOLDER}" in v]
        assert mounts == [f"../dags:{DAGS_FOLDER}:ro"], name
    for name in ("postgres", "mlflow", "serve", "redis"):
        assert not any(DAGS_FOLDER in volume for volume in services[name].get("volumes", [])), name


def _compose_env(service: dict[str, Any]) -> dict[str, str]:
    """A service's environment with compose's ``${NAME:-default}`` defaults filled in."""
    return {key: _with_defaults(str(value)) for key, value in service.get("environment", {}).items()}


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
    assert services["airflow-init"]["environment"]["COLBERT_PIPELINE_ADMIN_PASSWORD"]
    # A changed port moves the URL the other services use with it (no second setting to forget).
    moved = platform.environment(
        "worker", {**_compose_env(services["airflow-worker"]), "AIRFLOW__API__PORT": "9090"}
    )
    assert moved["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://airflow-apiserver:9090/execution/"


def test_every_service_reads_docker_env(services: dict[str, Any]) -> None:
    for name, service in services.items():
        assert service.get("env_file") == ".env", (
            f"{name}: AIRFLOW__* settings in docker/.env would not reach it"
        )


def _compose_variables(*paths: Path) -> set[str]:
    """Every variable compose files interpolate or hand a container (``${NAME}``, ``environment:``)."""
    names = set()
    for path in paths:
        text = path.read_text()
        names |= set(re.findall(r"(?<!\$)\$\{([A-Z0-9_]+)", text))
        for service in yaml.safe_load(text)["services"].values():
            names |= set(service.get("environment") or {})
    return names


def test_variables_follow_one_naming_convention() -> None:
    from pipeline.ops import services as platform

    # The postgres image's own variables and the GPU runtime's keep their names; they are not settings.
    theirs = {"POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB", "NVIDIA_VISIBLE_DEVICES"}
    for name in sorted(_compose_variables(COMPOSE, DOCKER / "compose.test.yaml") - theirs):
        assert CONVENTION.match(name), f"{name}: neither AIRFLOW__SECTION__KEY nor COLBERT_PIPELINE_*"
    # No reader is left on an old name: the deployment files, the DAGs, the package, the deploy tests.
    readers = [
        *(path for path in DOCKER.glob("*") if path.name != ".env"),
        *(REPO_ROOT / "dags").glob("*.py"),
        REPO_ROOT / "Makefile",
    ]
    readers += [*(REPO_ROOT / "pipeline").rglob("*.py"), *(REPO_ROOT / "tests" / "deploy").glob("*.py")]
    readers.remove(REPO_ROOT / "tests" / "deploy" / "test_services.py")  # sets old names, to see them refused
    for path in readers:
        text = path.read_text() if path.is_file() else ""
        if path.name == "services.py":  # its docstring and RENAMED table name them, to refuse them
            text = text.split('"""', 2)[2].split("RENAMED = {")[0]
        for old in platform.RENAMED:
            assert not re.search(rf"(?<![A-Z_]){old}(?![A-Z_])", text), (
                f"{path}: {old} (now {platform.RENAMED[old]})"
            )


def test_env_example_documents_every_variable() -> None:
    from pipeline.ops import services as platform

    documented = set(re.findall(r"^# ([A-Z0-9_]+)=", ENV_EXAMPLE.read_text(), re.MULTILINE))
    assert all(CONVENTION.match(name) for name in documented), documented
    # Every variable of every line is commented out: a copied example changes nothing (all defaults).
    assert not re.findall(r"^[A-Z]", ENV_EXAMPLE.read_text(), re.MULTILINE)
    dags = REPO_ROOT / "dags"
    # The DAGs' settings, as their docstrings list them (a name, two spaces, what it does; or ``NAME``).
    dag_settings = set(
        re.findall(r"\b(COLBERT_PIPELINE_[A-Z_]+)  ", (dags / "colbert_pipeline.py").read_text())
    )
    dag_settings |= set(
        re.findall(r"``(COLBERT_PIPELINE_[A-Z_]+)``", (dags / "colbert_canary.py").read_text())
    )
    # Compose sets these itself (where its volumes are mounted, each worker's queue): not for users to change.
    fixed = {
        "COLBERT_PIPELINE_WORKSPACE",
        "COLBERT_PIPELINE_MLFLOW_ARTIFACTS",
        "COLBERT_PIPELINE_QUEUE",
        "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK",
    }
    wanted = _compose_variables(COMPOSE) | set(platform._DEFAULTS) | set(platform._DERIVED) | dag_settings
    wanted = {name for name in wanted - fixed if CONVENTION.match(name)}
    assert sorted(wanted - documented) == []


def test_env_is_git_ignored_and_kept_out_of_the_image() -> None:
    ignored = subprocess.run(["git", "check-ignore", "-q", "docker/.env"], cwd=REPO_ROOT, check=False)
    assert ignored.returncode == 0, "docker/.env holds secrets: .gitignore must ignore it"
    example = subprocess.run(["git", "check-ignore", "-q", "docker/.env.example"], cwd=REPO_ROOT, check=False)
    assert example.returncode == 1, "docker/.env.example must be committed"
    assert "**/.env" in (DOCKER / "Dockerfile.dockerignore").read_text().splitlines()
    # Compose refuses a missing env_file: the Makefile makes docker/.env from the example.
    assert re.search(
        r"^docker/\.env:\n\tcp docker/\.env\.example \$@$", (REPO_ROOT / "Makefile").read_text(), re.MULTILINE
    )


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
    assert constants["REGISTER_POOL"] == platform.REGISTER_POOL  # the stateless mode's register pool


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


def _compose_project(tmp_path: Path, cli: list[str], env_text: str) -> Path:
    """A copy of docker/ (what compose reads) beside a link to dags/, with ``env_text`` as its ``.env``.

    A copy, so the test never writes (or reads) the user's own docker/.env.
    """
    project = tmp_path / "docker"
    project.mkdir()
    text = COMPOSE.read_text()
    if cli == ["docker-compose"]:
        # Compose v1 (Debian's docker-compose 1.29) predates the top-level `name`; validate the rest.
        assert yaml.safe_load(text)["name"] == "colbert-pipeline"
        text = text.replace("name: colbert-pipeline\n", "", 1)
    (project / "compose.yaml").write_text(text)
    for script in ("postgres-init.sh",):
        shutil.copy2(DOCKER / script, project / script)
    (tmp_path / "dags").symlink_to(REPO_ROOT / "dags")
    (project / ".env").write_text(env_text)
    return project


def _config(cli: list[str], project: Path, *profiles: str) -> subprocess.CompletedProcess:
    arguments = [arg for profile in profiles for arg in ("--profile", profile)]
    return subprocess.run(
        [
            *cli,
            "-f",
            str(project / "compose.yaml"),
            "--project-directory",
            str(project),
            *arguments,
            "config",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        # Only what docker/.env says: no COLBERT_PIPELINE_* or AIRFLOW__* of this shell may interpolate.
        env={key: value for key, value in os.environ.items() if not CONVENTION.match(key)},
    )


@pytest.fixture
def compose_cli() -> list[str]:
    cli = _compose_cli()
    if cli is None:
        pytest.skip(
            "no Compose CLI here (neither `docker compose` nor `docker-compose`; `make services` installs it)"
        )
    return cli


def test_compose_config_validates(tmp_path: Path, compose_cli: list[str]) -> None:
    project = _compose_project(tmp_path, compose_cli, ENV_EXAMPLE.read_text())  # `make docker/.env`'s copy
    for profiles in ((), ("celery",), ("celery", "serve")):
        result = _config(compose_cli, project, *profiles)
        assert result.returncode == 0, result.stderr


def test_docker_env_settings_reach_every_service(tmp_path: Path, compose_cli: list[str]) -> None:
    """An Airflow setting in docker/.env is in every service's environment; a project setting interpolates."""
    env_text = "AIRFLOW__CORE__PARALLELISM=7\nCOLBERT_PIPELINE_SCHEDULE=none\nAIRFLOW__API__PORT=8181\n"
    project = _compose_project(tmp_path, compose_cli, env_text)
    result = _config(compose_cli, project, "celery", "serve")
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    assert set(services) == BASE_SERVICES | CELERY_SERVICES | SERVE_SERVICES
    for name, service in services.items():
        assert service["environment"]["AIRFLOW__CORE__PARALLELISM"] == "7", name
    for name in AIRFLOW_SERVICES:
        environment = services[name]["environment"]
        assert environment["COLBERT_PIPELINE_SCHEDULE"] == "none", name
        assert environment["AIRFLOW__API__PORT"] == "8181", name
        dags = [
            v
            for v in services[name]["volumes"]
            if (v if isinstance(v, str) else v["target"]).count(DAGS_FOLDER)
        ]
        assert len(dags) == 1 and str(dags[0]).count(str(tmp_path / "dags")), dags
    published = services["airflow-apiserver"]["ports"]
    assert any("8181" in str(port) for port in published), published


def test_a_missing_docker_env_is_refused_by_compose(tmp_path: Path, compose_cli: list[str]) -> None:
    """Why `make docker/.env` exists: Compose will not start a stack whose env_file is missing."""
    project = _compose_project(tmp_path, compose_cli, "")
    (project / ".env").unlink()
    result = _config(compose_cli, project)
    assert result.returncode != 0 and ".env" in result.stderr
