"""Shared test fixtures (the offline switches and the session's MLflow store are in the root conftest.py)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.paths import require_shared_data


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` beside the checkout: off CI a test that needs it skips with the reason when it is
    absent, on CI it fails (tests/paths.py)."""
    return require_shared_data()


@pytest.fixture(scope="module")
def module_tmp_path(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Path]:
    """A folder for one test module's shared fixtures, removed once its tests are done unless one failed.

    pytest keeps every ``tmp_path_factory`` folder until the session ends. The module fixtures' workspaces,
    models, MLflow stores and indexes take hundreds of MB each, and kept for the whole ``make test`` they
    filled a CI machine's disk. A module whose test failed keeps its folder, as pytest keeps a failed test's.
    """
    folder = tmp_path_factory.mktemp(request.module.__name__.rpartition(".")[2])
    failed_before = request.session.testsfailed
    yield folder
    if request.session.testsfailed == failed_before:
        shutil.rmtree(folder, ignore_errors=True)


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
