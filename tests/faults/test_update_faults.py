"""An in-place index update SIGKILLed half-way: the previous version keeps serving, the next run completes it.

``colbert-pipeline index`` runs in its own process group on a changed SciFact slice (4 added, 3 removed, 1
changed) and the group is SIGKILLed at the worst point of the update: the new version's PLAID files, store,
texts and corpus manifest all written, its commit not yet made (``COLBERT_PIPELINE_FAULT=publish``, see
:func:`pipeline.project.io.fault_point`). Then:

- ``CURRENT`` still names the previous version, which is whole: its manifest is the old corpus, and a search
  opened on the folder (as ``search`` and the served model open it) still finds a document the change removes;
- the next run updates in place again, the same 4/3/1, and publishes: the removed documents are gone and the
  half-written folder is swept.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline import indexes, models
from pipeline.indexes import updates
from pipeline.indexes.storage import VersionStore
from pipeline.project.io import FAULT_ENV
from tests.stages.test_index_update import CORPUS, scifact_rows, write_corpus
from tests.workspace import REPO

pytestmark = [pytest.mark.slow, pytest.mark.faults]

BIN = Path(sys.executable).parent
SETS = [f"index.corpus={CORPUS}", "index.name=scifact", "index.device=cpu", "index.probe_queries=5"]


def _index(project: Path, fault: str | None = None) -> subprocess.CompletedProcess:
    command = [str(BIN / "colbert-pipeline"), "index", *(arg for s in SETS for arg in ("--set", s))]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "MLFLOW_TRACKING_URI": f"sqlite:///{project}/mlruns.db"}
    env.pop(FAULT_ENV, None)
    if fault:
        env[FAULT_ENV] = fault
    # its own group: the fault point kills the whole group, as a dead worker takes the stage with it
    return subprocess.run(
        command, cwd=project, env=env, capture_output=True, text=True, timeout=900, start_new_session=True
    )


def _search(project: Path, model: models.ColBERT, texts: list[str]) -> set[str]:
    index = indexes.PLAID(index_folder=project / "indexes", index_name="scifact", device="cpu")
    return {hit["id"] for top in index.search(model.encode(texts, is_query=True), k=10) for hit in top}


def test_a_killed_update_leaves_the_previous_version_and_the_next_run_completes_it(tmp_path, saved_colbert):
    project = tmp_path / "project"
    project.mkdir()
    shutil.copy(REPO / "params.yaml", project / "params.yaml")
    shutil.copytree(saved_colbert, project / "models" / "colbert")
    rows = scifact_rows(64)
    write_corpus(project, rows[:60])
    first = _index(project)
    assert first.returncode == 0, first.stderr[-3000:]
    folder = project / "indexes" / "scifact"
    before = VersionStore(folder).current()

    removed = rows[:3]
    changed = {**rows[10], "text": rows[10]["text"] + " Corrected."}
    write_corpus(project, [changed if r is rows[10] else r for r in rows[3:60]] + rows[60:64])
    killed = _index(project, fault="publish")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]

    # The previous version still serves, whole.
    assert VersionStore(folder).current() == before
    manifest = updates.CorpusManifest.read(folder / before)
    assert list(manifest.ids) == [row["_id"] for row in rows[:60]]
    half_written = [p.name for p in folder.iterdir() if p.name.startswith("v") and p.name != before]
    assert half_written  # the new version was on disk, complete but not live
    model = models.ColBERT(model_name_or_path=str(project / "models" / "colbert"), device="cpu")
    assert rows[0]["_id"] in _search(project, model, [rows[0]["text"]])

    # The next run completes the update.
    again = _index(project)
    assert again.returncode == 0, again.stderr[-3000:]
    update = json.loads((project / "metrics" / "index.json").read_text())["update"]
    assert (update["mode"], update["added"], update["removed"], update["changed"]) == ("incremental", 4, 3, 1)
    after = VersionStore(folder).current()
    assert after not in (before, *half_written)
    assert {p.name for p in folder.iterdir() if p.name.startswith("v")} == {after}
    assert not {row["_id"] for row in removed} & _search(project, model, [row["text"] for row in removed])
