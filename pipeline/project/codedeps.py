"""Which files of ``pipeline/`` each stage's process imports, read from the source with ``ast``.

DVC re-runs a stage when one of its declared dependencies changes, so each ``dvc.yaml`` stage lists every
file of the package its ``colbert-pipeline <stage>`` process may import: the CLI's stage path, then the
stage module's import closure. The graph counts every ``import`` of a ``pipeline`` module, at the top of a
file or inside a function (a lazy import is still a dependency), and importing ``pipeline.a.b`` runs
``pipeline/a/__init__.py`` first.

``colbert-pipeline dvc-deps`` rewrites those lists after code moves between modules; ``--check`` only says
whether they are current (``tests/test_architecture.py`` runs the check).

Example:
    >>> graph = ImportGraph.of(Path(__file__).resolve().parents[2])
    >>> "pipeline.project.config" in graph.imports["pipeline.project.layout"]
    True
    >>> "pipeline/stages/train.py" in graph.stage_files("train")
    True
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

#: The CLI functions a stage process runs (its other commands import what they need inside themselves).
CLI_STAGE_PATH = frozenset(
    {
        "main",
        "build_parser",
        "add_commands",
        "stage_help",  # add_commands builds every stage's --help, so a stage process runs it too
        "run_stage",
        "write_result",
        "load",
        "add_params_arguments",
    }
)
CODE_NOTE = "# code: what `colbert-pipeline {stage}` imports (colbert-pipeline dvc-deps writes it)"


def module_name(path: Path, root: Path) -> str:
    """``pipeline/a/b.py`` -> ``pipeline.a.b``; a package's ``__init__.py`` is the package itself."""
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _nodes(tree: ast.Module, functions: frozenset[str] | None) -> Iterator[ast.AST]:
    if functions is None:
        yield from ast.walk(tree)
        return
    for node in tree.body:
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) or node.name in functions:
            yield from ast.walk(node)


@dataclass
class ImportGraph:
    """The ``pipeline`` modules of a checkout (name -> file) and what each imports."""

    root: Path
    modules: dict[str, Path]
    imports: dict[str, set[str]] = field(default_factory=dict)

    @classmethod
    def of(cls, root: Path) -> ImportGraph:
        root = Path(root)
        modules = {module_name(p, root): p for p in sorted((root / "pipeline").rglob("*.py"))}
        graph = cls(root, modules)
        graph.imports = {name: graph.imports_of(path) for name, path in modules.items()}
        return graph

    def resolve(self, dotted: str) -> str | None:
        """The longest known module that ``dotted`` is, or is inside of (a name imported from it)."""
        while dotted and dotted not in self.modules:
            dotted = dotted.rpartition(".")[0]
        return dotted or None

    def imports_of(self, path: Path, functions: frozenset[str] | None = None) -> set[str]:
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
            found.update(m for m in map(self.resolve, names) if m and m.startswith("pipeline"))
        found.discard(module_name(path, self.root))
        found.discard("pipeline")
        return found

    def closure(self, start: str, edges: Callable[[str], set[str]] | None = None) -> set[str]:
        """Every module importing ``start`` may run (``edges``: a module's imports; by default all)."""
        edges = edges or (lambda name: self.imports.get(name, set()))
        seen, todo = set(), [start]
        while todo:
            name = todo.pop()
            if name not in seen:
                seen.add(name)
                todo.extend([*edges(name), *_parents(name)])
        return seen

    def stage_files(self, stage: str) -> set[str]:
        """Every file of ``pipeline/`` that ``colbert-pipeline <stage>`` may import (the CLI, then the stage).

        Of the CLI's own modules only what a stage process runs counts: their module-level imports and
        those inside :data:`CLI_STAGE_PATH`'s functions (other commands import their needs when they run).
        """

        def edges(name: str) -> set[str]:
            if name == "pipeline.cli" or name.startswith("pipeline.cli."):
                return self.imports_of(self.modules[name], CLI_STAGE_PATH)
            return self.imports.get(name, set())

        names = {"pipeline", *self.closure("pipeline.cli", edges), *self.closure(f"pipeline.stages.{stage}")}
        return {self.modules[n].relative_to(self.root).as_posix() for n in names if n in self.modules}


def _parents(name: str) -> list[str]:
    """Importing ``pipeline.a.b`` first runs ``pipeline/a/__init__.py`` (``pipeline`` itself is cheap)."""
    parent = name.rpartition(".")[0]
    return [parent] if parent and parent != "pipeline" else []


def rewrite_dvc_yaml(text: str, graph: ImportGraph) -> str:
    """``dvc.yaml``'s text with each stage's ``pipeline/`` deps replaced by its import closure.

    Every other dependency (data, params-resolved paths) keeps its place after the code list.
    """
    lines, out, stage, index = text.split("\n"), [], None, 0
    while index < len(lines):
        line = lines[index]
        if match := re.match(r"^  (\w+):$", line):
            stage = match[1]
        if line == "    deps:" and stage:
            out += [line, f"      {CODE_NOTE.format(stage=stage)}"]
            out += [f"      - {file}" for file in sorted(graph.stage_files(stage))]
            index += 1
            while index < len(lines) and (lines[index].startswith("      - ") or "# code:" in lines[index]):
                if lines[index].startswith("      - ") and not lines[index][8:].startswith("pipeline"):
                    out.append(lines[index])
                index += 1
            continue
        out.append(line)
        index += 1
    return "\n".join(out)


def sync_dvc_yaml(project: Path, check: bool = False) -> bool:
    """Rewrite ``project/dvc.yaml``'s code deps (or, with ``check``, only compare); True when current."""
    from pipeline.project.io import atomic_write_text

    path = Path(project) / "dvc.yaml"
    text = path.read_text()
    wanted = rewrite_dvc_yaml(text, ImportGraph.of(Path(project)))
    if wanted == text:
        return True
    if not check:
        atomic_write_text(path, wanted)
    return False
