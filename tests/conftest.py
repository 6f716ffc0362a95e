"""Shared test fixtures (the offline switches and the session's MLflow store are in the root conftest.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


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
