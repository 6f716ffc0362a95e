"""On CI a skip is a failure unless conftest.py's ``CI_MAY_SKIP`` names the test; elsewhere it stays a skip.

Each case runs pytest in a subprocess over a few tiny tests, with a copy of the project's root conftest.py
(the hook under test) and one allow-list entry added to that copy.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests import paths

TINY_TESTS = textwrap.dedent(
    """
    import pytest

    @pytest.fixture(scope="module")
    def widget():
        pytest.skip("no widget here")

    def test_runs():
        pass

    def test_skips():
        pytest.skip("no gadget here")

    def test_skips_in_a_fixture(widget):
        pass

    def test_allowed():
        pytest.skip("needs CUDA")

    @pytest.mark.xfail(reason="a known bug")
    def test_expected_to_fail():
        assert False
    """
)
SKIPPED_MODULE = 'import pytest\npytest.skip("whole module", allow_module_level=True)\n'


def _run_pytest(folder: Path, ci: str | None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "PYTEST_ADDOPTS", "PYTEST_XDIST_WORKER")}
    if ci is not None:
        env["CI"] = ci
    env["PYTHONPATH"] = str(paths.REPO_ROOT)  # the conftest imports tests.paths
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rA", "-q", str(folder)],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture
def project(tmp_path: Path) -> Path:
    conftest = (paths.REPO_ROOT / "conftest.py").read_text()
    allowed = '\nCI_MAY_SKIP["test_tiny.py::test_allowed"] = "CUDA only; CI has no GPU"\n'
    (tmp_path / "conftest.py").write_text(conftest + allowed)
    (tmp_path / "test_tiny.py").write_text(TINY_TESTS)
    return tmp_path


def test_on_ci_a_skip_fails_unless_it_is_allowed(project: Path) -> None:
    result = _run_pytest(project, "true")
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "FAILED test_tiny.py::test_skips - test_tiny.py::test_skips skipped on CI" in output
    assert "no gadget here" in output
    assert "ERROR test_tiny.py::test_skips_in_a_fixture" in output  # the fixture's skip, in setup
    assert "SKIPPED [1] test_tiny.py" in output and "needs CUDA" in output  # on the allow-list
    assert "XFAIL test_tiny.py::test_expected_to_fail" in output  # an expected failure is not a skip
    assert "PASSED test_tiny.py::test_runs" in output
    assert "1 failed, 1 passed, 1 skipped, 1 xfailed, 1 error" in output


def test_off_ci_a_skip_stays_a_skip(project: Path) -> None:
    for ci in (None, "false"):
        result = _run_pytest(project, ci)
        output = result.stdout + result.stderr
        assert result.returncode == 0, output
        assert "1 passed, 3 skipped, 1 xfailed" in output


def test_on_ci_a_skipped_module_fails(project: Path) -> None:
    (project / "test_tiny.py").unlink()
    (project / "test_skipped_module.py").write_text(SKIPPED_MODULE)
    on_ci = _run_pytest(project, "true")
    assert on_ci.returncode != 0 and "whole module" in on_ci.stdout, on_ci.stdout + on_ci.stderr
    assert _run_pytest(project, None).returncode == pytest.ExitCode.NO_TESTS_COLLECTED


def test_the_shared_data_helper_fails_on_ci_and_skips_elsewhere(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(paths, "SHARED_DATA", tmp_path / "absent")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match=r"absent/scifact .*CI=true"):
        paths.require_shared_data("scifact")
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match=r"absent/scifact \(clone the project beside"):
        paths.require_shared_data("scifact")
    (tmp_path / "absent" / "scifact").mkdir(parents=True)
    assert paths.require_shared_data("scifact") == tmp_path / "absent" / "scifact"
