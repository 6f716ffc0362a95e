"""The README's first screen, and its Python API example (also on the docs' Getting started page) runs as
written and does what its comments say."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
#: Where the example lives: (file, the section that holds it).
EXAMPLES = [(README, "## Python API"), (REPO / "docs" / "getting-started.md", "## From Python")]


def python_block(path: Path, heading: str) -> str:
    """The first python block of the section under ``heading`` in ``path``."""
    section = path.read_text(encoding="utf-8").split(f"\n{heading}\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)
    assert blocks, f"{path.name}'s {heading!r} section has no python block"
    return blocks[0]


def api_block() -> str:
    """The README's Python API example."""
    return python_block(*EXAMPLES[0])


def test_readme_starts_with_the_two_setup_commands():
    text = README.read_text(encoding="utf-8")
    first_block = re.search(r"```bash\n(.*?)```", text, flags=re.DOTALL)
    assert first_block is not None
    commands = [line.split("#")[0].strip() for line in first_block.group(1).splitlines() if line.strip()]
    assert commands == ["make run", "make test"]
    assert text.index("```bash") < text.index("## ")


def test_the_readme_and_getting_started_show_the_same_example():
    """So running the README's block (below) runs the docs' too."""
    assert python_block(*EXAMPLES[0]) == python_block(*EXAMPLES[1])


def test_readme_python_example_runs_ranks_and_saves(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys):
    monkeypatch.chdir(tmp_path)  # the block saves to a relative folder
    namespace: dict = {}
    exec(compile(api_block(), str(README), "exec"), namespace)
    ranking = namespace["ranking"]
    assert len(ranking) == 1 and sorted(hit["id"] for hit in ranking[0]) == ["1", "3"]
    scores = [hit["score"] for hit in ranking[0]]
    assert scores == sorted(scores, reverse=True)
    assert str(ranking) in capsys.readouterr().out
    assert (tmp_path / "out" / "my-colbert" / "config_sentence_transformers.json").is_file()
