"""Runs you can compare: DVC experiments (``dvc exp run -S key=value``) as a table of params and metrics.

Trials and real-data runs are DVC experiments, so ``dvc exp show`` lists them with their params and metrics
and ``dvc metrics diff`` / ``dvc plots diff`` compare any two. :func:`experiment_table` renders what
``dvc exp show --json`` returns (nothing kept by hand): one row per experiment, the params that differ between
them, and the chosen metrics. :func:`set_arguments` turns a ``configs/*.yaml`` overlay into the ``-S``
arguments of ``dvc exp run``, so a real-data config runs as an experiment.

Experiment refs live in one workspace's git; :func:`save_snapshot` keeps the parsed rows as a committed JSON
file, so a README table rendered from them (:data:`README_BEGIN` .. :data:`README_END`) can be checked by a
test on any clone.

Example:
    >>> rows = [Experiment("a", "1a2b3c4", {"train.max_steps": 2, "train.seed": 42}, {"ndcg@10": 0.87648}),
    ...         Experiment("b", "5d6e7f8", {"train.max_steps": 4, "train.seed": 42}, {"ndcg@10": 0.84573})]
    >>> print(experiment_table(rows, ["ndcg@10"]))
    | experiment | rev | train.max_steps | ndcg@10 |
    |---|---|---|---|
    | a | 1a2b3c4 | 2 | 0.8765 |
    | b | 5d6e7f8 | 4 | 0.8457 |
    >>> set_arguments({"train": {"max_steps": 240, "query_length": None}})
    ['-S', 'train.max_steps=240', '-S', 'train.query_length=null']
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from pipeline.project.errors import PipelineError
from pipeline.project.params_file import flatten

PARAMS_FILE = "params.yaml"
#: The block of a Markdown file that ``colbert-pipeline experiments --readme FILE`` regenerates.
README_BEGIN, README_END = "<!-- experiments:begin -->", "<!-- experiments:end -->"
#: The block that ``colbert-pipeline experiments --quality --readme FILE`` regenerates (the docs site
#: renders the same table from the snapshot while it builds: docs/hooks.py).
QUALITY_BEGIN, QUALITY_END = "<!-- quality-experiments:begin -->", "<!-- quality-experiments:end -->"
#: Metrics shown when none are asked for: the benchmark's, then each quality row's (see default_metrics).
QUALITY_PREFIX = "quality."


@dataclasses.dataclass(frozen=True)
class Experiment:
    """One experiment (or the committed baseline): its name, short rev, flat params and flat metrics."""

    name: str
    rev: str
    params: dict[str, Any]
    metrics: dict[str, Any]


def _entries(show: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    for commit in show:
        if commit.get("rev") == "workspace":
            continue
        if commit.get("data"):
            yield commit.get("name") or commit["rev"][:7], commit
        for experiment in commit.get("experiments") or []:
            for rev in experiment.get("revs") or []:
                yield rev.get("name") or rev["rev"][:7], rev


def parse_show(show: list[dict[str, Any]]) -> list[Experiment]:
    """The experiments in ``dvc exp show --json`` output, with flat params (params.yaml) and metrics."""
    rows = []
    for name, entry in _entries(show):
        data = entry.get("data") or {}
        params = ((data.get("params") or {}).get(PARAMS_FILE) or {}).get("data") or {}
        metrics: dict[str, Any] = {}
        for file, content in (data.get("metrics") or {}).items():
            for key, value in flatten((content or {}).get("data") or {}).items():
                metrics[f"{Path(file).stem}.{key}"] = value
        rows.append(Experiment(name, str(entry["rev"])[:7], flatten(params), metrics))
    return rows


def show(workspace: Path) -> list[Experiment]:
    """``dvc exp show --json`` in ``workspace``, parsed."""
    from pipeline.ops.versioning import run_dvc

    output = run_dvc(workspace, "exp", "show", "--json", "--no-pager")
    return parse_show(json.loads(output or "[]"))


def experiment_table(rows: Sequence[Experiment], metrics: Sequence[str], params: Sequence[str] = ()) -> str:
    """A Markdown table: experiment, rev, ``params`` (default: those that differ), then ``metrics``."""
    if not params:
        keys = sorted({key for row in rows for key in row.params})
        params = [key for key in keys if len({json.dumps(row.params.get(key)) for row in rows}) > 1]

    def cell(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:.4f}"
        return "-" if value is None else str(value)

    header = ["experiment", "rev", *params, *metrics]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        values = [
            row.name,
            row.rev,
            *(row.params.get(p) for p in params),
            *(row.metrics.get(m) for m in metrics),
        ]
        lines.append("| " + " | ".join(cell(value) for value in values) + " |")
    return "\n".join(lines)


def set_arguments(overlay: Mapping[str, Any]) -> list[str]:
    """``dvc exp run`` arguments (``-S key=value``) that set every key of a params overlay."""
    arguments: list[str] = []
    for key, value in flatten(overlay).items():
        # Compact JSON (no spaces), so the arguments survive a shell's word splitting in a Makefile.
        text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
        arguments += ["-S", f"{key}={text}"]
    return arguments


def default_metrics(rows: Sequence[Experiment], eval_metric: str) -> list[str]:
    """``eval_metric``, then the full-test-set dataset and nDCG@10 of each system the quality stage scored."""
    quality = sorted(
        {
            key
            for row in rows
            for key in row.metrics
            if key.startswith(QUALITY_PREFIX) and key.endswith(".ndcg@10")
        }
    )
    dataset = f"{QUALITY_PREFIX}dataset"
    return [eval_metric, *([dataset] if any(dataset in row.metrics for row in rows) else []), *quality]


def quality_records(rows: Sequence[Experiment]) -> list[dict[str, Any]]:
    """The quality stage's scores in ``rows`` as result records (what :mod:`pipeline.project.report`
    renders): one per experiment, system and retrieval, from the flat
    ``quality.<system>.<retrieval>.<metric>`` metrics.

    Example:
        >>> row = Experiment("scifact-run", "1a2b3c4", {}, {"quality.dataset": "scifact",
        ...     "quality.dense.cosine.ndcg@10": 0.645, "quality.dense.cosine.queries": 300})
        >>> quality_records([row])
        [{'dataset': 'scifact', 'system': 'dense', 'retrieval': 'cosine', 'metrics': {'ndcg@10': 0.645, \
'queries': 300}, 'experiment': 'scifact-run', 'rev': '1a2b3c4'}]
    """
    records: list[dict[str, Any]] = []
    for row in rows:
        dataset = row.metrics.get(f"{QUALITY_PREFIX}dataset")
        if dataset is None:
            continue
        by_row: dict[tuple[str, str], dict[str, Any]] = {}
        for key, value in row.metrics.items():
            parts = key[len(QUALITY_PREFIX) :].split(".") if key.startswith(QUALITY_PREFIX) else []
            if len(parts) == 3:  # system, retrieval, metric (metric names hold no dot: ndcg@10, queries)
                by_row.setdefault((parts[0], parts[1]), {})[parts[2]] = value
        for (system, retrieval), metrics in by_row.items():
            records.append(
                {
                    "dataset": str(dataset),
                    "system": system,
                    "retrieval": retrieval,
                    "metrics": metrics,
                    "experiment": row.name,
                    "rev": row.rev,
                }
            )
    return records


def select(rows: Sequence[Experiment], names: Sequence[str]) -> list[Experiment]:
    """The rows named ``names``, in that order; an unknown name is an error that lists the known ones."""
    by_name = {row.name: row for row in rows}
    missing = [name for name in names if name not in by_name]
    if missing:
        raise PipelineError(f"no experiment named {missing}; `dvc exp show` lists {sorted(by_name)}")
    return [by_name[name] for name in names]


def save_snapshot(rows: Sequence[Experiment], path: Path) -> None:
    """Write ``rows`` as JSON (atomically), to commit beside what is rendered from them."""
    from pipeline.project.io import atomic_write_json

    atomic_write_json(path, [dataclasses.asdict(row) for row in rows])


def merged(kept: Sequence[Experiment], added: Sequence[Experiment]) -> list[Experiment]:
    """``kept`` with ``added`` after it; a kept row named like an added one gives way to it.

    Experiments of several workspaces (a clean clone per real-data run) end up in one snapshot this way.
    """
    names = {row.name for row in added}
    return [row for row in kept if row.name not in names] + list(added)


def load_snapshot(path: Path) -> list[Experiment]:
    """Rows written by :func:`save_snapshot`; a malformed file is an error naming it and the entry."""
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise PipelineError(f"{path}: cannot read the experiments snapshot ({error})") from None
    rows = []
    for number, entry in enumerate(entries if isinstance(entries, list) else [None]):
        try:
            rows.append(Experiment(**entry))
        except TypeError as error:
            raise PipelineError(f"{path}: entry {number} is not an experiment row ({error})") from None
    return rows
