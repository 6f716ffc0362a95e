"""``python -m bench.shards`` on 60 SciFact documents: both builds hold the same documents, their recall@10
against exact MaxSim is within 0.005 at every setting measured, and the record renders (no timing
asserted)."""

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
def test_the_shards_bench_compares_both_builds_on_a_tiny_corpus(tmp_path: Path, shared_data: Path) -> None:
    record = tmp_path / "shards.json"
    command = [
        sys.executable, "-m", "bench.shards",
        "--max-docs", "60",
        "--max-queries", "20",
        "--chunk-size", "25",  # the build from shards cuts chunks across their boundary (30 | 30)
        "--precision", "fp32",
        "--scratch", str(tmp_path / "scratch"),
        "--record", str(record),
    ]  # fmt: skip
    env = {**os.environ, "COLBERT_BENCH_DATA": str(shared_data)}
    completed = subprocess.run(command, capture_output=True, text=True, cwd=REPO, env=env, timeout=1200)
    assert completed.returncode == 0, completed.stderr[-3000:]
    result = json.loads(record.read_text())["shards"]
    assert (result["documents"], result["queries"], result["shards"]) == (60, 20, 2)
    assert result["same_documents_in_order"] is True
    assert [(row["n_ivf_probe"], row["n_full_scores"]) for row in result["recall"]] == [
        (8, 8192),
        (2, 256),
        (1, 32),
    ]
    for row in result["recall"]:
        assert 0 < row["recall_unsharded"] <= 1, row
        assert abs(row["recall_sharded"] - row["recall_unsharded"]) <= 0.005, row
    markdown = render(json.loads(record.read_text()))
    assert "Both indexes hold the same document ids in the same order" in markdown
    assert f"| 1, 32 | {result['recall'][2]['recall_unsharded']:.4f} |" in markdown
