"""The package as installed: one version, declared dependencies, a core install without the MLOps stack.

The slow tests build the wheel, install it with no extras into a fresh venv (the locked versions, from uv's
cache), run the README's retrieval example there, and check that what needs an extra says which one.
"""

from __future__ import annotations

import ast
import functools
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

import pipeline
from pipeline.project.codedeps import ImportGraph

REPO = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
PROJECT = PYPROJECT["project"]
NAME = PROJECT["name"]
LIBRARY = {"models", "losses", "utils", "evaluation", "scores", "rank", "retrieve", "indexes", "training"}
#: What the MLOps stack brings: none of it is in the core install.
MLOPS_STACK = ("apache-airflow", "apache-airflow-core", "mlflow", "mlflow-skinny", "dvc", "matplotlib")
#: Imported but deliberately not declared, and why.
UNDECLARED = {"triton": "optional: indexes/plaid_options.py imports it in a try (torch brings it on Linux)"}
#: Imported by the library wing's modules but not needed by the library: each is behind an extra.
LIBRARY_EXTRAS = {
    "mlflow": "training.MlflowLossCallback, which require()s the mlops extra (only the train stage uses it)",
    "matplotlib": "project.io.atomic_save_figure, handed a figure by the stages' plots",
}


def requirements(extra: str | None = None) -> set[str]:
    """The distributions the core (``extra=None``) or an extra declares (other extras it names included)."""
    found: set[str] = set()
    for line in PROJECT["dependencies"] if extra is None else PROJECT["optional-dependencies"][extra]:
        requirement = Requirement(line)
        if canonicalize_name(requirement.name) == NAME:
            for other in requirement.extras:
                found |= requirements(other)
        else:
            found.add(canonicalize_name(requirement.name))
    return found


def third_party_imports(paths: list[Path]) -> dict[str, set[str]]:
    """Top-level module (``google.protobuf`` for the namespace package) -> files importing it."""
    found: dict[str, set[str]] = {}
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            else:
                continue
            for name in names:
                parts = name.split(".")
                top = ".".join(parts[:2]) if parts[0] == "google" else parts[0]
                if parts[0] not in sys.stdlib_module_names and parts[0] != "pipeline":
                    found.setdefault(top, set()).add(str(path.relative_to(REPO)))
    return found


@functools.cache
def distributions(module: str) -> frozenset[str]:
    """The installed distributions that provide ``module`` (a top-level name, or ``google.x``)."""
    if "." not in module:
        return frozenset(canonicalize_name(d) for d in _top_level_distributions().get(module, []))
    prefix = module.replace(".", "/") + "/"
    return frozenset(
        canonicalize_name(dist.metadata["Name"])
        for dist in importlib.metadata.distributions()
        if any(str(file).startswith(prefix) for file in dist.files or ())
    )


@functools.cache
def _top_level_distributions() -> dict[str, list[str]]:
    return importlib.metadata.packages_distributions()


# -- one version, the license, the metadata ------------------------------------------------------------


def test_the_version_has_one_source() -> None:
    assert "version" not in PROJECT and "version" in PROJECT["dynamic"]
    assert PYPROJECT["tool"]["hatch"]["version"]["path"] == "pipeline/__init__.py"
    assert importlib.metadata.version(NAME) == pipeline.__version__
    expected = f"colbert-pipeline {pipeline.__version__}"
    script = Path(sys.executable).with_name("colbert-pipeline")
    for command in ([str(script), "--version"], [sys.executable, "-m", "pipeline", "--version"]):
        done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=True)
        assert done.stdout.strip() == expected, command


def test_license_and_package_metadata() -> None:
    license_text = (REPO / "LICENSE").read_text()
    assert license_text.split()[:4] == ["Apache", "License", "Version", "2.0,"]
    assert "END OF TERMS AND CONDITIONS" in license_text
    assert PROJECT["license"] == "Apache-2.0" and PROJECT["license-files"] == ["LICENSE"]
    assert not [c for c in PROJECT["classifiers"] if c.startswith("License ::")]  # the SPDX id says it
    assert "Typing :: Typed" in PROJECT["classifiers"] and (REPO / "pipeline" / "py.typed").is_file()
    assert PROJECT["urls"]
    assert (REPO / "pipeline" / "__main__.py").is_file()


# -- dependencies -------------------------------------------------------------------------------------


def test_every_imported_package_is_declared() -> None:
    declared = requirements() | requirements("all")
    sources = [*(REPO / "pipeline").rglob("*.py"), *(REPO / "dags").rglob("*.py")]
    undeclared = {
        module: sorted(files)
        for module, files in third_party_imports(sources).items()
        if module not in UNDECLARED and not distributions(module) & declared
    }
    assert not undeclared, f"imported but not in pyproject.toml's dependencies or extras: {undeclared}"


def test_the_library_wing_needs_only_the_core_dependencies() -> None:
    graph = ImportGraph.of(REPO)
    todo = [name for name in graph.modules if name.split(".")[1:2] and name.split(".")[1] in LIBRARY]
    closure: set[str] = set()
    while todo:
        name = todo.pop()
        if name in closure:
            continue
        closure.add(name)
        parts = name.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts)) if ".".join(parts[:i]) in graph.modules]
        todo += graph.imports.get(name, ())
    assert not [name for name in closure if name.split(".")[1:2] in (["ops"], ["stages"], ["cli"])]
    core = requirements()
    outside = {
        module: sorted(files)
        for module, files in third_party_imports([graph.modules[name] for name in closure]).items()
        if module not in UNDECLARED and module not in LIBRARY_EXTRAS and not distributions(module) & core
    }
    assert not outside, f"the library wing imports what only an extra installs: {outside}"
    assert not {canonicalize_name(name) for name in MLOPS_STACK} & core


def test_a_missing_extra_is_named(tmp_path: Path) -> None:
    """Without mlflow (hidden here), the ops wing and a stage refuse to import, naming the extra."""
    hide = "import sys; sys.modules['mlflow'] = None\n"
    code = hide + "try:\n    import pipeline.ops.tracking\nexcept ImportError as error:\n    print(error)\n"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == (
        "pipeline.ops needs the 'mlops' extra (mlflow is not installed): "
        "pip install 'colbert-pipeline[mlops]'"
    )
    cli = hide + "from pipeline.cli import main\nraise SystemExit(main(['prepare']))\n"
    done = subprocess.run(
        [sys.executable, "-c", cli], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        "colbert-pipeline prepare: error: pipeline.stages needs the 'mlops' extra (mlflow is not installed): "
        "pip install 'colbert-pipeline[mlops]'"
    )


# -- the wheel, installed with no extras --------------------------------------------------------------


def uv_binary() -> str:
    found = shutil.which("uv") or str(Path.home() / ".local" / "bin" / "uv")
    assert Path(found).is_file(), "uv installs the project (make install): not found on PATH or ~/.local/bin"
    return found


def clean_env() -> dict[str, str]:
    """The environment for the fresh venv's processes: nothing pointing at this checkout or its .venv."""
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME"}}
    return {**env, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


@pytest.fixture(scope="module")
def core_venv(module_tmp_path: Path) -> Path:
    """The wheel installed with no extras into a fresh venv at the versions uv.lock pins (from uv's cache)."""
    uv, run = uv_binary(), {"check": True, "capture_output": True, "text": True, "cwd": REPO}
    started = time.monotonic()
    subprocess.run([uv, "build", "--wheel", "--out-dir", str(module_tmp_path / "dist")], timeout=600, **run)
    (wheel,) = (module_tmp_path / "dist").glob("colbert_pipeline-*.whl")
    pins = module_tmp_path / "core-pins.txt"
    export = ["export", "--frozen", "--no-dev", "--no-emit-project", "--no-hashes", "-o", str(pins)]
    subprocess.run([uv, *export], timeout=120, **run)
    venv = module_tmp_path / "venv"
    subprocess.run([uv, "venv", "--quiet", "--python", sys.executable, str(venv)], timeout=120, **run)
    built = time.monotonic()
    python = venv / "bin" / "python"
    subprocess.run([uv, "pip", "install", "-q", "--python", str(python), "-c", str(pins), str(wheel)], **run)
    installed = time.monotonic() - built
    print(f"wheel built in {built - started:.1f} s, installed with no extras in {installed:.1f} s")
    return python


def run_in(python: Path, code: str, cwd: Path, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(python), "-c", code], capture_output=True, text=True, cwd=cwd, env=clean_env(), **kwargs
    )


def retrieval_example() -> str:
    """The README's PyLate-style retrieval example (or, once it moves, the docs page that holds it)."""
    pages = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
    calls = ("models.ColBERT(", "indexes.PLAID(", "retrieve.ColBERT(")
    for page in filter(Path.is_file, pages):
        for block in re.findall(r"```python\n(.*?)```", page.read_text(encoding="utf-8"), flags=re.DOTALL):
            if all(call in block for call in calls):
                return block
    pytest.fail(
        "README.md and docs/ hold no python block with models.ColBERT, indexes.PLAID, retrieve.ColBERT"
    )


RUN_EXAMPLE = """
import json, sys
namespace = {}
exec(compile(open("example.py").read(), "example.py", "exec"), namespace)
ranked = [value for value in namespace.values() if isinstance(value, list) and value
          and all(isinstance(q, list) and all(isinstance(h, dict) and "id" in h for h in q) for q in value)]
import pipeline
loaded = sorted(name for name in ("mlflow", "dvc", "airflow", "matplotlib") if name in sys.modules)
print(json.dumps({"ranked": ranked, "pipeline": pipeline.__file__, "loaded": loaded}, default=float))
"""


@pytest.mark.slow
def test_the_core_install_leaves_out_the_mlops_stack(core_venv: Path, tmp_path: Path) -> None:
    code = (
        "import importlib.metadata as m, json\n"
        "names = sorted(d.metadata['Name'] for d in m.distributions())\n"
        "print(json.dumps(names))\n"
    )
    done = run_in(core_venv, code, tmp_path, check=True, timeout=120)
    installed = {canonicalize_name(name) for name in json.loads(done.stdout)}
    assert canonicalize_name(NAME) in installed
    assert not installed & {canonicalize_name(name) for name in MLOPS_STACK}, sorted(installed)
    print(f"the core install: {len(installed)} distributions")  # the whole stack (make install): ~290


@pytest.mark.slow
def test_the_core_install_runs_the_readme_retrieval_example(core_venv: Path, tmp_path: Path) -> None:
    (tmp_path / "example.py").write_text(retrieval_example())
    done = run_in(core_venv, RUN_EXAMPLE, tmp_path, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert Path(result["pipeline"]).is_relative_to(core_venv.parents[1]), result["pipeline"]  # the wheel's
    assert result["loaded"] == []
    (ranking,) = result["ranked"]
    assert ranking and all(hits for hits in ranking)
    for hits in ranking:
        scores = [hit["score"] for hit in hits]
        assert scores == sorted(scores, reverse=True)


@pytest.mark.slow
def test_the_core_install_names_the_extra_it_lacks(core_venv: Path, tmp_path: Path) -> None:
    message = "needs the 'mlops' extra"
    install = "pip install 'colbert-pipeline[mlops]'"
    code = "try:\n    import pipeline.ops.tracking\nexcept ModuleNotFoundError as error:\n    print(error)\n"
    done = run_in(core_venv, code, tmp_path, check=True, timeout=120)
    assert done.stdout.startswith(f"pipeline.ops {message}") and install in done.stdout, done.stdout
    script = core_venv.with_name("colbert-pipeline")
    stage = subprocess.run(
        [str(script), "prepare"], capture_output=True, text=True, cwd=tmp_path, env=clean_env(), timeout=120
    )
    assert stage.returncode == 2, stage.stderr
    assert f"pipeline.stages {message}" in stage.stderr and install in stage.stderr
    version = subprocess.run(
        [str(script), "--version"], capture_output=True, text=True, env=clean_env(), timeout=120, check=True
    )
    assert version.stdout.strip() == f"colbert-pipeline {pipeline.__version__}"
