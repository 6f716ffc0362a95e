"""``python -m bench.train.precision_seeds``: the bf16-training decision is drawn only from seeds trained in
both precisions, and says by how much it misses when it does (the runs are in
bench/records/train_precision_seeds.json)."""

from __future__ import annotations

import pytest

from bench import render
from bench.train.precision_seeds import BENCHMARK, TOLERANCE, summarise


def _rows(scores: list[tuple[str, int, float]]) -> list[dict]:
    return [
        {"precision": p, "seed": s, "ndcg@10": v, "train_seconds": 300.0 if p == "fp32" else 200.0}
        for p, s, v in scores
    ]


def _record(rows: list[dict], seeds: list[int]) -> dict:
    return {
        "benchmark": BENCHMARK,
        "environment": {"date": "2026-12-07", "cores": 2},
        "evaluation": "SciFact test set",
        "rows": rows,
        "summary": summarise(rows, seeds),
    }


def test_no_decision_is_drawn_until_every_seed_has_both_runs() -> None:
    rows = _rows([("fp32", 1, 0.70), ("bf16", 1, 0.69), ("fp32", 2, 0.70)])
    summary = summarise(rows, [1, 2])
    assert summary["complete"] is False and summary["paired_seeds"] == [1]
    assert "holds" not in summary
    assert "Incomplete: seeds [1] have both runs" in render.render(_record(rows, [1, 2]))


def test_a_mean_loss_within_the_tolerance_holds_and_one_beyond_it_misses_by_the_excess() -> None:
    close = _rows([("fp32", 1, 0.700), ("bf16", 1, 0.698), ("fp32", 2, 0.690), ("bf16", 2, 0.689)])
    summary = summarise(close, [1, 2])
    assert summary["holds"] and summary["difference"] == pytest.approx(-0.0015)
    assert summary["train_speedup"] == 1.5
    # One run slowed by other work moves the median of the seeds' ratios no further than its rank.
    slowed = [
        {**row, "train_seconds": 900.0} if row["seed"] == 1 and row["precision"] == "fp32" else row
        for row in close
    ]
    assert summarise(slowed + _rows([("fp32", 3, 0.7), ("bf16", 3, 0.7)]), [1, 2, 3])["train_speedup"] == 1.5
    assert "holds: bf16 is within the tolerance" in render.render(_record(close, [1, 2]))
    far = _rows([("fp32", 1, 0.700), ("bf16", 1, 0.690), ("fp32", 2, 0.690), ("bf16", 2, 0.684)])
    summary = summarise(far, [1, 2])
    assert not summary["holds"] and summary["difference"] == pytest.approx(-0.008)
    text = render.render(_record(far, [1, 2]))
    assert f"misses by {0.008 - TOLERANCE:.4f}" in text
    assert "| 1 | 0.7000 | 0.6900 | -0.0100 | 300 | 200 |" in text
