"""The DAG's stateless mode, without Airflow: each stage task runs ``colbert-pipeline task`` for its run.

Why: in the default mode every stage task runs ``dvc repro`` in one shared workspace, so all workers mount it
and one DVC lock serialises runs. With ``COLBERT_PIPELINE_STATELESS=1`` a stage task instead starts
``colbert-pipeline task STAGE --run <run id> --set <the run's Params>`` in a child process from the worker's
own clone (:mod:`pipeline.ops.stateless` does the work over the git remote, the DVC remote and MLflow):
tasks of one run may land on different workers, runs with other Params go at once, each on its own ref.

Settings:

- ``COLBERT_PIPELINE_STATELESS`` (parse time, environment only): 1 switches the DAG's shape (no DVC pool,
  ``max_active_runs`` above 1, no shared ``params.yaml`` written); default 0, the shared-workspace mode.
- ``COLBERT_PIPELINE_MAX_ACTIVE_RUNS`` (parse time): runs at once in stateless mode (default 4).
- ``COLBERT_PIPELINE_TASK_CLONE`` (run time): the worker's clone a task starts from (default: the workspace).

Example:
    >>> task_command("train", "manual__2025-01-01T00:00:00+00:00", {"train.epochs": 2})[1:]
    ['task', 'train', '--run', 'manual__2025-01-01T00-00-00+00-00', '--set', 'train.epochs=2']
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from pipeline.ops import orchestration, versioning
from pipeline.ops.dvc_remote import DVC_REMOTE_ENV
from pipeline.ops.git_remote import GIT_REMOTE_ENV, Retry, fetch, resolve_url
from pipeline.ops.promotion import Decision
from pipeline.ops.runner import ancestors, run_process
from pipeline.ops.task_origin import ATTEMPTS_ENV, BACKOFF_ENV, DVC_OPTIONS_ENV, DVC_URL_ENV, START_ENV
from pipeline.project.config import ConfigError
from pipeline.project.errors import kind_of_exit_code
from pipeline.project.layout import RESULT_FILE_ENV, Layout
from pipeline.project.params_file import load_params

logger = logging.getLogger(__name__)

STATELESS_ENV = "COLBERT_PIPELINE_STATELESS"
MAX_ACTIVE_RUNS_ENV = "COLBERT_PIPELINE_MAX_ACTIVE_RUNS"
CLONE_ENV = "COLBERT_PIPELINE_TASK_CLONE"
#: The register tasks of all runs share this one-slot pool: two runs never move the aliases at once.
REGISTER_POOL = "colbert_register"
DEFAULT_MAX_ACTIVE_RUNS = 4


def stateless_from_env(environ: Mapping[str, str] = os.environ) -> bool:
    """The parse-time switch (environment only, so parsing never reads the metadata database)."""
    text = (environ.get(STATELESS_ENV) or "0").strip().lower()
    if text not in orchestration._TRUE | orchestration._FALSE:
        raise orchestration.OrchestrationError(f"{STATELESS_ENV}: {text!r} is not a boolean (1/0)")
    return text in orchestration._TRUE


def max_active_runs_from_env(stateless: bool, environ: Mapping[str, str] = os.environ) -> int:
    """1 in the shared-workspace mode (one DVC lock); the setting (default 4) in stateless mode."""
    if not stateless:
        return 1
    text = environ.get(MAX_ACTIVE_RUNS_ENV) or str(DEFAULT_MAX_ACTIVE_RUNS)
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise orchestration.OrchestrationError(f"{MAX_ACTIVE_RUNS_ENV}: {text!r} is not a positive integer")
    return value


def task_run_id(run_id: str) -> str:
    """The run's id as its ref names it (``versioning.run_ref_name``: ':' becomes '-')."""
    return versioning.run_ref_name(run_id)[len(versioning.RUN_REF_PREFIX) :]


def run_ref(run_id: str) -> str:
    """The run's ref: ``refs/colbert-runs/<sanitised run id>``."""
    return versioning.run_ref_name(run_id)


def validated(overrides: Mapping[str, Any], index_shards: int = 1) -> dict[str, Any]:
    """validate_params' XCom in stateless mode: the run's Params, for every task's ``--set`` (nothing is
    written: the shared ``params.yaml`` stays as it is), with the keys and hash the MLflow parent run tags,
    and the run's ``index.shards`` (how many shard tasks the DAG maps)."""
    text = json.dumps(dict(overrides), sort_keys=True, default=str)
    return {
        "stateless": True,
        "overrides": dict(overrides),
        "changed": sorted(overrides),
        "sha256": hashlib.sha256(text.encode()).hexdigest(),
        "index_shards": index_shards,
    }


def shard_labels(index_shards: int) -> list[str]:
    """The ``--shard`` of each mapped shard task: none for an unsharded run (the index task encodes).

    Example:
        >>> shard_labels(3), shard_labels(1)
        (['0/3', '1/3', '2/3'], [])
    """
    return [f"{shard}/{index_shards}" for shard in range(index_shards)] if index_shards > 1 else []


def task_command(
    stage: str, run_id: str, overrides: Mapping[str, Any], shard: str | None = None
) -> list[str]:
    """``colbert-pipeline task STAGE [--shard I/N] --run RUN --set key=value ...``; values as JSON (a YAML
    subset), sorted so every task of a run passes the very same Params."""
    command = [orchestration._executable("colbert-pipeline"), "task", stage]
    command += ["--shard", shard] if shard else []
    command += ["--run", task_run_id(run_id)]
    for key in sorted(overrides):
        command += ["--set", f"{key}={json.dumps(overrides[key])}"]
    return command


#: The task command's own settings (pipeline.ops.stateless) that an Airflow Variable may set for it.
TASK_SETTINGS = (
    GIT_REMOTE_ENV,
    DVC_REMOTE_ENV,
    DVC_URL_ENV,
    DVC_OPTIONS_ENV,
    START_ENV,
    ATTEMPTS_ENV,
    BACKOFF_ENV,
)


def task_environment(lookup: Callable[[str], str | None]) -> dict[str, str]:
    """The task command's settings as ``lookup`` (Variables, then env) resolves them, for its environment."""
    return {name: value for name in TASK_SETTINGS if (value := lookup(name))}


def clone_of(settings: orchestration.Settings, lookup: Callable[[str], str | None]) -> Path:
    """The worker's clone a task starts from: ``COLBERT_PIPELINE_TASK_CLONE``, else the workspace."""
    clone = Path(lookup(CLONE_ENV) or settings.workspace).expanduser().resolve()
    if not clone.is_dir():
        raise orchestration.OrchestrationError(f"{CLONE_ENV}: {clone} is not a directory")
    return clone


def run_stage(
    stage: str,
    run_id: str,
    overrides: Mapping[str, Any],
    clone: Path,
    parent_run_id: str | None,
    tracking_uri: str | None,
    emit: Callable[[str], None] | None = None,
    extra_env: Mapping[str, str] | None = None,
    shard: str | None = None,
) -> dict[str, Any]:
    """Run the task command in a supervised child process in ``clone``; its result (or error) comes back
    through ``COLBERT_PIPELINE_RESULT_FILE``. Raises :class:`orchestration.StageFailed` on failure.
    ``shard`` ("I/N"): the index stage's shard task for that shard of its encoding."""
    emit = emit or (lambda line: logger.info("[%s] %s", stage, line))
    owners = ancestors(os.getpid())
    command = task_command(stage, run_id, overrides, shard)
    settings = orchestration.Settings(workspace=clone, runner="cli")
    env = orchestration.stage_environment(settings, parent_run_id, tracking_uri, extra_env)
    env.pop(RESULT_FILE_ENV, None)
    with tempfile.TemporaryDirectory(prefix=f"colbert-task-{stage}-") as scratch:
        result_file = Path(scratch) / "result.json"
        env[RESULT_FILE_ENV] = str(result_file)
        logger.info("stage %s: running %s in %s", stage, " ".join(command), clone)
        process = run_process(command, cwd=clone, env=env, emit=emit, owners=owners)
        result = orchestration.read_result(result_file)
    if process.returncode != 0 or (result is not None and not result.get("ok", True)):
        kind = str((result or {}).get("kind") or kind_of_exit_code(process.returncode))
        message = str((result or {}).get("message") or "\n".join(process.tail[-5:]) or "no output")
        raise orchestration.StageFailed(stage, process.returncode, message, kind)
    return {"stage": stage, "seconds": process.seconds, **(result or {})}


def read_run_decision(
    clone: Path, run_id: str, lookup: Callable[[str], str | None] = os.environ.get
) -> Decision:
    """The register stage's decision as the run's ref holds it (``git show <ref>:metrics/registry.json``),
    fetched from the git remote into a throwaway repository: the clone is only read."""
    ref = versioning.run_ref_name(run_id)
    url = resolve_url(clone, lookup(GIT_REMOTE_ENV))
    params = load_params(clone / "params.yaml", check_paths=False)
    layout = Layout(params, clone)
    path = layout.relative(layout.registry_decision)
    with tempfile.TemporaryDirectory(prefix="colbert-decision-") as scratch:
        subprocess.run(["git", "init", "-q", "--bare", scratch], check=True, capture_output=True)
        fetch(Path(scratch), url, f"+{ref}:{ref}", Retry())
        shown = subprocess.run(
            ["git", "show", f"{ref}:{path}"], cwd=scratch, capture_output=True, text=True, check=False
        )
    if shown.returncode != 0:
        detail = shown.stderr.strip()[-300:]
        raise ConfigError(f"{ref} holds no {path}: did its register task run? ({detail})")
    return Decision.from_dict(json.loads(shown.stdout), source=f"{ref}:{path}")
