"""The train stage under ``torchrun`` with two CPU processes (gloo): documents gathered across them, one
MLflow run, one model and one result file, all from rank 0.

The loss's arithmetic across processes is checked in ``tests/library/test_distributed_loss.py``; this is the
launch path a user types (``torchrun --nproc_per_node N -m pipeline train``), kept to two steps of two rows
per process.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from pipeline.ops.runner import run_process
from pipeline.project.layout import RESULT_FILE_ENV
from tests.stages.test_train_dev import _write_prepared

pytestmark = pytest.mark.slow  # two processes loading MiniLM: about two minutes on a busy 2-core machine

#: Two processes loading MiniLM and training two steps; far longer means a hang in a collective.
TIMEOUT_SECONDS = 480


@contextmanager
def deadline(seconds: int) -> Iterator[None]:
    """Raise TimeoutError in this (main) thread after ``seconds``: run_process then stops the whole group."""

    def expired(signum: int, frame: object) -> None:
        raise TimeoutError(f"torchrun did not finish in {seconds} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def test_two_processes_train_with_gathered_negatives_and_rank_zero_writes(tmp_path: Path) -> None:
    _write_prepared(tmp_path)  # 12 triplet rows
    (tmp_path / "params.yaml").write_text("{}\n")
    torchrun = Path(sys.executable).with_name("torchrun")
    command = [str(torchrun), "--nproc_per_node", "2", "-m", "pipeline", "train"]
    command += [f"--set=train.{key}" for key in ("max_steps=2", "batch_size=2", "device=cpu", "save_steps=1")]
    tracking = f"sqlite:///{tmp_path / 'mlruns.db'}"  # this run's own store: its runs are the only ones
    env = {**os.environ, RESULT_FILE_ENV: str(tmp_path / "result.json"), "MLFLOW_TRACKING_URI": tracking}
    env["OMP_NUM_THREADS"] = "1"
    lines: list[str] = []
    with deadline(TIMEOUT_SECONDS):
        result = run_process(command, cwd=tmp_path, env=env, emit=lines.append)
    log = "\n".join(lines)
    assert result.returncode == 0, log[-4000:]
    # Both ranks built the gathered loss; 2 rows per process make a global batch of 4: a step is 4 of 12 rows.
    assert log.count("documents gathered across 2 processes") == 2, log[-4000:]
    assert "'epoch': '0.6667'" in log
    report = json.loads((tmp_path / "result.json").read_text())
    assert report["ok"] and report["summary"]["steps"] == 2
    assert log.count('"stage": "train"') == 1  # only rank 0 printed the summary
    client = MlflowClient(tracking_uri=tracking)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()], "tags.stage = 'train'")
    assert [run.info.run_id for run in runs] == [report["mlflow_run_id"]]
    assert (tmp_path / "models" / "colbert" / "model.safetensors").is_file()
    assert not (tmp_path / "models" / "colbert-checkpoints").exists()
