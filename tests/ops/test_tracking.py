"""Tracking: URIs, bounded retry on a dead server, DVC-compatible hashes, stage/parent runs, step metrics
through transformers' own MLflow integration, system metrics and dataset inputs.

Runs against the session's SQLite tracking store (conftest); the real-server behaviour is in test_register.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import mlflow
import pytest
import yaml
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from pipeline.ops import lineage, tracking
from pipeline.project.config import Params
from pipeline.project.errors import EXIT_CODES, classify
from pipeline.training import trainer as training
from tests.mlflow_server import free_port


def _params(experiment: str, **tracking_args) -> Params:
    return Params.model_validate({"tracking": {"experiment": experiment, **tracking_args}})


def test_tracking_uri_is_absolute(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert tracking.tracking_uri(Params(), tmp_path) == f"sqlite:///{tmp_path.resolve()}/mlruns.db"
    relative = Params.model_validate({"tracking": {"tracking_uri": "sqlite:///store/t.db"}})
    assert tracking.tracking_uri(relative, tmp_path) == f"sqlite:///{tmp_path.resolve()}/store/t.db"
    folder = Params.model_validate({"tracking": {"tracking_uri": "mlruns"}})
    assert tracking.tracking_uri(folder, tmp_path) == (tmp_path / "mlruns").resolve().as_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert tracking.tracking_uri(relative, tmp_path) == "http://127.0.0.1:5000"


def test_dead_server_fails_after_bounded_retries(caplog):
    uri = f"http://127.0.0.1:{free_port()}"
    started = time.monotonic()
    with (
        caplog.at_level(logging.WARNING, logger="pipeline.ops.tracking"),
        pytest.raises(tracking.TrackingUnavailableError, match=r"not reachable after 3 attempts"),
    ):
        tracking.check_tracking_server(uri, retries=2, first_wait=0.05)
    assert time.monotonic() - started < 5
    assert len([r for r in caplog.records if "retrying" in r.message]) == 2


def test_sqlite_store_in_a_missing_folder_is_an_error(tmp_path):
    with pytest.raises(tracking.TrackingUnavailableError, match="does not exist"):
        tracking.check_tracking_server(f"sqlite:///{tmp_path}/missing/mlruns.db", retries=0)


@pytest.fixture
def silent_server():
    """A TCP server on 127.0.0.1 that accepts connections and never answers (a hung tracking server)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            with contextlib.suppress(OSError):
                held.append(listener.accept()[0])

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    stop.set()
    thread.join(5)
    for connection in held:
        connection.close()
    listener.close()


def test_a_server_that_never_answers_fails_within_the_configured_bound(silent_server, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", silent_server)
    params = _params("silent", retries=1, request_timeout=1)
    started = time.monotonic()
    with pytest.raises(tracking.TrackingUnavailableError, match="not reachable after 2 attempts") as failure:
        tracking.configure(params, tmp_path)
    assert time.monotonic() - started < 10  # 2 attempts x 1 s + 0.5 s backoff, with room for a slow machine
    assert classify(failure.value) == "infrastructure" and EXIT_CODES["infrastructure"] == 3


def test_mlflow_http_retries_are_the_one_bounded_retry_layer(silent_server, monkeypatch):
    for name in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(tracking, "_OWN_HTTP_SETTINGS", {})
    tracking.bound_mlflow_http_retries(retries=1, timeout=1)
    started = time.monotonic()
    with pytest.raises(MlflowException) as failure:
        MlflowClient(silent_server).search_experiments()
    assert time.monotonic() - started < 15  # (1 + 1) x 1 s + backoff, not MLflow's default of minutes
    assert classify(failure.value) == "infrastructure"  # a wrapped timeout: the task is retried


def test_a_refused_connection_is_infrastructure(monkeypatch):
    monkeypatch.setattr(tracking, "_OWN_HTTP_SETTINGS", {})
    monkeypatch.delenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", raising=False)
    tracking.bound_mlflow_http_retries(retries=0, timeout=1)
    with pytest.raises(MlflowException) as failure:
        MlflowClient(f"http://127.0.0.1:{free_port()}").search_experiments()
    assert classify(failure.value) == "infrastructure"


def test_compute_md5_is_the_hash_dvc_records(tmp_path):
    folder = tmp_path / "repo" / "data"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.txt").write_text("hello\n")
    (folder / "sub" / "b.txt").write_bytes(b"x\r\ny\n")
    repo = tmp_path / "repo"
    dvc = str(Path(sys.executable).parent / "dvc")
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    subprocess.run([dvc, "init", "-q"], cwd=repo, check=True)
    subprocess.run([dvc, "add", "-q", "data"], cwd=repo, check=True)
    recorded = yaml.safe_load((repo / "data.dvc").read_text())["outs"][0]["md5"]
    assert lineage.compute_md5(folder) == recorded
    assert lineage.dvc_md5(tmp_path / "nothing", repo) is None


def test_stage_runs_share_a_parent_and_carry_lineage(tmp_path, monkeypatch):
    monkeypatch.delenv(tracking.PARENT_RUN_ENV, raising=False)
    params = _params("tracking-stages")
    (tmp_path / "data" / "prepared" / "train").mkdir(parents=True)
    (tmp_path / "data" / "prepared" / "train" / "rows.jsonl").write_text('{"query": "q"}\n')
    with tracking.stage_run("train", params, tmp_path) as train_run:
        (tmp_path / "models" / "colbert").mkdir(parents=True)
        (tmp_path / "models" / "colbert" / "weights").write_bytes(b"w")
    with tracking.stage_run("evaluate", params, tmp_path) as eval_run:
        pass
    client = MlflowClient()
    train, evaluate = client.get_run(train_run.info.run_id), client.get_run(eval_run.info.run_id)
    parent = train.data.tags["mlflow.parentRunId"]
    assert evaluate.data.tags["mlflow.parentRunId"] == parent
    assert client.get_run(parent).data.tags["pipeline_parent"] == "true"
    model_md5 = lineage.compute_md5(tmp_path / "models" / "colbert")
    # train's output and evaluate's input are the same model, by hash
    assert train.data.tags["lineage.model.md5"] == evaluate.data.tags["lineage.model.md5"] == model_md5
    assert train.data.tags["lineage.data_train.md5"] == lineage.compute_md5(tmp_path / "data/prepared/train")
    assert train.data.tags["params_hash"] == lineage.params_hash(params)
    assert train.data.params["train.epochs"] == "1"
    assert train.info.status == "FINISHED"


def test_failed_stage_is_marked_failed_without_output_hashes(tmp_path, monkeypatch):
    monkeypatch.delenv(tracking.PARENT_RUN_ENV, raising=False)
    params = _params("tracking-failed")
    with pytest.raises(RuntimeError, match="boom"), tracking.stage_run("train", params, tmp_path) as run:
        (tmp_path / "models" / "colbert").mkdir(parents=True)
        (tmp_path / "models" / "colbert" / "half").write_bytes(b"h")
        raise RuntimeError("boom")
    finished = MlflowClient().get_run(run.info.run_id)
    assert finished.info.status == "FAILED"
    assert "lineage.model.md5" not in finished.data.tags
    assert mlflow.active_run() is None


def test_pipeline_run_is_idempotent_and_groups_stages(tmp_path, monkeypatch):
    params = _params("tracking-airflow")
    tags = {"airflow.dag_id": "colbert_pipeline", "airflow.run_id": "manual__1"}
    first = tracking.start_pipeline_run(params, tmp_path, tags)
    assert tracking.start_pipeline_run(params, tmp_path, tags) == first  # a retried task finds it again
    other = tracking.start_pipeline_run(params, tmp_path, {**tags, "airflow.run_id": "manual__2"})
    assert other != first
    monkeypatch.setenv(tracking.PARENT_RUN_ENV, first)
    with tracking.stage_run("prepare", params, tmp_path) as run:
        pass
    client = MlflowClient()
    assert client.get_run(run.info.run_id).data.tags["mlflow.parentRunId"] == first
    parent = client.get_run(first)
    assert parent.data.tags["mlflow.runName"] == "colbert_pipeline/manual__1"
    assert parent.info.status == "RUNNING"
    tracking.finish_pipeline_run(params, tmp_path, first, "FAILED")
    assert client.get_run(first).info.status == "FAILED"


def test_the_trainers_own_mlflow_integration_logs_each_step_into_the_stage_run(
    tmp_path, monkeypatch, saved_colbert
):
    """report_to=["mlflow"] finds the stage's run active: every step lands there, and no run of its own."""
    from datasets import Dataset

    from pipeline import models

    monkeypatch.delenv(tracking.PARENT_RUN_ENV, raising=False)
    for name in ("MLFLOW_RUN_ID", "MLFLOW_NESTED_RUN", "MLFLOW_EXPERIMENT_NAME"):
        monkeypatch.delenv(name, raising=False)  # what would make transformers open a run of its own
    params = Params.model_validate(
        {
            "train": {"max_steps": 3, "batch_size": 2, "device": "cpu", "learning_rate": 1e-30},
            "tracking": {"experiment": "tracking-hf-mlflow", "system_metrics": False},
        }
    )
    rows = [{"query": f"q{i}", "positive": f"answer {i}", "negative": f"other {i}"} for i in range(6)]
    model = models.ColBERT(model_name_or_path=str(saved_colbert), device="cpu")  # a copy: training moves it
    loss = training.build_loss(model, params.train, "triplets")
    with tracking.stage_run("train", params, tmp_path) as run:
        trainer = training.build_trainer(
            params.train,
            model,
            loss,
            Dataset.from_list(rows),
            "triplets",
            tmp_path / "ckpt",
            report_to=["mlflow"],
        )
        trainer.train()
        assert mlflow.active_run().info.run_id == run.info.run_id  # transformers did not end the stage's run
    client = MlflowClient()
    history = client.get_metric_history(run.info.run_id, "loss")
    assert sorted(m.step for m in history) == [1, 2, 3]
    logged = client.get_run(run.info.run_id).data
    assert {"grad_norm", "learning_rate", "train_runtime"} <= set(logged.metrics)
    assert logged.params["max_steps"] == "3" and logged.params["train.max_steps"] == "3"  # HF's and ours
    experiment = client.get_experiment_by_name("tracking-hf-mlflow").experiment_id
    runs = client.search_runs([experiment])
    stage_runs = [r.info.run_id for r in runs if r.data.tags.get("pipeline_parent") != "true"]
    assert stage_runs == [run.info.run_id]  # no run of transformers' own


def test_train_and_index_runs_sample_system_metrics_and_name_their_datasets(tmp_path, monkeypatch):
    monkeypatch.delenv(tracking.PARENT_RUN_ENV, raising=False)
    params = _params("tracking-system", system_metrics_interval=0.2)
    for split in ("train", "eval"):
        (tmp_path / "data" / "prepared" / split).mkdir(parents=True)
        (tmp_path / "data" / "prepared" / split / "rows.jsonl").write_text(f'{{"split": "{split}"}}\n')
    with tracking.stage_run("train", params, tmp_path, system_metrics=True) as train_run:
        time.sleep(1.5)  # a few samples
    with tracking.stage_run("register", params, tmp_path) as register_run:
        pass
    client = MlflowClient()
    train = client.get_run(train_run.info.run_id)
    assert any(key.startswith("system/cpu_utilization") for key in train.data.metrics), train.data.metrics
    assert any(key.startswith("system/system_memory_usage") for key in train.data.metrics)
    inputs = {d.dataset.name: d for d in train.inputs.dataset_inputs}
    assert set(inputs) == {"prepared_train"}
    md5 = lineage.compute_md5(tmp_path / "data" / "prepared" / "train")
    assert inputs["prepared_train"].dataset.digest == md5 == train.data.tags["lineage.data_train.md5"]
    assert {t.key: t.value for t in inputs["prepared_train"].tags}["mlflow.data.context"] == "training"
    register = client.get_run(register_run.info.run_id)
    assert {d.dataset.name for d in register.inputs.dataset_inputs} == {"prepared_train", "benchmark"}
    assert not [key for key in register.data.metrics if key.startswith("system/")]  # a short stage: off
    off = _params("tracking-system-off", system_metrics=False, system_metrics_interval=0.2)
    with tracking.stage_run("train", off, tmp_path, system_metrics=True) as quiet_run:
        time.sleep(0.6)
    assert not [k for k in client.get_run(quiet_run.info.run_id).data.metrics if k.startswith("system/")]


def test_bare_stage_names_outside_the_map_still_track(tmp_path, monkeypatch):
    monkeypatch.delenv(tracking.PARENT_RUN_ENV, raising=False)
    with tracking.stage_run("custom", _params("tracking-custom"), tmp_path, tags={"owner": "me"}) as run:
        pass
    tags = MlflowClient().get_run(run.info.run_id).data.tags
    assert tags["stage"] == "custom" and tags["owner"] == "me"
    assert not [key for key in tags if key.startswith("lineage.")]
    shutil.rmtree(tmp_path, ignore_errors=True)
