"""The package's shape, checked: import layers, no cycles, sizes, and dvc.yaml's code deps.

The import graph is :class:`pipeline.project.codedeps.ImportGraph` (an ``ast`` walk of every ``import`` of
a ``pipeline`` module, lazy ones included), the same one ``colbert-pipeline dvc-deps`` writes dvc.yaml from.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from pipeline.project.codedeps import ImportGraph, rewrite_dvc_yaml
from tests.dvc_yaml import dvc_stages, entry_path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "pipeline"
IMPORTS = ImportGraph.of(REPO)
MODULES = IMPORTS.modules
GRAPH = IMPORTS.imports

LIBRARY = {"models", "losses", "utils", "evaluation", "scores", "rank", "retrieve", "indexes", "training"}
#: A module over this many lines mixes concerns: split it (at 350 where a split is natural). No exemptions.
MAX_LINES = 500
#: A function over this many lines does several things: split it.
MAX_FUNCTION_LINES = 80
#: Modules directly in pipeline/ (``__init__``, ``__main__`` aside); the rest live in folders named for
#: their wing.
MAX_FLAT_MODULES = 14
#: The code the size rules cover (tests are exempt).
SOURCES = sorted(
    path
    for folder in ("pipeline", "dags", "bench")
    for path in (REPO / folder).rglob("*.py")
    if ".peer-venv" not in path.parts
)


def layer(name: str) -> str:
    parts = name.split(".")
    if len(parts) > 1 and parts[1] in LIBRARY:
        return "library"
    if len(parts) > 1 and parts[1] in {"ops", "stages", "data", "project", "cli"}:
        return parts[1]
    return "core"


def test_the_graph_sees_the_package() -> None:
    assert "pipeline.stages.train" in GRAPH and "pipeline.ops.registry" in GRAPH
    assert "pipeline.ops.tracking" in GRAPH["pipeline.stages.train"]
    assert "pipeline.models" in GRAPH["pipeline.stages.train"]  # a lazy import counts


def _with_packages(name: str, children: set[str]) -> set[str]:
    """From outside a package, importing ``pipeline.a.b`` first runs ``pipeline/a/__init__.py``: an edge."""
    edges = set(children)
    for child in children:
        parent = child.rpartition(".")[0]
        inside = name == parent or name.startswith(parent + ".")
        if parent and parent != "pipeline" and parent in MODULES and not inside:
            edges.add(parent)
    return edges


def test_no_import_cycle() -> None:
    def visit(name: str, stack: list[str], done: set[str]) -> None:
        if name in stack:
            pytest.fail("import cycle: " + " -> ".join([*stack[stack.index(name) :], name]))
        if name in done:
            return
        for child in sorted(_with_packages(name, GRAPH.get(name, set())) - {name}):
            visit(child, [*stack, name], done)
        done.add(name)

    done: set[str] = set()
    for name in sorted(GRAPH):
        visit(name, [], done)


def test_only_the_cli_imports_a_stage() -> None:
    offenders = {
        name: sorted(child for child in children if child.startswith("pipeline.stages."))
        for name, children in GRAPH.items()
        if layer(name) not in {"cli", "stages"}
    }
    assert not {k: v for k, v in offenders.items() if v}
    stage_to_stage = {
        name: sorted(c for c in children if c.startswith("pipeline.stages.") and c != "pipeline.stages")
        for name, children in GRAPH.items()
        if name.startswith("pipeline.stages.")
    }
    assert not {k: v for k, v in stage_to_stage.items() if v}, "stages are leaves"


def test_bench_and_dags_import_no_stage() -> None:
    for path in [*(REPO / "bench").rglob("*.py"), *(REPO / "dags").rglob("*.py")]:
        if ".peer-venv" in path.parts:
            continue
        text = path.read_text()
        assert not re.search(r"(from|import) pipeline\.stages", text), path


def test_the_library_wing_never_imports_the_ops_wing_or_a_stage() -> None:
    for name, children in GRAPH.items():
        if layer(name) in {"library", "data"}:
            bad = sorted(c for c in children if layer(c) in {"ops", "stages"})
            assert not bad, f"{name} imports {bad}"


def test_the_ops_wing_imports_no_torch_at_module_level() -> None:
    heavy = {"torch", "transformers", "sentence_transformers", "fast_plaid", "voyager"}
    for name, path in MODULES.items():
        if layer(name) != "ops":
            continue
        tree = ast.parse(path.read_text())
        for node in tree.body:  # module level only: a function may import what it needs when called
            if isinstance(node, ast.Import):
                roots = {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                roots = {node.module.split(".")[0]}
                if node.module.startswith("pipeline"):
                    bad = [c for c in IMPORTS.imports_of(path) if layer(c) == "library"]
                    assert not bad, f"{name} imports the library wing at module level: {bad}"
            else:
                continue
            assert not roots & heavy, f"{name} imports {roots & heavy} at module level"


def test_the_project_plumbing_imports_only_itself() -> None:
    for name, children in GRAPH.items():
        if layer(name) == "project":
            bad = sorted(c for c in children if layer(c) != "project")
            assert not bad, f"{name} imports {bad}"


def test_modules_are_small() -> None:
    too_big = [
        f"{path.relative_to(REPO)} ({lines} lines)"
        for path in SOURCES
        if (lines := len(path.read_text().splitlines())) > MAX_LINES
    ]
    assert not too_big, f"over {MAX_LINES} lines: {too_big}"


def test_functions_are_short() -> None:
    too_long = []
    for path in SOURCES:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    too_long.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name} ({lines} lines)")
    assert not too_long, f"functions over {MAX_FUNCTION_LINES} lines: {too_long}"


def test_few_modules_sit_flat_in_the_package() -> None:
    flat = sorted(p.stem for p in PACKAGE.glob("*.py") if p.stem not in {"__init__", "__main__"})
    assert len(flat) <= MAX_FLAT_MODULES, f"{len(flat)} flat modules in pipeline/: {flat}"


def test_bench_loads_no_code_by_path() -> None:
    """``bench/`` is a package: its modules import each other, never through ``sys.path`` or a file path."""
    patterns = (
        r"sys\.path\.(insert|append)",
        r"spec_from_file_location",
        r"run_path",
        r"SourceFileLoader",
        r"importlib\.util",
        r"import_module\(",
    )
    for path in (REPO / "bench").rglob("*.py"):
        if ".peer-venv" in path.parts:
            continue
        found = [pattern for pattern in patterns if re.search(pattern, path.read_text())]
        assert not found, f"{path.relative_to(REPO)} loads code by path ({found})"


# -- dvc.yaml's code dependencies ------------------------------------------------------------------------


def stage_closure_files(stage: str) -> set[str]:
    return IMPORTS.stage_files(stage)


def covered(file: str, deps: list[str]) -> bool:
    return any(file == dep or file.startswith(dep.rstrip("/") + "/") for dep in deps)


@pytest.mark.parametrize("stage", sorted(dvc_stages()))
def test_dvc_yaml_lists_every_file_its_stage_imports(stage: str) -> None:
    spec = dvc_stages()[stage]
    # `.venv/bin/dvc repro` must work with the venv off PATH: the project's .venv is the fallback.
    assert spec["cmd"] == f'PATH="$PATH:$DVC_ROOT/.venv/bin" colbert-pipeline {stage}'
    deps = [d for d in spec.get("deps", []) if isinstance(d, str) and d.startswith("pipeline")]
    missing = sorted(f for f in stage_closure_files(stage) if not covered(f, deps))
    assert not missing, f"dvc.yaml stage {stage!r} does not depend on {missing}"


def test_the_closure_is_real() -> None:
    # A change to ColBERT.encode must re-run evaluate and index: models/colbert.py is in both closures.
    assert "pipeline/models/colbert.py" in stage_closure_files("evaluate")
    assert "pipeline/models/colbert.py" in stage_closure_files("index")
    assert "pipeline/project/report.py" not in stage_closure_files("train")


def _paths(entries: list) -> set[str]:
    return {entry_path(e) for e in entries or []}


@pytest.mark.parametrize("stage", sorted(dvc_stages()))
def test_layout_stage_io_agrees_with_dvc_yaml(stage: str) -> None:
    from pipeline.project.config import Params
    from pipeline.project.layout import STAGE_IO, Layout

    spec = dvc_stages()[stage]
    layout = Layout(Params(), REPO)
    artifacts = {name: layout.relative(path) for name, path in layout.artifacts().items()}
    reads, writes = STAGE_IO[stage]
    outs, deps = _paths(spec.get("outs")), _paths(spec.get("deps"))
    assert {artifacts[name] for name in writes} == outs & set(artifacts.values())
    assert {artifacts[name] for name in reads} <= deps


def test_dvc_yaml_code_deps_are_what_the_generator_writes() -> None:
    text = (REPO / "dvc.yaml").read_text()
    assert rewrite_dvc_yaml(text, IMPORTS) == text, "run `colbert-pipeline dvc-deps` after moving code"
