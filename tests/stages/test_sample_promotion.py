"""The default sample exercises the promotion gate: it is learnable, does not saturate, and ranks settings.

On the tiny sample (``tests.workspace.TINY``) the stages run in order, as ``dvc repro`` runs them, and the
real register stage decides against the real MLflow registry: the first trained model becomes champion, a
model trained with a worse setting stays challenger, one trained with a better setting is promoted. The
settings were chosen from a measurement (docs/history.md, "Running it"), not tuned to pass: with
``train.seed`` 42, 43 and 44 the base model scores 0.68, 0.60 and 0.64 here, eight steps at the default
learning rate 0.73, 0.73 and 0.80, eight at 1e-4 0.88, 0.94 and 0.85. Three steps at the default rate (the
tiny workspace's) are a coin flip against the base model: 0.67, 0.72, 0.71, and with torch's own dropout
masks 0.70, 0.71, 0.61. Those runs trained in float32, so the test pins ``train.precision: fp32``: with
bf16 autocast (what ``auto`` became on a bf16-native CPU) eight steps at the default rate scored 0.659
against the base model's 0.677 in one run, and the settings have not been re-measured in bf16.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from pipeline.project.params_file import load_params
from pipeline.stages import baseline, evaluate, index, prepare, register, train
from tests.workspace import REPO, TINY

pytestmark = pytest.mark.slow
METRIC = "NanoBEIR_mean_MaxSim_ndcg@10"


def _run(project: Path, overrides: dict) -> tuple[float, dict]:
    """train -> evaluate -> index -> register with ``overrides``: the score and the registry's decision."""
    params = load_params(project / "params.yaml", {**TINY, **overrides})
    for stage in (train, evaluate, index):
        stage.run(params, project)
    score = json.loads((project / "metrics" / "eval.json").read_text())[METRIC]
    register.run(params, project)
    return score, json.loads((project / "metrics" / "registry.json").read_text())


def test_better_setting_promotes_and_worse_does_not_through_the_register_gate(tmp_path, monkeypatch):
    project = tmp_path / "project"
    project.mkdir()
    shutil.copy(REPO / "params.yaml", project / "params.yaml")
    monkeypatch.chdir(project)
    name = {
        "register.model_name": "sample-gate",
        "tracking.experiment": "sample-gate",
        "train.precision": "fp32",
    }
    params = load_params(project / "params.yaml", {**TINY, **name})
    prepare.run(params, project)
    baseline.run(params, project)
    base = json.loads((project / "metrics" / "baseline.json").read_text())[METRIC]
    assert base < 0.9, f"the untrained model already scores {base:.3f}: the sample is too easy"

    first, decision = _run(project, {**name, "train.max_steps": 8})
    assert decision["promoted"] is True and decision["version"] == "1"
    assert base < first < 1.0, (base, first)

    worse, decision = _run(project, {**name, "train.learning_rate": 1e-6, "train.max_steps": 1})
    assert worse < first and decision["promoted"] is False and decision["champion_after"] == "1"

    better, decision = _run(project, {**name, "train.learning_rate": 1e-4, "train.max_steps": 8})
    assert first < better < 1.0, (first, better)
    assert decision["promoted"] is True and decision["champion_after"] == decision["version"] == "3"
