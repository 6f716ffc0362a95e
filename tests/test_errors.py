"""One error taxonomy: each kind of failure maps to one exit status and one retry rule, end to end.

The stage is the real CLI in a child process; the kind comes back in its result file and its exit status.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.data.sources import LeakError
from pipeline.project.errors import EXIT_CODES, RETRYABLE, InfrastructureError, InputError, classify
from pipeline.project.params_file import write_params


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (InputError("params.yaml: train.epochs"), "input"),
        (LeakError("1 evaluation query is in the training set"), "input"),
        (FileNotFoundError(2, "No such file or directory", "data/x.jsonl"), "input"),
        (ValueError("row 3: empty query"), "input"),
        (ConnectionRefusedError(111, "Connection refused"), "infrastructure"),
        (TimeoutError("timed out"), "infrastructure"),
        (OSError(28, "No space left on device"), "infrastructure"),
        (OSError(27, "File too large"), "infrastructure"),
        (InfrastructureError("tracking server down"), "infrastructure"),
        (RuntimeError("CUDA error: an illegal memory access"), "internal"),
    ],
)
def test_each_kind_has_one_exit_status_and_retry_rule(error: BaseException, kind: str) -> None:
    assert classify(error) == kind
    assert EXIT_CODES[kind] == {"input": 2, "infrastructure": 3, "internal": 1}[kind]
    assert RETRYABLE[kind] is (kind != "input")


def test_a_wrapped_connection_error_is_infrastructure() -> None:
    try:
        try:
            raise ConnectionRefusedError(111, "Connection refused")
        except ConnectionRefusedError:
            raise RuntimeError("API request failed") from None  # what a client library's wrapper looks like
    except RuntimeError as wrapped:
        wrapped.__context__ = ConnectionRefusedError(111, "Connection refused")
        assert classify(wrapped) == "infrastructure"


def _stage(project: Path, stage: str, limit_bytes: int | None = None) -> tuple[int, dict]:
    result = project / "result.json"
    # MLflow's file store: many small files, so a per-file size limit hits the stage's own outputs first.
    env = {
        **os.environ,
        "COLBERT_PIPELINE_RESULT_FILE": str(result),
        "MLFLOW_TRACKING_URI": (project / "mlruns").as_uri(),
        "MLFLOW_ALLOW_FILE_STORE": "true",
    }

    def limit() -> None:  # a full disk, for this process only: writes past the limit fail with EFBIG
        if limit_bytes is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))

    done = subprocess.run(
        [sys.executable, "-m", "pipeline", stage, "--params", str(project / "params.yaml")],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        preexec_fn=limit,
        check=False,
    )
    assert result.exists(), done.stderr[-2000:]
    return done.returncode, json.loads(result.read_text())


def test_a_bad_row_fails_the_stage_as_input(tmp_path: Path) -> None:
    (tmp_path / "triplets.jsonl").write_text(
        '{"query": "q", "positive": "p", "negative": "n"}\n{"query": ""}\n'
    )
    write_params(
        {"prepare": {"source": "triplets", "triplets": {"path": "triplets.jsonl"}}}, tmp_path / "params.yaml"
    )
    code, result = _stage(tmp_path, "prepare")
    assert (code, result["kind"], result["ok"]) == (2, "input", False)
    assert "triplets.jsonl:2" in result["message"]


def test_a_full_disk_fails_the_stage_as_infrastructure(tmp_path: Path) -> None:
    write_params({"prepare": {"eval_queries": 5, "eval_documents": 50}}, tmp_path / "params.yaml")
    code, result = _stage(tmp_path, "prepare", limit_bytes=64 * 1024)
    assert (code, result["kind"]) == (3, "infrastructure"), result
    assert "File too large" in result["message"] or "No space" in result["message"]
