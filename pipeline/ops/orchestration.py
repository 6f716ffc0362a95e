"""What the Airflow DAG does, without Airflow: settings, the MLflow parent run, running and recording stages.

In this module: every call the DAG makes into the pipeline, each a few lines over the ops modules.

The DAG in ``dags/colbert_pipeline.py`` is a thin layer over this module, so everything here is unit tested
(and reusable by another orchestrator) without a scheduler. Nothing here imports torch, so the DAG file stays
cheap to parse.

Every stage runs as a child process (``dvc repro --single-item <stage>``, or ``colbert-pipeline <stage>``) in
the configured workspace, under :mod:`pipeline.ops.runner`'s supervisor: a GPU stage never inherits a CUDA
context from a forked worker, and no stage outlives its task. Results travel through files, never through
scraped output: DVC's own ``dvc status --json`` says whether a stage is up to date (then it is skipped), the
stage's CLI writes its result (outputs, or the error and its kind) to a JSON file whose path this module
passes in ``COLBERT_PIPELINE_RESULT_FILE``, and the outputs' hashes come from ``dvc.lock``.

Example (the ``cli`` runner on a folder with a params.yaml):
    >>> import tempfile
    >>> from pipeline.project.config import Params
    >>> from pipeline.project.params_file import write_params
    >>> workspace = Path(tempfile.mkdtemp())
    >>> write_params(Params(), workspace / "params.yaml")
    >>> settings = Settings.resolve({"COLBERT_PIPELINE_WORKSPACE": str(workspace),
    ...                              "COLBERT_PIPELINE_RUNNER": "cli"}.get)
    >>> stage_command("train", settings)[1:]
    ['train', '--params', 'params.yaml']
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from pipeline.ops import lineage
from pipeline.ops.promotion import Decision
from pipeline.ops.run_params import (  # noqa: F401  (the DAG's entry points, re-exported)
    RUN_OVERRIDE,
    ParamsUpdate,
    apply_run_overrides,
    overrides_from_dag_params,
    reapply_params,
    restore_params,
)
from pipeline.ops.runner import ancestors, run_process
from pipeline.ops.versioning import RECORDER_ENV
from pipeline.project.config import DEFAULT_PARAMS_FILE
from pipeline.project.errors import RETRYABLE, InputError, PipelineError, kind_of_exit_code
from pipeline.project.layout import RESULT_FILE_ENV, STAGES, Layout
from pipeline.project.params_file import load_params

logger = logging.getLogger(__name__)

WORKSPACE_ENV = "COLBERT_PIPELINE_WORKSPACE"
RUNNER_ENV = "COLBERT_PIPELINE_RUNNER"
HF_OFFLINE_ENV = "COLBERT_PIPELINE_HF_OFFLINE"
TRACKING_URI_ENV = "MLFLOW_TRACKING_URI"
PARENT_RUN_ENV = "COLBERT_PIPELINE_PARENT_RUN_ID"
DVC_REMOTE_ENV = "COLBERT_PIPELINE_DVC_REMOTE"
RUNNERS = ("dvc", "cli")

#: The project root: the default workspace when nothing is configured (a checkout with dvc.yaml).
PROJECT_ROOT = Path(__file__).resolve().parents[2]

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


class OrchestrationError(InputError):
    """Bad orchestration settings (workspace, runner, ...), naming the setting."""


def seconds_from_env(name: str, default: float, environ: Mapping[str, str] = os.environ) -> float:
    """A parse-time duration in seconds (``environ[name]``, else ``default``); not a non-negative number:
    an error naming the setting.

    Example:
        >>> seconds_from_env("COLBERT_PIPELINE_RETRY_DELAY_S", 60.0, {"COLBERT_PIPELINE_RETRY_DELAY_S": "5"})
        5.0
    """
    text = (environ.get(name) or "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0 or value == float("inf"):
        raise OrchestrationError(f"{name}: {text!r} is not a number of seconds (0 or more)")
    return value


class StageFailed(PipelineError):
    """A stage process failed; ``kind`` (from its result file) says if a retry can help (``permanent``)."""

    def __init__(self, stage: str, returncode: int, message: str, kind: str) -> None:
        super().__init__(f"stage {stage!r} failed (exit status {returncode}, {kind}): {message}")
        self.stage = stage
        self.returncode = returncode
        self.message = message
        self.kind = kind  # type: ignore[assignment]

    @property
    def permanent(self) -> bool:
        return not RETRYABLE.get(self.kind, True)


@dataclasses.dataclass(frozen=True)
class Settings:
    """Where and how stages run. Resolve it from the environment (or Airflow Variables) with ``resolve``."""

    workspace: Path
    runner: str = "dvc"
    tracking_uri: str | None = None
    hf_offline: bool = True
    params_file: str = DEFAULT_PARAMS_FILE
    dvc_remote: str | None = None  # a remote named in the workspace's DVC config; None: its default remote

    @property
    def params_path(self) -> Path:
        return self.workspace / self.params_file

    @classmethod
    def resolve(cls, lookup: Callable[[str], str | None], default_workspace: Path = PROJECT_ROOT) -> Settings:
        """Read settings through ``lookup`` (``os.environ.get``, or Variables then env); check them."""
        workspace = Path(lookup(WORKSPACE_ENV) or default_workspace).expanduser().resolve()
        runner = (lookup(RUNNER_ENV) or "dvc").strip().lower()
        if runner not in RUNNERS:
            raise OrchestrationError(f"{RUNNER_ENV}: {runner!r} is not one of {', '.join(RUNNERS)}")
        offline_text = (lookup(HF_OFFLINE_ENV) or "1").strip().lower()
        if offline_text not in _TRUE | _FALSE:
            raise OrchestrationError(f"{HF_OFFLINE_ENV}: {offline_text!r} is not a boolean (1/0, true/false)")
        settings = cls(
            workspace=workspace,
            runner=runner,
            tracking_uri=lookup(TRACKING_URI_ENV) or None,
            hf_offline=offline_text in _TRUE,
            dvc_remote=(lookup(DVC_REMOTE_ENV) or "").strip() or None,
        )
        settings.check()
        return settings

    def check(self) -> None:
        """The workspace must exist and, for the dvc runner, be a DVC project with a dvc.yaml."""
        if not self.workspace.is_dir():
            raise OrchestrationError(f"{WORKSPACE_ENV}: {self.workspace} is not a directory")
        if self.runner == "dvc":
            missing = [name for name in ("dvc.yaml", ".dvc") if not (self.workspace / name).exists()]
            if missing:
                raise OrchestrationError(
                    f"{WORKSPACE_ENV}: {self.workspace} has no {' and no '.join(missing)}: run `dvc init` "
                    f"there, or set {RUNNER_ENV}=cli to run stages without DVC's cache"
                )


# -- MLflow parent run ----------------------------------------------------------------------------------


def resolve_tracking_uri(settings: Settings) -> str:
    """The absolute MLflow URI the stages will use: the configured one, else the project's default."""
    from pipeline.ops import tracking

    if settings.tracking_uri:
        return settings.tracking_uri
    return tracking.tracking_uri(load_params(settings.params_path, check_paths=False), settings.workspace)


@contextlib.contextmanager
def _tracking_env(settings: Settings) -> Iterator[None]:
    # pipeline.ops.tracking reads MLFLOW_TRACKING_URI first: make it the URI these settings resolve to (an
    # Airflow Variable may name another server than the worker's environment), only for this call.
    uri = resolve_tracking_uri(settings)
    previous = os.environ.get(TRACKING_URI_ENV)
    os.environ[TRACKING_URI_ENV] = uri
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(TRACKING_URI_ENV, None)
        else:
            os.environ[TRACKING_URI_ENV] = previous


def start_parent_run(
    settings: Settings, dag_id: str, run_id: str, tags: Mapping[str, str] | None = None
) -> str:
    """Create (or, on a retry, find again) the MLflow run that groups one DAG run's stage runs.

    Keyed on the Airflow dag_id and run_id (asset-triggered runs have no logical date); ``tags`` are added
    to it but are not part of that key.
    """
    from mlflow.tracking import MlflowClient

    from pipeline.ops import tracking

    params = load_params(settings.params_path, check_paths=False)
    with _tracking_env(settings):
        run = tracking.start_pipeline_run(
            params, settings.workspace, {"airflow.dag_id": dag_id, "airflow.run_id": run_id}
        )
        client = MlflowClient(tracking_uri=resolve_tracking_uri(settings))
        for key, value in (tags or {}).items():
            client.set_tag(run, key, str(value)[:5000])
    logger.info("mlflow: parent run %s for %s/%s", run, dag_id, run_id)
    return run


def finish_parent_run(
    settings: Settings, run_id: str, status: str, tags: Mapping[str, str] | None = None
) -> None:
    """Tag the parent run and mark it FINISHED or FAILED."""
    from mlflow.tracking import MlflowClient

    from pipeline.ops import tracking

    params = load_params(settings.params_path, check_paths=False)
    with _tracking_env(settings):
        client = MlflowClient(tracking_uri=resolve_tracking_uri(settings))
        for key, value in (tags or {}).items():
            client.set_tag(run_id, key, str(value)[:5000])
        tracking.finish_pipeline_run(params, settings.workspace, run_id, status=status)


# -- one stage ------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class StageResult:
    """What a stage leaves for the next task: whether DVC skipped it, its outputs' hashes, its MLflow run."""

    stage: str
    skipped: bool
    outputs: dict[str, str]
    mlflow_run_id: str | None
    seconds: float

    def as_xcom(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _executable(name: str) -> str:
    # The console scripts installed beside this interpreter (the project venv), else PATH.
    local = Path(sys.executable).parent / name
    return str(local) if local.exists() else (shutil.which(name) or name)


def stage_command(stage: str, settings: Settings) -> list[str]:
    """The command line that runs one stage in the workspace."""
    if settings.runner == "dvc":
        return [_executable("dvc"), "repro", "--single-item", stage]
    return [_executable("colbert-pipeline"), stage, "--params", settings.params_file]


def stage_environment(
    settings: Settings,
    parent_run_id: str | None,
    tracking_uri: str | None,
    extra_env: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The child's environment: this one, plus MLflow, the parent run, offline Hub and unbuffered output.

    ``extra_env`` comes last (a stateless task names its run's ref there). Unless it says otherwise, the
    register stage leaves recording the run to the DAG's own ``record_run`` task.
    """
    env = dict(os.environ)
    env.setdefault(RECORDER_ENV, "dag")
    bin_dir = str(Path(sys.executable).parent)
    # dvc.yaml's ``cmd: colbert-pipeline <stage>`` must find the project's console script.
    env["PATH"] = bin_dir + os.pathsep + env.get("PATH", "")
    env["PYTHONUNBUFFERED"] = "1"
    if (settings.workspace / "pipeline" / "__init__.py").exists():
        # The workspace is a project checkout: run its code, the code whose hashes DVC records.
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(settings.workspace), env.get("PYTHONPATH")]))
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    if tracking_uri:
        env[TRACKING_URI_ENV] = tracking_uri
    if parent_run_id:
        env[PARENT_RUN_ENV] = parent_run_id
    else:
        env.pop(PARENT_RUN_ENV, None)
    # tqdm reads TQDM_* defaults from the environment: a log file wants a progress line now and then.
    env.setdefault("TQDM_MININTERVAL", "10")
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
        if settings.hf_offline:
            env[name] = "1"
        else:
            env.pop(name, None)
    env.update(extra_env or {})
    return env


def dvc_up_to_date(stage: str, settings: Settings) -> bool:
    """DVC's own word: ``dvc status --json <stage>`` lists nothing for a stage whose code, params and inputs
    match ``dvc.lock`` and whose outputs are in place (``dvc repro`` would skip it)."""
    completed = subprocess.run(
        [_executable("dvc"), "status", "--json", stage],
        cwd=settings.workspace,
        env=stage_environment(settings, None, None),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if completed.returncode != 0:
        logger.warning("stage %s: dvc status failed (%s); running it", stage, completed.stderr.strip()[-300:])
        return False
    try:
        status = json.loads(completed.stdout or "{}")
    except json.JSONDecodeError:
        return False
    return isinstance(status, dict) and not status.get(stage)


def read_result(path: Path) -> dict[str, Any] | None:
    """The stage CLI's result file, or None when the stage never wrote one (it did not run, or was killed)."""
    with contextlib.suppress(OSError, json.JSONDecodeError):
        data = json.loads(path.read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else None
    return None


def run_stage(
    stage: str,
    settings: Settings,
    parent_run_id: str | None,
    tracking_uri: str | None = None,
    emit: Callable[[str], None] | None = None,
    tail_lines: int = 200,
    extra_env: Mapping[str, str] | None = None,
) -> StageResult:
    """Run one stage in a supervised child process in the workspace, streaming its output to ``emit``.

    Raises :class:`StageFailed` with the stage's own error message and kind when it fails. If this call is
    interrupted (an Airflow ``execution_timeout``) or this process dies, the child's whole process group
    stops.
    """
    emit = emit or (lambda line: logger.info("[%s] %s", stage, line))
    # Who owns this stage, taken before ``dvc status`` (seconds on a big workspace): a worker killed meanwhile
    # orphans this process, and its ancestors taken later would no longer name the worker.
    owners = ancestors(os.getpid())
    if settings.runner == "dvc" and dvc_up_to_date(stage, settings):
        logger.info("stage %s: skipped (unchanged: dvc status reports it up to date)", stage)
        return StageResult(
            stage=stage,
            skipped=True,
            outputs=lineage.stage_outputs(settings.workspace, stage),
            mlflow_run_id=None,
            seconds=0.0,
        )
    command = stage_command(stage, settings)
    env = stage_environment(settings, parent_run_id, tracking_uri, extra_env)
    with tempfile.TemporaryDirectory(prefix=f"colbert-{stage}-") as scratch:
        result_file = Path(scratch) / "result.json"
        env[RESULT_FILE_ENV] = str(result_file)
        logger.info("stage %s: running %s in %s", stage, " ".join(command), settings.workspace)
        # An owner already gone raises runner.OwnerGone (an infrastructure error) and nothing starts.
        process = run_process(
            command, cwd=settings.workspace, env=env, emit=emit, tail_lines=tail_lines, owners=owners
        )
        result = read_result(result_file)
    if process.returncode != 0 or (result is not None and not result.get("ok")):
        if result is not None and result.get("kind"):
            kind, message = str(result["kind"]), str(result.get("message", ""))
        else:
            # The stage wrote nothing: DVC itself failed (its lock, a missing dependency) or the stage was
            # killed. Through the CLI runner the exit status still says the kind.
            kind = kind_of_exit_code(process.returncode) if settings.runner == "cli" else "internal"
            message = "\n".join([line for line in process.tail if line.strip()][-5:]) or "no output"
        raise StageFailed(stage, process.returncode, message, kind)
    outputs = lineage.stage_outputs(settings.workspace, stage) if settings.runner == "dvc" else {}
    if not outputs and result is not None:
        outputs = {str(k): str(v) for k, v in (result.get("outputs") or {}).items()}
    run_id = (result or {}).get("mlflow_run_id")
    logger.info("stage %s: done in %.1fs", stage, process.seconds)
    return StageResult(
        stage=stage,
        skipped=False,
        outputs=outputs,
        mlflow_run_id=str(run_id) if run_id else None,
        seconds=process.seconds,
    )


def record_run(settings: Settings, run_id: str, version: str | None) -> dict[str, Any]:
    """Push the run's outputs, commit its ``params.yaml`` and ``dvc.lock`` to its ref, tag ``version``."""
    from pipeline.ops import versioning

    params = load_params(settings.params_path, check_paths=False)
    return versioning.record_run(
        settings.workspace,
        run_id,
        STAGES if settings.runner == "dvc" else (),
        remote_name=settings.dvc_remote,
        model_name=params.register.model_name,
        version=version,
        tracking_uri=resolve_tracking_uri(settings),
    )


def read_registry(settings: Settings) -> Decision:
    """The register stage's decision (``metrics/registry.json`` in the workspace)."""
    params = load_params(settings.params_path, check_paths=False)
    return Decision.read(Layout(params, settings.workspace).registry_decision)
