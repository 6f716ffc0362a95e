"""A run's overrides are written into the committed ``params.yaml`` with its comments and layout kept."""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml

from pipeline.ops import orchestration
from pipeline.project.params_file import write_overrides

REPO_ROOT = Path(__file__).resolve().parents[2]


def _comments(text: str) -> list[str]:
    return [line.split("#", 1)[1].strip() for line in text.splitlines() if "#" in line]


def test_the_committed_params_keep_their_comments_after_a_run_with_overrides(tmp_path: Path) -> None:
    params_path = tmp_path / "params.yaml"
    shutil.copyfile(REPO_ROOT / "params.yaml", params_path)
    committed = params_path.read_text()
    assert len(_comments(committed)) > 30  # the file people read: most keys explain themselves
    overrides = {
        "train.max_steps": 5,
        "train.epochs": 2,
        "register.margin": 0.01,
        "quality.systems": ["dense"],
        "index.recall_target": 0.9,
    }
    update = orchestration.apply_run_overrides(params_path, overrides, run_key="manual__comments")
    written = params_path.read_text()
    assert _comments(written) == _comments(committed)
    # Only the overridden lines changed; every other line is byte for byte the committed one.
    before, after = committed.splitlines(), written.splitlines()
    assert len(before) == len(after)
    changed = [(old, new) for old, new in zip(before, after, strict=True) if old != new]
    assert [new.split("#")[0].strip() for _, new in changed] == [
        "epochs: 2",
        "max_steps: 5",
        "recall_target: 0.9",
        "margin: 0.01",
        "systems: [dense]",
    ]
    values = yaml.safe_load(written)
    assert values["train"]["max_steps"] == 5 and values["quality"]["systems"] == ["dense"]
    assert sorted(update.changed) == sorted(overrides)
    # The run ends: the committed file comes back exactly.
    assert orchestration.restore_params(update.as_xcom()) is True
    assert params_path.read_text() == committed


def test_write_overrides_adds_sections_and_keeps_nulls(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text("# top\ntrain:\n  device: null    # auto\n")
    write_overrides(path, {"train.max_steps": 3, "tracking.system_metrics": False})
    assert path.read_text() == (
        "# top\ntrain:\n  device: null    # auto\n  max_steps: 3\ntracking:\n  system_metrics: false\n"
    )
    missing = tmp_path / "absent.yaml"
    write_overrides(missing, {"train.epochs": 2})
    assert yaml.safe_load(missing.read_text()) == {"train": {"epochs": 2}}
