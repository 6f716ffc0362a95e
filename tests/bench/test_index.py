"""``python -m bench.index`` on a few SciFact documents: every step's worker runs and the record renders
(no timing asserted)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.render import render

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_the_index_bench_runs_each_step_on_a_tiny_corpus_and_records_it(tmp_path: Path, shared_data: Path):
    record = tmp_path / "index.json"
    command = [
        sys.executable, "-m", "bench.index",
        "--datasets", "scifact",
        "--kinds", "plaid",
        "--max-docs", "60",
        "--max-queries", "6",
        "--probe-queries", "6",
        "--precision", "fp32",
        "--scratch", str(tmp_path / "scratch"),
        "--record", str(record),
    ]  # fmt: skip
    env = {
        **os.environ,
        "COLBERT_BENCH_DATA": str(shared_data),
        "COLBERT_BENCH_CACHE": str(tmp_path / "cache"),
    }
    completed = subprocess.run(command, capture_output=True, text=True, cwd=REPO, env=env, timeout=1200)
    assert completed.returncode == 0, completed.stderr[-3000:]
    report = json.loads(record.read_text())
    assert report["command"].startswith("python -m bench.index --datasets scifact")
    assert not report["errors"], report["errors"]
    rows = {row["index"]: row for row in report["rows"]}
    assert list(rows) == ["encode", "exact MaxSim", "plaid", "plaid at target"]
    assert rows["encode"]["ours"]["documents"] == 60 and rows["encode"]["ours"]["probes"] == 6
    assert 0 <= rows["plaid"]["ours"]["recall@10"] <= 1 and rows["plaid"]["ours"]["tuned"]["target"] == 0.95
    # Both the embeddings every index step reads and the run's full results sit in the cache folder.
    assert list((tmp_path / "cache" / "embeddings").glob("scifact-60d-6q-6p.npz"))
    assert len(list((tmp_path / "cache" / "runs").glob("index_bench-*.json"))) == 1
    assert render(report) in completed.stdout
