"""dvc.yaml as the tests read it: its stages, and its ``${params}`` references resolved to the defaults."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from pipeline.project.config import Params

REPO = Path(__file__).resolve().parents[1]


def dvc_stages() -> dict[str, dict]:
    return yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]


def resolve(value: str) -> str:
    """``${index.folder}/${index.name}`` with each reference replaced by the schema's default."""
    params = Params().model_dump(mode="json")

    def lookup(match: re.Match) -> str:
        node = params
        for part in match[1].split("."):
            node = node[part]
        return str(node)

    return re.sub(r"\$\{([^}]+)\}", lookup, value)


def entry_path(entry: Any) -> str:
    """A deps/outs/metrics entry's path (an entry with options is a one-key mapping), resolved."""
    return resolve(next(iter(entry)) if isinstance(entry, dict) else entry)
