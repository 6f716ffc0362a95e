"""``python -m bench.train --stage`` runs the train stage's trainer on tiny data (no timing asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _tiny(path: Path, words: int) -> Path:
    rows = [
        {
            "query": f"question {i % 2}",
            "positive": " ".join(["relevant"] * words) + f" {i}",
            "negative": " ".join(["other"] * words) + f" {i}",
        }
        for i in range(12)
    ]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_the_stage_trainer_bench_runs_on_tiny_data_and_writes_its_results(tmp_path):
    output = tmp_path / "results.json"
    command = [
        sys.executable,
        "-m",
        "bench.train",
        "--stage",
        "--steps", "1",
        "--warmup", "1",
        "--batch-size", "4",
        "--long", str(_tiny(tmp_path / "long.jsonl", 120)),
        "--short", str(_tiny(tmp_path / "short.jsonl", 5)),
        "--output", str(output),
    ]  # fmt: skip
    completed = subprocess.run(command, capture_output=True, text=True, cwd=REPO, timeout=1800, check=False)
    assert completed.returncode == 0, completed.stderr[-3000:]
    result = json.loads(output.read_text())
    assert [(run["data"], run["system"]) for run in result["runs"]] == [
        ("scifact", "stage"),
        ("short", "stage"),
    ]
    for run in result["runs"]:
        assert run["timed_steps"] == 1 and run["samples_per_s"] > 0
        # Two queries, six rows each: the stage's auto sampler keeps them apart, so a batch of 4 holds 2
        # rows, and the rate counts those 2, not the batch size.
        assert run["batch_sampler"] == "no_duplicates"
        assert run["rows_per_step"] == 2
        rows = run["rows_per_step"] * run["timed_steps"]
        assert run["samples_per_s"] == pytest.approx(rows / run["seconds"])
    assert set(result["samples_per_s_median"]) == {"scifact", "short"}
    assert "python -m bench.train --stage" in result["command"] and result["environment"]["cores"]
    assert "| scifact |" in completed.stdout


def _module(*arguments: str) -> str:
    """``python -m`` with ``arguments`` from the checkout's root; its stdout (it must succeed)."""
    command = [sys.executable, "-m", *arguments]
    completed = subprocess.run(command, capture_output=True, text=True, cwd=REPO, timeout=1800, check=False)
    assert completed.returncode == 0, completed.stderr[-3000:]
    return completed.stdout


def test_the_loss_comparison_runs_both_losses_in_their_own_processes():
    printed = _module("bench.train", "--batch-size", "2", "--mini-batch-size", "1", "--steps", "1")
    assert "| Contrastive |" in printed
    assert "| CachedContrastive(mini_batch_size=1) |" in printed


def test_one_step_on_the_fixed_batch(shared_data):
    printed = _module("bench.train.step", "--documents", "short", "--steps", "1", "--dropout", "0")
    result = json.loads(printed.splitlines()[0])
    assert result["seconds_per_step"] > 0 and result["shapes"]["query_input_ids"][0] == 16


def test_the_seeds_code_trains_against_pipeline_and_counts_its_rows(tmp_path):
    """The seeds' script (``bench.train.trainers seeds``) on tiny rows: the default batch sampler keeps
    repeated queries together, so each step trains on the full batch of 4."""
    from pipeline.models import resolve_model_name

    job = tmp_path / "job.json"
    rows = [json.loads(line) for line in _tiny(tmp_path / "rows.jsonl", 20).read_text().splitlines()]
    job.write_text(
        json.dumps(
            {
                "rows": rows,
                "train": {"batch_size": 4, "max_steps": 3, "seed": 0},
                "warmup": 1,
                "workdir": str(tmp_path),
                "base_model_path": resolve_model_name(None),
                "library": "pipeline",
            }
        )
    )
    result_path = tmp_path / "result.json"
    _module("bench.train.trainers", "seeds", "--job", str(job), "--result", str(result_path))
    result = json.loads(result_path.read_text())
    assert result["library"] == "pipeline"
    assert result["timed_steps"] == 2 and result["rows_per_step"] == 4
    assert result["samples_per_s"] == pytest.approx(8 / result["seconds"])


def test_the_seeds_record_renders_medians_ratios_and_each_run():
    from bench.render import render
    from bench.train.compare import medians

    runs = [
        {"data": data, "system": system, "samples_per_s": rate, "timed_steps": 8}
        for data, system, rate in [
            ("scifact", "pipeline", 4.0),
            ("scifact", "pylate", 5.0),
            ("scifact", "pipeline", 6.0),
            ("scifact", "pylate", 3.0),
            ("short", "pipeline", 6.0),
            ("short", "pylate", 4.0),
        ]
    ]
    summary = medians(runs, ["pipeline", "pylate"])
    assert summary["scifact"] == {"pipeline": 5.0, "pylate": 4.0, "pipeline_vs_pylate": 1.25}
    record = {"benchmark": "train_seeds", "runs": runs, "samples_per_s_median": summary, "train": {}}
    table = render(record)
    assert "| scifact | 5.00 | 4.00 | 1.25 | >= 1.0 | 4.00, 6.00; 5.00, 3.00 |" in table
    assert "| short | 6.00 | 4.00 | 1.50 | >= 1.2 | 6.00; 4.00 |" in table


def test_each_trainer_at_its_defaults_declares_the_precision_and_renders_both():
    """``--peer --defaults``: PyLate keeps fp32 where the stage resolved bf16; the record declares it, the
    table says so beside the ratio, and an undeclared difference would still be refused."""
    from bench.common import PEER_PINNED, SetupMismatch
    from bench.render import render
    from bench.train.compare import medians, per_system_train

    trains = per_system_train({"batch_size": 16, "precision": "bf16", "device": "cpu"}, defaults=True)
    assert (trains["stage"]["precision"], trains["peer"]["precision"]) == ("bf16", "fp32")
    assert trains["stage"]["batch_size"] == trains["peer"]["batch_size"] == 16

    def side(precision: str, threads: int = 2) -> dict:
        return {"precision": precision, "torch_threads": threads, "torch": "2.11.0"}

    runs = [
        {"data": "scifact", "system": "stage", "samples_per_s": 6.0, "setup": side("bf16")},
        {"data": "scifact", "system": "peer", "samples_per_s": 4.0, "setup": side("fp32")},
    ]
    record = {
        "runs": runs,
        "samples_per_s_median": medians(runs, ["stage", "peer"]),
        "train": trains["stage"],
        "comparison": "defaults",
        "declared": [*PEER_PINNED, "precision"],
        "precision": {"stage": "bf16", "peer": "fp32"},
    }
    table = render(record)
    assert "precision bf16 (stage), fp32 (PyLate)" in table
    assert "| scifact | 6.00 | 4.00 | 1.50 (precision bf16 vs fp32) |" in table
    runs[1]["setup"] = side("fp32", threads=1)
    with pytest.raises(SetupMismatch, match="torch_threads 2 vs 1"):
        render(record)


def test_defaults_needs_the_peer_and_the_stage_own_precision():
    for arguments in (["--stage", "--defaults"], ["--peer", "--defaults", "--precision", "fp32"]):
        command = [sys.executable, "-m", "bench.train", *arguments]
        completed = subprocess.run(command, capture_output=True, text=True, cwd=REPO, timeout=600)
        assert completed.returncode != 0 and "--defaults" in completed.stderr
