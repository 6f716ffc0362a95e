"""The package's shape, checked: import layers, no cycles, module sizes, and dvc.yaml's code deps.

The import graph is read with ``ast`` (every ``import`` of a ``pipeline`` module, at the top of a file or
inside a function: a lazy import is still a dependency).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "pipeline"

LIBRARY = {"models", "losses", "utils", "evaluation", "scores", "rank", "retrieve", "indexes", "training"}
#: Modules allowed over the size limit, because each is one cohesive thing (their docstrings say so).
MAX_LINES = 350


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in PACKAGE.rglob("*.py")}


#: Where a stage process starts: ``colbert-pipeline <stage>`` runs only these functions of the CLI (its other
#: commands import what they need inside their own functions).
CLI_STAGE_PATH = {"main", "run_stage", "write_result", "_load", "build_parser", "_add_params_arguments"}


def _nodes(tree: ast.Module, functions: set[str] | None):
    if functions is None:
        yield from ast.walk(tree)
        return
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            if node.name in functions:
                yield from ast.walk(node)
        else:
            yield from ast.walk(node)


def imports_of(path: Path, functions: set[str] | None = None) -> set[str]:
    """The ``pipeline`` modules ``path`` imports (``from pipeline import x`` counts as ``pipeline.x``).

    With ``functions``, only module-level imports and those inside the named top-level functions count.
    """
    found: set[str] = set()
    for node in _nodes(ast.parse(path.read_text()), functions):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{alias.name}" for alias in node.names] + [node.module]
        else:
            continue
        for name in names:
            # The longest known module that the name is, or is inside of.
            while name and name not in MODULES:
                name = name.rpartition(".")[0]
            if name.startswith("pipeline"):
                found.add(name)
    found.discard(module_name(path))
    return {name for name in found if name != "pipeline"}


GRAPH = {name: imports_of(path) for name, path in MODULES.items()}


def closure(start: str, first: set[str] | None = None) -> set[str]:
    """Every module reachable from ``start`` (whose own imports are ``first`` when given)."""
    seen, todo = {start}, [*(GRAPH[start] if first is None else first)]
    parent = start.rpartition(".")[0]
    if parent and parent != "pipeline":
        todo.append(parent)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        todo.extend(GRAPH.get(name, ()))
        # Importing pipeline.a.b runs pipeline/a/__init__.py first.
        parent = name.rpartition(".")[0]
        if parent and parent != "pipeline":
            todo.append(parent)
    return seen


def layer(name: str) -> str:
    parts = name.split(".")
    if len(parts) > 1 and parts[1] in LIBRARY:
        return "library"
    if len(parts) > 1 and parts[1] in {"ops", "stages", "data", "project"}:
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
        if name != "pipeline.cli" and layer(name) != "stages"
    }
    assert not {k: v for k, v in offenders.items() if v}
    stage_to_stage = {
        name: sorted(c for c in children if c.startswith("pipeline.stages.") and c != "pipeline.stages")
        for name, children in GRAPH.items()
        if name.startswith("pipeline.stages.")
    }
    assert not {k: v for k, v in stage_to_stage.items() if v}, "stages are leaves"


def test_bench_and_dags_import_no_stage() -> None:
    for path in [*(REPO / "bench").glob("*.py"), *(REPO / "dags").glob("*.py")]:
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
                    bad = [c for c in imports_of(path) if layer(c) == "library"]
                    assert not bad, f"{name} imports the library wing at module level: {bad}"
            else:
                continue
            assert not roots & heavy, f"{name} imports {roots & heavy} at module level"


def test_modules_are_small_or_say_why_they_are_one_thing() -> None:
    too_big = []
    for name, path in MODULES.items():
        lines = len(path.read_text().splitlines())
        docstring = ast.get_docstring(ast.parse(path.read_text())) or ""
        if lines > MAX_LINES and "One cohesive module" not in docstring:
            too_big.append(f"{name} ({lines} lines)")
    assert not too_big, f"over {MAX_LINES} lines without saying why it is one thing: {too_big}"


# -- dvc.yaml's code dependencies ------------------------------------------------------------------------


def stage_closure_files(stage: str) -> set[str]:
    """Every file of ``pipeline/`` that ``colbert-pipeline <stage>`` may import (the CLI, then the stage)."""
    cli = closure("pipeline.cli", imports_of(MODULES["pipeline.cli"], CLI_STAGE_PATH))
    names = cli | closure(f"pipeline.stages.{stage}")
    names.add("pipeline")
    return {MODULES[name].relative_to(REPO).as_posix() for name in names if name in MODULES}


def covered(file: str, deps: list[str]) -> bool:
    return any(file == dep or file.startswith(dep.rstrip("/") + "/") for dep in deps)


def dvc_stages() -> dict[str, dict]:
    return yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]


@pytest.mark.parametrize("stage", sorted(dvc_stages()))
def test_dvc_yaml_lists_every_file_its_stage_imports(stage: str) -> None:
    spec = dvc_stages()[stage]
    assert spec["cmd"].split()[:2] == ["colbert-pipeline", stage]
    deps = [d for d in spec.get("deps", []) if isinstance(d, str) and d.startswith("pipeline")]
    missing = sorted(f for f in stage_closure_files(stage) if not covered(f, deps))
    assert not missing, f"dvc.yaml stage {stage!r} does not depend on {missing}"


def test_the_closure_is_real() -> None:
    # A change to ColBERT.encode must re-run evaluate and index: models/colbert.py is in both closures.
    assert "pipeline/models/colbert.py" in stage_closure_files("evaluate")
    assert "pipeline/models/colbert.py" in stage_closure_files("index")
    assert "pipeline/project/report.py" not in stage_closure_files("train")


def _resolve(value: str) -> str:
    from pipeline.project.config import Params

    params = Params().model_dump(mode="json")

    def lookup(match: re.Match) -> str:
        node = params
        for part in match[1].split("."):
            node = node[part]
        return str(node)

    return re.sub(r"\$\{([^}]+)\}", lookup, value)


def _paths(entries: list) -> set[str]:
    return {_resolve(next(iter(e)) if isinstance(e, dict) else e) for e in entries or []}


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


def write_dvc_code_deps(path: Path = REPO / "dvc.yaml") -> None:
    """Rewrite each stage's ``pipeline/`` deps in ``dvc.yaml`` as its import closure (keeps the other deps).

    Run it after moving code between modules: ``.venv/bin/python tests/test_architecture.py``.
    """
    lines, out, stage, index = path.read_text().split("\n"), [], None, 0
    while index < len(lines):
        line = lines[index]
        if match := re.match(r"^  (\w+):$", line):
            stage = match[1]
        if line == "    deps:" and stage:
            note = f"# code: what `colbert-pipeline {stage}` imports (tests/test_architecture.py checks it)"
            out += [line, f"      {note}"]
            out += [f"      - {file}" for file in sorted(stage_closure_files(stage))]
            index += 1
            while index < len(lines) and (lines[index].startswith("      - ") or "# code:" in lines[index]):
                if lines[index].startswith("      - ") and not lines[index][8:].startswith("pipeline"):
                    out.append(lines[index])
                index += 1
            continue
        out.append(line)
        index += 1
    path.write_text("\n".join(out))


if __name__ == "__main__":
    write_dvc_code_deps()
