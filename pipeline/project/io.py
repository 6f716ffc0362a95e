"""Atomic writes: a crash never leaves a half-written file or folder where a good one stood.

Example:
    >>> import tempfile, pathlib
    >>> from pipeline.project.io import atomic_write_json, read_json
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "metrics.json"
    >>> atomic_write_json(path, {"ndcg@10": 0.5})
    >>> read_json(path)
    {'ndcg@10': 0.5}
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

#: Fault injection (tests/faults): ``write`` or ``rename``, optionally ``:<n>`` for the n-th time (default 1).
FAULT_ENV = "COLBERT_PIPELINE_FAULT"
#: Fault injection: a file the stage runner creates once the stage's own code runs, so a kill from outside
#: can be told to have landed inside the stage rather than while ``dvc repro`` was still starting.
STARTED_ENV = "COLBERT_PIPELINE_STAGE_STARTED"
_fault_hits: dict[str, int] = {}


def mark_stage_started(stage: str) -> None:
    """Write ``stage`` to the file ``STARTED_ENV`` names; a no-op unless the fault-injection suite sets it."""
    marker = os.environ.get(STARTED_ENV)
    if marker:
        Path(marker).write_text(stage)


def fault_point(where: str) -> None:
    """SIGKILL this process's whole group the n-th time it reaches ``where``, when ``FAULT_ENV`` asks for it.

    A no-op unless the fault-injection suite sets the variable. Killing the group (``dvc repro`` and the stage
    it runs) is what a dead machine or worker does: no handler, no cleanup, at exactly this point.
    """
    wanted = os.environ.get(FAULT_ENV)
    if not wanted:
        return
    name, _, count = wanted.partition(":")
    if name != where:
        return
    _fault_hits[where] = _fault_hits.get(where, 0) + 1
    if _fault_hits[where] == int(count or 1):
        os.killpg(os.getpgrp(), signal.SIGKILL)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` to a temporary file beside ``path``, then rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # A fresh name opened with "x" (not mkstemp, which makes 0600 files) gets the permissions open() gives.
    temp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(temp, "x", encoding="utf-8") as stream:
            stream.write(text[: len(text) // 2])
            stream.flush()
            fault_point("write")  # half the file on disk
            stream.write(text[len(text) // 2 :])
            stream.flush()
            os.fsync(stream.fileno())
        if path.exists():
            os.chmod(temp, path.stat().st_mode & 0o777)
        fault_point("rename")
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: str | os.PathLike[str], data: Any) -> None:
    """Atomically write ``data`` as indented JSON."""
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def replace_between_markers(path: str | os.PathLike[str], begin: str, end: str, text: str) -> None:
    r"""Atomically put ``text`` between the lines ``begin`` and ``end`` of ``path`` (a generated block).

    Both markers must be there, in that order; what lies outside them is left as it is.

    Example:
        >>> import tempfile, pathlib
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "README.md"
        >>> _ = path.write_text("\n".join(["intro", "<!-- t:begin -->", "old", "<!-- t:end -->", "rest", ""]))
        >>> replace_between_markers(path, "<!-- t:begin -->", "<!-- t:end -->", "| new |")
        >>> print(path.read_text(), end="")
        intro
        <!-- t:begin -->
        | new |
        <!-- t:end -->
        rest
    """
    path = Path(path)
    current = path.read_text(encoding="utf-8")
    start, stop = current.find(begin), current.find(end)
    if start < 0 or stop < start:
        raise ValueError(f"{path}: needs the markers {begin} and {end}, in that order")
    atomic_write_text(path, current[: start + len(begin)] + "\n" + text.rstrip("\n") + "\n" + current[stop:])


def atomic_save_figure(figure: Any, path: str | os.PathLike[str], dpi: int = 110) -> None:
    """Lay out a matplotlib ``figure``, save it as PNG beside ``path``, close it, and rename it into place."""
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.tmp.png")
    figure.tight_layout()
    figure.savefig(temp, dpi=dpi)
    plt.close(figure)
    os.replace(temp, path)


def read_json(path: str | os.PathLike[str]) -> Any:
    """Read a JSON file, naming the file in the error when it is missing or malformed."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: not found (has the stage that writes it run?)") from None
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: line {error.lineno}: not valid JSON ({error.msg})") from None


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; on success it replaces ``path`` in one rename.

    On an exception the temporary folder is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.tmp-"))
    try:
        yield temp
        fault_point("write")  # the whole folder written, not yet in place
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    old = None
    if path.exists():
        old = path.with_name(f".{path.name}.old-{os.getpid()}")
        os.replace(path, old)
    fault_point("rename")  # the old folder moved aside, the new one not yet in place
    os.replace(temp, path)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
