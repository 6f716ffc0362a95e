"""What a pipeline run leaves, compared by value: the fault suite's "recovered to the same outputs".

A run is recorded as the DVC hash (``dvc.lock``) of each output, except its JSON files (the metrics), which
are recorded value by value: a metrics file also holds what a run measured about itself (seconds, queries per
second, the search settings the index stage picked by measured speed), so its hash differs between two
identical runs, and those entries are left out by name (:data:`MEASURED`) while every other value must be
equal. tests/faults/test_outputs.py shows that a changed metric value is a difference and a changed timing
is not.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

#: Entries of a metrics file that measure the run rather than its result, by key name: times and rates
#: (``build_seconds``, ``qps``, ``samples_per_second``, ``p50_ms``), the machine (``threads``, ``host``,
#: ``hostname``, ``pid``), index.json's ``search``, the settings the index stage picked as the fastest on
#: this machine (timing-dependent by design: its ``search.json`` is kept out of the index's hash too), and
#: index.json's ``update``, how the index was made: rebuilt, or (a re-run that found the previous build in
#: DVC's cache) kept or updated in place; the index itself is compared by its hash.
MEASURED = re.compile(r"(.*seconds?|.*qps|.*_ms|threads|host|hostname|pid|search|update)")


def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": [1, 2]}}`` -> ``{"a.b.0": 1, "a.b.1": 2}``, without :data:`MEASURED` keys.

    Example:
        >>> flatten({"ndcg@10": 0.5, "build_seconds": 3.2, "search": {"qps": 9}, "rows": [{"n": 1}]})
        {'ndcg@10': 0.5, 'rows.0.n': 1}
    """
    if isinstance(data, dict):
        items = [(str(key), value) for key, value in data.items() if not MEASURED.fullmatch(str(key))]
    elif isinstance(data, list):
        items = [(str(i), value) for i, value in enumerate(data)]
    else:
        return {prefix: data}
    flat: dict[str, Any] = {}
    for key, value in items:
        flat.update(flatten(value, f"{prefix}.{key}" if prefix else key))
    return flat


def record(workspace: Path) -> dict[str, Any]:
    """Each output of ``dvc.lock``: its md5, or for a JSON file its values (:func:`flatten`)."""
    stages = yaml.safe_load((workspace / "dvc.lock").read_text())["stages"]
    recorded: dict[str, Any] = {}
    for stage in stages.values():
        for out in stage.get("outs") or []:
            path = workspace / out["path"]
            if out["path"].endswith(".json") and path.is_file():
                recorded[out["path"]] = flatten(json.loads(path.read_text()))
            else:
                recorded[out["path"]] = out["md5"]
    return recorded


def differences(expected: dict[str, Any], observed: dict[str, Any]) -> list[str]:
    """Each output (or metric value) that differs, named; empty when the two records are the same.

    Example:
        >>> differences({"metrics/eval.json": {"ndcg@10": 0.5}}, {"metrics/eval.json": {"ndcg@10": 0.4}})
        ['metrics/eval.json: ndcg@10 0.5 -> 0.4']
    """
    found = []
    for path in sorted(expected.keys() | observed.keys()):
        before, after = expected.get(path), observed.get(path)
        if isinstance(before, dict) and isinstance(after, dict):
            for key in sorted(before.keys() | after.keys()):
                old, new = before.get(key, "<absent>"), after.get(key, "<absent>")
                if old != new:
                    found.append(f"{path}: {key} {old} -> {new}")
        elif before != after:
            found.append(f"{path}: {before} -> {after}")
    return found
