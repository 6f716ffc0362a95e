"""MLflow tracking: one parent run per pipeline run, one child run per stage, lineage tags.

The tracking URI is absolute: ``MLFLOW_TRACKING_URI`` if set, else ``tracking.tracking_uri`` from params, else
``sqlite:///<project>/mlruns.db``. Stages of one pipeline run are grouped under a parent run: the one named by
``COLBERT_PIPELINE_PARENT_RUN_ID`` (Airflow sets it per DAG run), else the parent for this git commit and
params (so the stages of one ``dvc repro`` land together even though each runs in its own process).

Example:
    >>> from pipeline import tracking  # doctest: +SKIP
    >>> with tracking.stage_run("train", params, project) as run:  # doctest: +SKIP
    ...     mlflow.log_metric("loss", 0.5)
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pipeline.config import Params

logger = logging.getLogger(__name__)

PARENT_RUN_ENV = "COLBERT_PIPELINE_PARENT_RUN_ID"


def tracking_uri(params: Params, project: Path) -> str:
    """The absolute tracking URI for this project."""
    uri = os.environ.get("MLFLOW_TRACKING_URI") or params.tracking.tracking_uri
    if not uri:
        return f"sqlite:///{(project / 'mlruns.db').resolve()}"
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return f"sqlite:///{(project / uri.removeprefix('sqlite:///')).resolve()}"
    return uri


def git_commit(project: Path) -> str:
    """The checked-out commit, or ``unknown`` outside a git work tree."""
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=project, capture_output=True, text=True, check=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return result.stdout.strip()


def params_hash(section: Any) -> str:
    """A short stable hash of a params section (or the whole params)."""
    data = section.model_dump(mode="json") if hasattr(section, "model_dump") else section
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def _configure(params: Params, project: Path) -> None:
    import mlflow

    mlflow.set_tracking_uri(tracking_uri(params, project))
    mlflow.set_experiment(params.tracking.experiment)


def parent_run_id(params: Params, project: Path) -> str:
    """The id of the parent run for this pipeline run, created on first use."""
    import mlflow

    if os.environ.get(PARENT_RUN_ENV):
        return os.environ[PARENT_RUN_ENV]
    _configure(params, project)
    key = f"{git_commit(project)}-{params_hash(params)}"
    experiment = mlflow.get_experiment_by_name(params.tracking.experiment)
    found = mlflow.search_runs(
        experiment_ids=[experiment.experiment_id],
        filter_string=f"tags.pipeline_key = '{key}' and tags.pipeline_parent = 'true'",
        max_results=1,
        output_format="list",
    )
    if found:
        return found[0].info.run_id
    with mlflow.start_run(
        run_name=f"pipeline-{key[:12]}", tags={"pipeline_key": key, "pipeline_parent": "true"}
    ) as run:
        return run.info.run_id


@contextlib.contextmanager
def stage_run(stage: str, params: Params, project: Path, tags: dict[str, str] | None = None) -> Iterator[Any]:
    """A child MLflow run for one stage, tagged with its lineage."""
    import mlflow

    _configure(params, project)
    parent = parent_run_id(params, project)
    section = getattr(params, stage, None)
    lineage = {
        "stage": stage,
        "git_commit": git_commit(project),
        "params_hash": params_hash(params),
        **({f"{stage}_params_hash": params_hash(section)} if section is not None else {}),
        **(tags or {}),
    }
    with mlflow.start_run(run_name=stage, tags={"mlflow.parentRunId": parent, **lineage}) as run:
        if section is not None:
            mlflow.log_params(
                {f"{stage}.{k}": v for k, v in _flatten(section.model_dump(mode="json")).items()}
            )
        yield run


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat
