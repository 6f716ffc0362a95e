"""The promotion rule at its edges: exact ties, float noise, margins, and the decision file."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from pipeline.ops import promotion
from pipeline.project.errors import InputError


def champion(value: float, benchmark: str = "b", metric: str = "ndcg") -> SimpleNamespace:
    return SimpleNamespace(
        name="m",
        version="1",
        tags={
            promotion.BENCHMARK_TAG: benchmark,
            promotion.METRIC_NAME_TAG: metric,
            promotion.METRIC_VALUE_TAG: repr(value),
        },
    )


@pytest.mark.parametrize(
    ("value", "best", "margin", "promoted"),
    [
        (0.5, 0.5, 0.0, False),  # the exact tie
        (0.1 + 0.2, 0.3, 0.0, False),  # 0.30000000000000004: float noise is a tie
        (0.3000004, 0.3, 0.0, False),  # below the stated precision (1e-6)
        (0.300002, 0.3, 0.0, True),  # above it
        (0.62, 0.60, 0.02, False),  # exactly the margin is not "more than the margin"
        (0.621, 0.60, 0.02, True),
        (0.4, 0.5, 0.0, False),
    ],
)
def test_compare_at_the_stated_precision(value: float, best: float, margin: float, promoted: bool) -> None:
    assert promotion.compare(value, best, margin)[0] is promoted


def test_a_tie_through_decide_keeps_the_champion() -> None:
    promote, comparison, reason, value = promotion.decide(0.5, "ndcg", 0.0, "b", champion(0.5), None, None)
    assert (promote, comparison, value) == (False, "same_benchmark", 0.5)
    assert "does not beat the champion" in reason


def test_another_benchmark_without_reevaluation_is_not_comparable() -> None:
    promote, comparison, reason, _ = promotion.decide(
        0.9, "ndcg", 0.0, "new", champion(0.1, "old"), None, None
    )
    assert (promote, comparison) == (False, "not_comparable")
    assert "keeping champion v1" in reason


def test_a_failed_reevaluation_keeps_the_champion() -> None:
    def broken(uri: str) -> dict[str, float]:
        raise RuntimeError("download failed")

    promote, comparison, reason, _ = promotion.decide(
        0.9, "ndcg", 0.0, "new", champion(0.1, "old"), None, broken
    )
    assert (promote, comparison) == (False, "not_comparable")
    assert "RuntimeError: download failed" in reason


def test_the_decision_file_round_trips_and_bad_ones_name_the_key(tmp_path: Path) -> None:
    path = tmp_path / "registry.json"
    decision = promotion.Decision(promoted=True, version="3", reason="first", metric="ndcg", value=0.5)
    path.write_text(json.dumps(decision.as_dict()))
    assert promotion.Decision.read(path) == decision
    path.write_text(json.dumps({"promoted": "yes", "reason": "x"}))
    with pytest.raises(InputError, match=r"registry\.json: promoted: expected true or false"):
        promotion.Decision.read(path)
