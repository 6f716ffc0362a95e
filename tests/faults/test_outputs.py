"""The fault suite's comparison of a recovered run with the reference (tests/faults/outputs.py), on files."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from tests.faults.outputs import differences, record

LOCK = {
    "stages": {
        "train": {"outs": [{"path": "models/colbert", "md5": "aaa.dir"}]},
        "index": {
            "outs": [
                {"path": "indexes/sample", "md5": "bbb.dir"},
                {"path": "metrics/index.json", "md5": "ccc"},
            ]
        },
        "evaluate": {"outs": [{"path": "metrics/eval.json", "md5": "ddd"}]},
    }
}
INDEX = {"documents": 60, "build_seconds": 13.26, "search": {"qps": 5437.5, "mode": "exact"}}
EVAL = {"NanoBEIR_mean_MaxSim_ndcg@10": 0.6664, "rows": [{"system": "base", "ndcg@10": 0.6773}]}


def _workspace(root: Path, lock: dict, index: dict, evaluation: dict) -> Path:
    (root / "metrics").mkdir(parents=True)
    (root / "dvc.lock").write_text(yaml.safe_dump(lock))
    (root / "metrics" / "index.json").write_text(json.dumps(index))
    (root / "metrics" / "eval.json").write_text(json.dumps(evaluation))
    return root


def test_the_same_results_with_other_timings_are_the_same(tmp_path: Path) -> None:
    expected = record(_workspace(tmp_path / "a", LOCK, INDEX, EVAL))
    # another run: other timings, another search setting picked by speed, other hashes of the metrics files
    lock = json.loads(json.dumps(LOCK))
    lock["stages"]["index"]["outs"][1]["md5"] = "another"
    index = {**INDEX, "build_seconds": 20.1, "search": {"qps": 3000.0, "mode": "plaid"}}
    assert differences(expected, record(_workspace(tmp_path / "b", lock, index, EVAL))) == []


def test_a_changed_metric_value_is_a_difference(tmp_path: Path) -> None:
    expected = record(_workspace(tmp_path / "a", LOCK, INDEX, EVAL))
    changed = {**EVAL, "rows": [{"system": "base", "ndcg@10": 0.6772}]}
    observed = record(_workspace(tmp_path / "b", LOCK, INDEX, changed))
    assert differences(expected, observed) == ["metrics/eval.json: rows.0.ndcg@10 0.6773 -> 0.6772"]
    observed = record(_workspace(tmp_path / "c", LOCK, {**INDEX, "documents": 59}, EVAL))
    assert differences(expected, observed) == ["metrics/index.json: documents 60 -> 59"]
    missing = {k: v for k, v in EVAL.items() if k != "NanoBEIR_mean_MaxSim_ndcg@10"}
    observed = record(_workspace(tmp_path / "d", LOCK, INDEX, missing))
    assert differences(expected, observed) == [
        "metrics/eval.json: NanoBEIR_mean_MaxSim_ndcg@10 0.6664 -> <absent>"
    ]


def test_a_changed_output_hash_is_a_difference(tmp_path: Path) -> None:
    expected = record(_workspace(tmp_path / "a", LOCK, INDEX, EVAL))
    lock = json.loads(json.dumps(LOCK))
    lock["stages"]["train"]["outs"][0]["md5"] = "zzz.dir"
    observed = record(_workspace(tmp_path / "b", lock, INDEX, EVAL))
    assert differences(expected, observed) == ["models/colbert: aaa.dir -> zzz.dir"]
