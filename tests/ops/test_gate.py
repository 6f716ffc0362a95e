"""The promotion gate's criteria as pure functions: recall, latency (with its second round), the record.

The gate against a real registry and real models is in test_register.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from pipeline.ops import gate
from pipeline.ops.promotion import EvaluationError

CHAMPION = SimpleNamespace(name="m", version="3", tags={})
QUALITY = gate.Criterion("quality", True, 0.6, 0.5, "beats the champion")
INDEX = {
    "search": {"recall@10": 0.97, "probe_queries": 50, "description": "exact"},
    "index_version": "v000002",
}


def _config(ratio: float | None = 1.2) -> SimpleNamespace:
    return SimpleNamespace(max_latency_ratio=ratio)


def _measure(*rounds: tuple[list[float], list[float]]):
    calls = []

    def measure(uri: str) -> tuple[list[float], list[float]]:
        calls.append(uri)
        return rounds[len(calls) - 1]

    return measure, calls


def test_a_noisy_first_round_is_measured_again_and_decided_on_all_passes() -> None:
    noisy = ([130.0, 125.0, 128.0], [100.0, 100.0, 100.0])  # one round over 1.2 by load, not by the model
    calm = ([99.0, 100.0, 102.0], [100.0, 101.0, 100.0])
    measure, calls = _measure(noisy, calm)
    inputs = gate.GateInputs(index_metrics=INDEX, recall_target=0.95, measure_latency=measure)
    quality, recall, latency = gate.criteria(_config(), inputs, QUALITY, CHAMPION)
    assert calls == ["models:/m/3", "models:/m/3"]
    assert latency.passed is True and len(latency.extra["challenger_pass_p95_ms"]) == 6
    assert gate.verdict([quality, recall, latency])[0] is True


def test_a_slower_challenger_is_refused_after_both_rounds_naming_the_numbers() -> None:
    slow = ([200.0, 210.0, 190.0], [100.0, 101.0, 99.0])
    measure, calls = _measure(slow, slow)
    inputs = gate.GateInputs(index_metrics=INDEX, recall_target=0.95, measure_latency=measure)
    checked = gate.criteria(_config(), inputs, QUALITY, CHAMPION)
    promote, reason = gate.verdict(checked)
    assert promote is False and len(calls) == 2
    assert reason.startswith(
        "refused by latency: single-query p95 200.0 ms vs champion v3 100.0 ms: ratio 2.000"
    )
    assert gate.numbers(checked) == {
        "gate_index_recall": 0.97,
        "gate_latency": 2.0,
        "gate_challenger_p95_ms": 200.0,
        "gate_champion_p95_ms": 100.0,
    }


def test_latency_is_not_measured_when_it_cannot_decide() -> None:
    measure, calls = _measure()
    low_recall = {"search": {"recall@10": 0.5}}
    inputs = gate.GateInputs(index_metrics=low_recall, recall_target=0.95, measure_latency=measure)
    _, recall, latency = gate.criteria(_config(), inputs, QUALITY, CHAMPION)
    assert recall.passed is False and latency.passed is None and calls == []
    assert "an earlier criterion refused" in latency.detail
    first = gate.criteria(_config(), inputs, QUALITY, None)[2]
    assert first.passed is None and first.detail == "no champion to compare with"
    off = gate.criteria(_config(None), gate.GateInputs(index_metrics=INDEX), QUALITY, CHAMPION)[2]
    assert off.passed is None and "null (off)" in off.detail


def test_a_champion_that_cannot_load_does_not_set_the_bar() -> None:
    def broken(uri: str):
        raise gate.ChampionUnavailable(f"{uri}: artifacts are gone")

    inputs = gate.GateInputs(index_metrics=INDEX, recall_target=0.95, measure_latency=broken)
    latency = gate.criteria(_config(), inputs, QUALITY, CHAMPION)[2]
    assert (
        latency.passed is None and "could not be loaded (models:/m/3: artifacts are gone)" in latency.detail
    )


def test_index_metrics_must_be_there_and_measured_on_this_index(tmp_path: Path) -> None:
    path = tmp_path / "index.json"
    with pytest.raises(EvaluationError, match=r"index\.json: not found: .*run the index stage"):
        gate.read_index_metrics(path, "v000002")
    path.write_text(json.dumps({"documents": 3}))
    with pytest.raises(EvaluationError, match=r"no search\.recall@10"):
        gate.read_index_metrics(path, "v000002")
    path.write_text(json.dumps(INDEX))
    assert gate.read_index_metrics(path, "v000002")["search"]["recall@10"] == 0.97
    with pytest.raises(EvaluationError, match=r"measured on index version v000002, but .* is v000003"):
        gate.read_index_metrics(path, "v000003")


def test_interleaving_alternates_who_goes_first() -> None:
    order: list[str] = []
    gate.interleaved_p95(lambda q: order.append(f"a{q}"), lambda q: order.append(f"b{q}"), ["1", "2"], 1)
    assert order == ["a1", "b1", "a1", "b1", "b2", "a2"]  # the untimed warm-up, then a-b, then b-a


def test_a_ratio_over_the_bound_in_only_some_passes_is_noise_and_does_not_refuse() -> None:
    """A sample-promotion run on a loaded machine: one architecture, per-pass p95s from 34 to 632 ms."""
    challenger = [439.5, 65.5, 124.0, 472.9, 98.5, 192.1, 141.4, 631.8, 56.2, 33.8]
    champion = [463.7, 85.0, 83.1, 203.5, 62.4, 168.4, 83.6, 53.3, 68.3, 36.6]
    latency = gate.latency_criterion(challenger, champion, 1.2, "1")
    assert latency.value > 1.2 and latency.extra["passes_over_bound"] == 5
    assert latency.passed is True and "not consistently slower" in latency.detail
