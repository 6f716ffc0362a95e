"""pipeline.ops.services and pipeline.ops.canary without starting anything: commands, environment, numbers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from pipeline.ops import canary, services, serving

INPUTS = {
    "COLBERT_PIPELINE_POSTGRES_HOST": "db.local",
    "COLBERT_PIPELINE_POSTGRES_PORT": "6543",
    "COLBERT_PIPELINE_POSTGRES_PASSWORD": "p@ss/word",
    "COLBERT_PIPELINE_REDIS_URL": "redis://broker:6379/0",
    "COLBERT_PIPELINE_AIRFLOW_API_URL": "http://api:9090/",
    "AIRFLOW_HOME": "/srv/airflow",
}


def test_airflow_services_share_one_celery_postgres_environment() -> None:
    env = services.environment("scheduler", INPUTS)
    # The password is URL-quoted: a '@' or '/' in it cannot break the URL.
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] == (
        "postgresql+psycopg2://airflow:p%40ss%2Fword@db.local:6543/airflow"
    )
    assert env["AIRFLOW__CELERY__RESULT_BACKEND"].startswith(
        "db+postgresql+psycopg2://airflow:p%40ss%2Fword@db."
    )
    assert env["AIRFLOW__CELERY__BROKER_URL"] == "redis://broker:6379/0"
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://api:9090/execution/"
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"] == "/srv/airflow/auth/passwords.json"
    assert env["PATH"].split(":")[0] == str(Path(sys.executable).parent)
    for name in ("api-server", "dag-processor", "triggerer", "worker", "init"):
        shared = {k: v for k, v in services.environment(name, INPUTS).items() if k.startswith("AIRFLOW__")}
        assert shared == {k: v for k, v in env.items() if k.startswith("AIRFLOW__")}, name


def test_the_callers_airflow_settings_win() -> None:
    env = services.environment("scheduler", {**INPUTS, "AIRFLOW__CORE__EXECUTOR": "LocalExecutor"})
    assert env["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"


def test_commands() -> None:
    worker = services.command("worker", {"COLBERT_PIPELINE_HOSTNAME": "w1"}, queue="gpu", concurrency=2)
    assert worker[1:] == [
        "celery",
        "worker",
        "--queues",
        "gpu",
        "--concurrency",
        "2",
        "--celery-hostname",
        "gpu@w1",
        "--skip-serve-logs",
    ]
    # A GPU host that takes CPU stages too: both queues, named after the first.
    both = services.command("worker", {"COLBERT_PIPELINE_HOSTNAME": "w2"}, queue="gpu,default")
    assert both[both.index("--queues") + 1] == "gpu,default"
    assert both[both.index("--celery-hostname") + 1] == "gpu@w2"
    for bad in ("cpu", "gpu,cpu", "gpu,gpu", ","):
        with pytest.raises(services.ServiceError, match="is not one or more of default, gpu"):
            services.command("worker", {}, queue=bad)
    api = services.command("api-server", {"AIRFLOW__API__PORT": "8123"})
    assert api[1:] == ["api-server", "--host", "127.0.0.1", "--port", "8123"]
    mlflow = services.command(
        "mlflow", {"MLFLOW_TRACKING_URI": "http://tracking:5000", "COLBERT_PIPELINE_MLFLOW_PORT": "5000"}
    )
    assert (
        mlflow[mlflow.index("--backend-store-uri") + 1]
        == "postgresql+psycopg2://mlflow:mlflow@postgres:5432/mlflow"
    )
    assert "tracking:5000" in mlflow[mlflow.index("--allowed-hosts") + 1].split(",")
    serve = services.command(
        "serve", {"COLBERT_PIPELINE_MODEL_NAME": "m", "COLBERT_PIPELINE_SERVE_PORT": "5009"}
    )
    assert Path(serve[0]).name == "colbert-pipeline" and serve[1] == "serve"  # follows the champion alias
    assert serve[serve.index("--port") + 1] == "5009" and serve[serve.index("--model") + 1] == "m"
    assert serve[serve.index("--alias") + 1] == "champion"
    assert serve[serve.index("--host") + 1] == "127.0.0.1"
    with pytest.raises(services.ServiceError, match="unknown service 'web'"):
        services.command("web", {})


def test_hostname_is_the_configured_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLBERT_PIPELINE_HOSTNAME", "worker-gpu")
    assert services.hostname() == "worker-gpu"


def test_env_entry_point_masks_secrets() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pipeline.ops.services", "env", "worker"],
        env={**INPUTS, "PATH": "/usr/bin"},
        capture_output=True,
        text=True,
        check=True,
    )
    lines = dict(line.split("=", 1) for line in result.stdout.splitlines())
    assert lines["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] == "***"
    assert "p%40ss" not in result.stdout and "p@ss" not in result.stdout
    assert lines["AIRFLOW__CELERY__BROKER_URL"] == "redis://broker:6379/0"


def test_urls_follow_the_ports_unless_set() -> None:
    env = services.environment(
        "worker", {"AIRFLOW__API__PORT": "9090", "COLBERT_PIPELINE_MLFLOW_PORT": "5050"}
    )
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://airflow-apiserver:9090/execution/"
    assert env["MLFLOW_TRACKING_URI"] == "http://mlflow:5050"
    # Compose hands an unset URL over as empty: the derived default applies.
    assert (
        services.environment("serve", {"MLFLOW_TRACKING_URI": ""})["MLFLOW_TRACKING_URI"]
        == "http://mlflow:5000"
    )
    assert services.environment("serve", INPUTS | {"MLFLOW_TRACKING_URI": "http://t:1"})[
        "MLFLOW_TRACKING_URI"
    ] == ("http://t:1")


def test_an_old_variable_name_is_refused_naming_the_new_one() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pipeline.ops.services", "env", "worker"],
        env={**INPUTS, "PATH": "/usr/bin", "AIRFLOW_FERNET_KEY": "k", "COLBERT_BIND_HOST": "0.0.0.0"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "pipeline.ops.services env: error: renamed settings (docker/.env or the environment): "
        "AIRFLOW_FERNET_KEY is now AIRFLOW__CORE__FERNET_KEY, "
        "COLBERT_BIND_HOST is now COLBERT_PIPELINE_BIND_HOST"
    )


def test_passwords_file_is_private_and_atomic(tmp_path: Path) -> None:
    path = tmp_path / "auth" / "passwords.json"
    services.write_passwords_file(path, "secret")
    assert json.loads(path.read_text()) == {"admin": "secret"}
    assert path.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in path.parent.iterdir()] == ["passwords.json"]


def test_importing_the_ops_modules_stays_light() -> None:
    code = "import sys, pipeline.ops.services, pipeline.ops.canary; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


class _Model:
    """A stand-in pyfunc: fixed ids per query; one query raises."""

    def __init__(self, answers: dict[str, list[str]]) -> None:
        self.answers = answers

    def predict(self, frame: pd.DataFrame, params: dict) -> pd.DataFrame:
        query = frame["query"].iloc[0]
        if query not in self.answers:
            raise RuntimeError("index not loaded")
        return pd.DataFrame({"query": [query], "ids": [self.answers[query]], "scores": [[1.0]]})


def test_canary_probe_counts_recall_latency_and_failures() -> None:
    canary_set = canary.CanarySet(
        benchmark="b",
        queries={"q1": "one", "q2": "two", "q3": "three"},
        qrels={"q1": {"d1": 1, "d2": 1}, "q2": {"d9": 1}, "q3": {"d1": 1}},
    )
    numbers = canary.probe(_Model({"one": ["d1", "d5"], "two": []}), canary_set)
    assert numbers["answered"] == 1 and numbers["queries"] == 3
    assert numbers["recall_at_10"] == 0.5
    assert numbers["errors"] == ["q2: no hits", "q3: RuntimeError: index not loaded"]
    assert numbers["p50_ms"] <= numbers["p95_ms"]


def test_percentile() -> None:
    assert canary.percentile([3.0, 1.0, 2.0], 50) == 2.0
    assert canary.percentile([1.0, 2.0, 3.0, 4.0, 5.0], 95) == pytest.approx(4.8)


def test_served_documents_are_bounded_and_bad_lines_named(tmp_path: Path) -> None:
    path = serving.write_documents({"a": "x" * 5000, "b": "short"}, tmp_path / "documents.jsonl")
    texts = serving.read_documents(path)
    assert len(texts["a"]) == serving.MAX_TEXT_CHARS and texts["b"] == "short"
    path.write_text('{"id": "a", "text": "ok"}\n{"id": "b"}\n')
    with pytest.raises(ValueError, match=r"documents.jsonl:2: not a \{id, text\} JSON line"):
        serving.read_documents(path)
