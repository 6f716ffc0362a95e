"""Stages that load no model start without torch: ``prepare`` on the sample and ``register`` (which reads an
index's version folder, never its classes) each save the 3 s torch's import takes, in every task of a run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

#: Run a stage through the CLI in this process, then say which heavy modules it imported.
DRIVER = """
import json, sys
from pipeline.cli import main
code = main([sys.argv[1]])
heavy = ("torch", "transformers", "sentence_transformers")
print("IMPORTED " + json.dumps(sorted(name for name in heavy if name in sys.modules)))
sys.exit(code)
"""

PARAMS = """\
prepare:
  source: sample
  eval_queries: 4
  eval_documents: 20
  sample:
    n_train_entities: 4
    n_eval_entities: 2
    n_distractors: 4
"""


def test_prepare_runs_on_the_sample_without_importing_torch(tmp_path: Path) -> None:
    (tmp_path / "params.yaml").write_text(PARAMS)
    (tmp_path / "inputs").mkdir()
    env = {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}", "HF_HUB_OFFLINE": "1"}
    completed = subprocess.run(
        [sys.executable, "-c", DRIVER, "prepare"],
        cwd=tmp_path,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    (line,) = [line for line in completed.stdout.splitlines() if line.startswith("IMPORTED ")]
    assert json.loads(line.removeprefix("IMPORTED ")) == []
    assert (tmp_path / "data" / "prepared" / "train").is_dir()  # it did prepare the data


def test_the_register_stage_and_the_version_store_import_no_torch() -> None:
    code = (
        "import sys, pipeline.stages.register, pipeline.indexes.storage, pipeline.cli.stages;"
        "from pipeline.cli.stages import _writes_results; assert _writes_results();"
        "print(sorted(m for m in ('torch', 'transformers', 'sentence_transformers') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["[]"]


def test_the_index_classes_load_when_first_named() -> None:
    from pipeline import indexes
    from pipeline.indexes.plaid import PLAID

    assert indexes.PLAID is PLAID and {"PLAID", "Voyager", "ScaNN", "MultiVectorIndex"} <= set(dir(indexes))
    with pytest.raises(AttributeError, match="has no attribute 'Plaid'"):
        indexes.Plaid  # noqa: B018 (the attribute access is what is tested)
