"""Shared fixtures. Everything runs offline on the CPU with the packaged all-MiniLM-L6-v2."""

from __future__ import annotations

import os

# Set before any Hugging Face import so no test can reach the Hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session", autouse=True)
def mlflow_tracking_db(tmp_path_factory) -> str:
    """One SQLite tracking store for the session: creating its tables costs ~10-25 s, so do it once.

    Tests that need their own server or store set ``MLFLOW_TRACKING_URI`` themselves (monkeypatch).
    """
    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlruns.db'}"
    previous = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = uri
    yield uri
    if previous is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = previous


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` beside the checkout; tests that need it skip with a reason when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real IR data not found at {SHARED_DATA} (clone the project beside ../shared)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def colbert_model():
    """A fresh ColBERT model built from the offline MiniLM (random projection, seeded)."""
    import torch

    from pipeline import models

    torch.manual_seed(0)
    return models.ColBERT(device="cpu")


@pytest.fixture(scope="session")
def saved_colbert(colbert_model, tmp_path_factory) -> Path:
    """The session model saved to disk, for tests that need a path (subprocesses, pipelines)."""
    path = tmp_path_factory.mktemp("models") / "colbert"
    colbert_model.save_pretrained(str(path))
    return path
