"""The pipeline DAG file imported under another module name, with parse-time settings from the environment."""

from __future__ import annotations

import importlib.util
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
