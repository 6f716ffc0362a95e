"""`reproduce` in a clone that lacks a setting: the error names the setting and how to set it.

Issue 31 (CLARIFICATIONS): a fresh clone reaches the run's tracking server, DVC remote and git remote only
through the usual settings; when one is missing, the command says which and how. (A reproduce that works is
tested end to end: tests/e2e/test_pipeline_e2e.py after ``dvc repro``, tests/e2e/test_dag_e2e.py after a DAG
run, tests/deploy/test_deploy_stateless.py after a stateless DAG run.)
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import yaml

from pipeline.ops import dvc_remote, reproduce, versioning
from pipeline.project.errors import InputError, PipelineError

#: A DVC project's lineage stages, each with an output whose (made-up) hash no remote holds.
DVC_YAML = {
    "stages": {stage: {"cmd": "true", "outs": [f"out/{stage}"]} for stage in reproduce.LINEAGE_STAGES}
}
DVC_LOCK = {
    "schema": "2.0",
    "stages": {
        stage: {"cmd": "true", "outs": [{"path": f"out/{stage}", "hash": "md5", "md5": f"{n:032x}.dir"}]}
        for n, stage in enumerate(reproduce.LINEAGE_STAGES, start=1)
    },
}


def test_a_tracking_uri_naming_no_store_names_the_setting_and_creates_nothing(tmp_path: Path) -> None:
    # A fresh clone without MLFLOW_TRACKING_URI: its default is a store in the clone that does not exist.
    store = tmp_path / "fresh-clone" / "mlruns.db"
    with pytest.raises(InputError, match=r"no tracking store at .*mlruns\.db.*set MLFLOW_TRACKING_URI"):
        reproduce.version_tags("champion", "colbert-pipeline", f"sqlite:///{store}")
    assert not store.exists() and not store.parent.exists()


def test_a_version_missing_from_the_registry_names_the_tracking_setting() -> None:
    from mlflow import MlflowClient

    uri = os.environ["MLFLOW_TRACKING_URI"]  # the session's store (conftest.py): no such model there
    MlflowClient(tracking_uri=uri).search_registered_models()  # (opening it creates it, as a real one is)
    with pytest.raises(InputError) as raised:
        reproduce.version_tags("never-registered@champion", "colbert-pipeline", uri)
    message = str(raised.value)
    assert "'never-registered' alias 'champion' is not in the registry at " + uri in message
    assert "set MLFLOW_TRACKING_URI (or tracking.tracking_uri in params.yaml)" in message


def _dvc_project(path: Path) -> Path:
    path.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=path, check=True)
    subprocess.run([versioning.dvc_executable(), "init", "-q"], cwd=path, check=True)
    (path / "dvc.yaml").write_text(yaml.safe_dump(DVC_YAML))
    (path / "dvc.lock").write_text(yaml.safe_dump(DVC_LOCK))
    return path


def test_a_pull_from_a_remote_the_clone_does_not_configure_says_how_to_configure_it(tmp_path: Path) -> None:
    dest, url = _dvc_project(tmp_path / "checkout"), str(tmp_path / "remote-elsewhere")
    (tmp_path / "remote-elsewhere").mkdir()
    with pytest.raises(InputError) as raised:
        reproduce.pull_lineage(dest, url, known=None)
    message = str(raised.value)
    assert f"this clone has no DVC remote with the URL {url}" in message
    assert f"`dvc remote add --local <name> {url}`" in message and "endpointurl" in message
    # The pull did run against that URL, as the checkout's default remote, and said what it missed.
    assert "Missing cache files" in message
    assert dvc_remote.read_remote(dest).url == url


def test_a_failed_pull_from_a_configured_remote_is_not_blamed_on_the_settings(tmp_path: Path) -> None:
    dest, url = _dvc_project(tmp_path / "checkout"), str(tmp_path / "remote")
    (tmp_path / "remote").mkdir()
    known = dvc_remote.DataRemote("runs", {"url": url})
    with pytest.raises(PipelineError) as raised:
        reproduce.pull_lineage(dest, url, known=known)
    assert not isinstance(raised.value, InputError)
    assert "Missing cache files" in str(raised.value) and "dvc remote add" not in str(raised.value)
