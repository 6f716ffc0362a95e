"""The pipeline DAG file imported under another module name, with parse-time settings from the environment."""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

DAG_FILE = Path(__file__).resolve().parents[1] / "dags" / "colbert_pipeline.py"


def load_dag_module(monkeypatch: pytest.MonkeyPatch, name: str, **env: str) -> Any:
    """Import the DAG file as ``name`` with ``env`` set first (its parse-time settings are read on import)."""
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    spec = importlib.util.spec_from_file_location(name, DAG_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def dag_test_env(base: Mapping[str, str], home: Path, workspace: Path, **settings: str) -> dict[str, str]:
    """The environment of an ``airflow`` process that runs a DAG of ``dags/`` with ``dag.test()``.

    Its own ``AIRFLOW_HOME``, no example DAGs, the workspace the DAG runs in, no retries (``dag.test()``
    would wait out their delays) and no deadline: Airflow 3.3.2's ``dag.test()`` fails a successful run of a
    DAG with a deadline alert as it ends (it hands ``DeadlineAlertModel.get_by_id`` the alert's definition,
    a dict, where the scheduler hands its id: "'dict' object has no attribute 'hex'"); the deadline has its
    own test (``tests/ops/test_dag_alerts.py``). ``settings`` add to or override these.
    """
    return {
        **base,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAG_FILE.parent),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "COLBERT_PIPELINE_WORKSPACE": str(workspace),
        "COLBERT_PIPELINE_RETRIES": "0",
        "COLBERT_PIPELINE_DEADLINE": "none",
        **settings,
    }
