"""Where the real IR data lives (``../shared/data`` beside the checkout), and what a test does without it.

Every test that reads the real data asks :func:`require_shared_data` for the folder (or takes the
``shared_data`` fixture, which does): one place decides what a missing folder means.

- On CI (``CI`` set to ``true``, as ``.ci/run`` sets it): a failure naming the test. CI always has the data
  beside its clone, so a missing folder there is a broken machine, and a test that did not run must not pass.
- Elsewhere (a clone without ``../shared``, as anyone who clones the repository has it): a skip, with why.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = REPO_ROOT.parent / "shared"
SHARED_DATA = SHARED / "data"


def on_ci() -> bool:
    """``CI=true`` (or ``1``/``yes``): what CI services set, and ``.ci/run`` exports for a run by hand."""
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def shared_data_present(relative: str = "") -> bool:
    """Whether ``../shared/data/<relative>`` is there (a test chooses between corpora with this)."""
    return (SHARED_DATA / relative).exists()


def require_shared_data(relative: str = "") -> Path:
    """``../shared/data/<relative>``; fails on CI and skips elsewhere when it is missing (see the module)."""
    path = SHARED_DATA / relative
    if path.exists():
        return path
    message = f"real IR data not found at {path} (clone the project beside ../shared)"
    if on_ci():
        pytest.fail(f"{message}; CI=true: CI has ../shared beside its clone, so it must run", pytrace=False)
    pytest.skip(message)
