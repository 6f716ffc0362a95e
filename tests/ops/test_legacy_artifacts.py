"""A version registered and an index written before the package's folders moved still load and answer.

The fixture (``tests/fixtures/legacy-0.1``, see its PROVENANCE.md) is the folder MLflow stored for a served
model version at the last commit before the move, with its own copy of the package under ``code/``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
FIXTURE = REPO / "tests" / "fixtures" / "legacy-0.1"
TINY = FIXTURE.parent / "pylate-tiny"
EXPECTED = json.loads((FIXTURE / "answers.json").read_text())


@pytest.fixture(scope="module")
def legacy_model(module_tmp_path: Path) -> Path:
    with tarfile.open(FIXTURE / "search_model.tar.gz") as tar:
        tar.extractall(module_tmp_path, filter="data")
    return module_tmp_path / "search_model"


def _check(ids: list[list[str]], scores: list[list[float]]) -> None:
    assert ids == EXPECTED["ids"]
    np.testing.assert_allclose(scores, EXPECTED["scores"], atol=1e-3)


def test_a_version_registered_before_the_move_answers_in_this_process(legacy_model, tmp_path, monkeypatch):
    import mlflow
    import pandas as pd

    from pipeline import indexes  # the new package is imported first, as inside `colbert-pipeline serve`

    monkeypatch.chdir(tmp_path)  # the session's SQLite store keeps artifacts under ./mlruns
    # an experiment of this store: the active one may be another test's, on a server that is gone
    mlflow.set_experiment("legacy-fixture")
    with mlflow.start_run() as run:
        mlflow.log_artifacts(str(legacy_model), "search_model")
    version = mlflow.register_model(f"runs:/{run.info.run_id}/search_model", "legacy-fixture")
    (tmp_path / "download").mkdir()
    model = mlflow.pyfunc.load_model(
        f"models:/legacy-fixture/{version.version}", dst_path=str(tmp_path / "download")
    )
    answer = model.predict(pd.DataFrame({"query": EXPECTED["queries"]}), params={"k": 2})
    _check(answer["ids"].tolist(), answer["scores"].tolist())
    assert all(texts[0].startswith(("Late interaction", "ColBERT")) for texts in answer["texts"])
    # It ran this checkout's code, not the copy the version carries under code/.
    assert Path(indexes.__file__).is_relative_to(REPO)
    assert sys.modules["pipeline"] is sys.modules[indexes.__name__.rpartition(".")[0]]


def test_a_version_registered_before_the_move_answers_in_a_fresh_process(legacy_model):
    script = (
        "import json, sys, mlflow.pyfunc, pandas as pd\n"
        "model = mlflow.pyfunc.load_model(sys.argv[1])\n"
        "answer = model.predict(pd.DataFrame({'query': json.loads(sys.argv[2])}), params={'k': 2})\n"
        "print(json.dumps({'ids': answer['ids'].tolist(), 'scores': answer['scores'].tolist()}))\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, "-c", script, str(legacy_model), json.dumps(EXPECTED["queries"])],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=True,
    )
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    _check([list(map(str, row)) for row in answer["ids"]], answer["scores"])


def test_an_index_written_before_the_move_opens_and_searches(legacy_model):
    from pipeline import indexes, models

    index_path = next(p for p in (legacy_model / "artifacts").iterdir() if (p / "CURRENT").is_file())
    index = indexes.PLAID(
        index_folder=str(index_path.parent), index_name=index_path.name, override=False, device="cpu"
    )
    assert index.num_documents == 3
    model = models.ColBERT(model_name_or_path=str(TINY / "model"), device="cpu")
    queries = model.encode(EXPECTED["queries"], is_query=True)
    hits = index.search(queries, k=2)
    _check([[str(hit["id"]) for hit in row] for row in hits], [[hit["score"] for hit in row] for row in hits])
