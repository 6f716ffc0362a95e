"""Reproducible runs: the same DVC hashes in two workspaces and on a forced re-run, data files as
dependencies, and trials as DVC experiments.

Nothing machine- or time-specific may sit inside a hashed output (absolute paths, timestamps, random names):
the benchmark's meta files record no folder, the model card no training time, index versions no random suffix.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipeline.ops.reproduce import LINEAGE_STAGES, rerun
from tests.workspace import TINY, make_workspace, run, workspace_env

pytestmark = [pytest.mark.slow, pytest.mark.repro]

#: The stages whose outputs are bit-reproducible on CPU for a seed (the chain the DAG trains and serves).
CHAIN = "index"
PRIMARY = "NanoBEIR_mean_MaxSim_ndcg@10"


def lock_outputs(workspace: Path) -> dict[str, str]:
    """``{path: md5}`` of the outputs DVC caches (metrics/*.json are git's, and index.json holds timings)."""
    stages = yaml.safe_load((workspace / "dvc.lock").read_text())["stages"]
    return {
        out["path"]: out["md5"]
        for stage in stages.values()
        for out in stage.get("outs") or []
        if not out["path"].startswith("metrics/")
    }


@pytest.fixture(scope="module")
def workspaces(module_tmp_path: Path) -> list[tuple[Path, dict[str, str]]]:
    """Two fresh workspaces of the same commit, each having run prepare -> train -> index."""
    built = []
    for name in ("first", "second"):
        root = module_tmp_path / name
        workspace = make_workspace(root / "project")
        env = workspace_env(f"sqlite:///{root / 'mlruns.db'}", workspace)
        run(["dvc", "repro", CHAIN], workspace, env, timeout=1500)
        built.append((workspace, env))
    return built


def test_two_workspaces_give_identical_dvc_hashes(workspaces: list[tuple[Path, dict[str, str]]]) -> None:
    first, second = (lock_outputs(workspace) for workspace, _ in workspaces)
    assert {"data/prepared/train", "data/prepared/eval", "models/colbert", "indexes/sample"} <= set(first)
    assert first == second


def test_a_forced_rerun_gives_the_recorded_hashes(workspaces: list[tuple[Path, dict[str, str]]]) -> None:
    """``colbert-pipeline reproduce --rerun``'s step: prepare, train and index forced again, same dvc.lock."""
    workspace, env = workspaces[1]
    identical = rerun(workspace, LINEAGE_STAGES, env)
    cached = {path: same for path, same in identical.items() if not path.startswith("metrics/")}
    assert set(cached) >= {"data/prepared/train", "data/prepared/eval", "models/colbert", "indexes/sample"}
    assert all(cached.values()), identical  # metrics/index.json holds build and search timings: it differs


def test_trials_are_dvc_experiments_listed_with_their_ndcg(
    workspaces: list[tuple[Path, dict[str, str]]],
) -> None:
    workspace, env = workspaces[0]
    measured: dict[str, Any] = {}
    for steps in (2, 4):
        name = f"steps{steps}"
        run(["dvc", "exp", "run", "evaluate", "-S", f"train.max_steps={steps}", "-n", name], workspace, env)
        # `dvc exp run` leaves the experiment's results in the workspace: what the table must show for it.
        measured[name] = json.loads((workspace / "metrics" / "eval.json").read_text())[PRIMARY]
    table = run(["colbert-pipeline", "experiments"], workspace, env).stdout
    rows = {line.split(" | ")[0].strip("| "): line.split(" | ") for line in table.splitlines()[2:]}
    assert table.splitlines()[0] == f"| experiment | rev | train.max_steps | eval.{PRIMARY} |"
    for name, value in measured.items():
        assert rows[name][2] == name.removeprefix("steps")
        assert rows[name][3].strip(" |") == f"{value:.4f}"


def _triplets(n: int) -> str:
    rows = [
        {
            "query": f"what is the capital of country {i}?",
            "positive": f"The capital of country {i} is city number {i}, on the river {i % 7}.",
            "negative": f"Country {(i + 3) % n} exports grain and steel.",
        }
        for i in range(n)
    ]
    return "".join(json.dumps(row) + "\n" for row in rows)


def test_one_changed_byte_of_the_input_reruns_prepare_and_its_dependants(tmp_path: Path) -> None:
    triplets = "inputs/triplets.jsonl"  # inside prepare.data (inputs/), the path dvc.yaml watches
    overrides = {**TINY, "prepare.source": "triplets", "prepare.triplets.path": triplets}
    workspace = make_workspace(tmp_path / "project", overrides, files={triplets: _triplets(160)})
    env = workspace_env(f"sqlite:///{tmp_path / 'mlruns.db'}", workspace)
    run(["dvc", "repro", "train"], workspace, env, timeout=1500)
    status = json.loads(run(["dvc", "status", "--json"], workspace, env).stdout)
    assert "prepare" not in status and "train" not in status

    path = workspace / triplets
    path.write_bytes(path.read_bytes().replace(b"grain ", b"grain!", 1))  # one byte
    status = json.loads(run(["dvc", "status", "--json"], workspace, env).stdout)
    assert status["prepare"] == [{"changed deps": {"inputs": "modified"}}]
    assert "train" not in status  # its input is prepare's output, unchanged until prepare runs again

    output = run(["dvc", "repro", "train"], workspace, env, timeout=1500).stdout
    assert "Running stage 'prepare'" in output and "Running stage 'train'" in output
    assert json.loads(run(["dvc", "status", "--json", "prepare", "train"], workspace, env).stdout) == {}
