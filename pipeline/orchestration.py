"""What the Airflow DAG does, without Airflow: settings, params overrides, stage subprocesses, the registry.

The DAG in ``dags/colbert_pipeline.py`` is a thin layer over this module, so everything here can be unit
tested (and reused by another orchestrator) without a scheduler. Nothing here imports torch, so the DAG file
stays cheap to parse.

Every stage runs as a child process (``dvc repro --single-item <stage>``, or ``colbert-pipeline <stage>``) in
the configured workspace. A fresh process means a GPU stage never inherits a CUDA context from a forked
worker, and DVC skips a stage whose code, params and inputs did not change.

Example:
    >>> from pipeline import orchestration  # doctest: +SKIP
    >>> settings = orchestration.Settings.resolve(os.environ.get)  # doctest: +SKIP
    >>> result = orchestration.run_stage("prepare", settings, parent_run_id=None)  # doctest: +SKIP
    >>> result.skipped, result.outputs  # doctest: +SKIP
    (False, {'data/prepared': 'f3c1...dir'})
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

from pipeline.config import (
    DEFAULT_PARAMS_FILE,
    ConfigError,
    apply_overrides,
    load_params,
    read_params_file,
    write_params,
)
from pipeline.io import atomic_write_text, read_json

logger = logging.getLogger(__name__)

WORKSPACE_ENV = "COLBERT_PIPELINE_WORKSPACE"
RUNNER_ENV = "COLBERT_PIPELINE_RUNNER"
HF_OFFLINE_ENV = "COLBERT_PIPELINE_HF_OFFLINE"
TRACKING_URI_ENV = "MLFLOW_TRACKING_URI"
PARENT_RUN_ENV = "COLBERT_PIPELINE_PARENT_RUN_ID"
RUNNERS = ("dvc", "cli")

#: The project root: the default workspace when nothing is configured (a checkout with dvc.yaml).
PROJECT_ROOT = Path(__file__).resolve().parents[1]
#: Where the DAG keeps the params file it replaced, so a failed run can put it back.
STATE_DIR = ".colbert-pipeline"

#: DAG ``Param`` name -> the params.yaml key it overrides (``data_path`` depends on the source).
DAG_PARAM_KEYS = {
    "base_model": "train.base_model",
    "data_source": "prepare.source",
    "epochs": "train.epochs",
    "promotion_margin": "register.margin",
}
#: Which key ``data_path`` sets for each source; kd needs three files, so it goes through ``overrides``.
DATA_PATH_KEYS = {"triplets": "prepare.triplets.path", "beir": "prepare.beir.folder"}

_DOTTED_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


class OrchestrationError(ValueError):
    """Bad orchestration settings (workspace, runner, ...), naming the setting."""


class StageFailed(RuntimeError):
    """A stage subprocess exited non-zero.

    ``permanent`` is true when the stage rejected its input (the CLI's ``error:`` line, exit status 2):
    retrying cannot help, so the orchestrator should fail the task at once.
    """

    def __init__(self, stage: str, returncode: int, message: str, permanent: bool) -> None:
        super().__init__(f"stage {stage!r} failed (exit status {returncode}): {message}")
        self.stage = stage
        self.returncode = returncode
        self.message = message
        self.permanent = permanent


@dataclasses.dataclass(frozen=True)
class Settings:
    """Where and how stages run. Resolve it from the environment (or Airflow Variables) with ``resolve``."""

    workspace: Path
    runner: str = "dvc"
    tracking_uri: str | None = None
    hf_offline: bool = True
    params_file: str = DEFAULT_PARAMS_FILE

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


# -- params ---------------------------------------------------------------------------------------------


def overrides_from_dag_params(dag_params: Mapping[str, Any], current_source: str) -> dict[str, Any]:
    """Turn the DAG's run ``Param``s into dotted params.yaml overrides (``None`` means "keep params.yaml").

    ``overrides`` (a mapping of dotted keys) comes last, so it can set anything the named Params do not.
    """
    overrides: dict[str, Any] = {}
    for name, key in DAG_PARAM_KEYS.items():
        if dag_params.get(name) is not None:
            overrides[key] = dag_params[name]
    data_path = dag_params.get("data_path")
    if data_path is not None:
        source = overrides.get("prepare.source", current_source)
        if source not in DATA_PATH_KEYS:
            raise ConfigError(
                f"DAG param data_path: the {source!r} source takes no single data path "
                f"(use overrides, e.g. prepare.kd.scores / prepare.kd.queries / prepare.kd.documents)"
            )
        overrides[DATA_PATH_KEYS[source]] = data_path
    extra = dag_params.get("overrides") or {}
    if not isinstance(extra, Mapping):
        raise ConfigError(
            f"DAG param overrides: expected a mapping of dotted keys, got {type(extra).__name__}"
        )
    for key, value in extra.items():
        if not isinstance(key, str) or not _DOTTED_KEY.fullmatch(key):
            raise ConfigError(f"DAG param overrides: {key!r} is not a dotted params key like train.max_steps")
        overrides[key] = value
    return overrides


@dataclasses.dataclass(frozen=True)
class ParamsUpdate:
    """What ``apply_run_overrides`` did: the file, its hash now, the keys it changed, and its backup."""

    params_path: str
    sha256: str
    changed: list[str]
    backup: str | None

    def as_xcom(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file ("" when it does not exist)."""
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else ""


def _get_dotted(raw: Mapping[str, Any], dotted: str) -> tuple[bool, Any]:
    node: Any = raw
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return False, None
        node = node[part]
    return True, node


def apply_run_overrides(params_path: Path, overrides: Mapping[str, Any], run_key: str) -> ParamsUpdate:
    """Validate ``overrides`` against ``params_path``; write the changed ones into it atomically.

    The file is the one DVC tracks, so writing the overrides there is what makes ``dvc repro`` re-run exactly
    the stages whose section changed. The previous file is kept under ``.colbert-pipeline/`` (named by
    ``run_key``) so ``restore_params`` can put it back when the run fails. Raises ``ConfigError`` naming the
    key for a bad override, before anything is written.
    """
    load_params(params_path, dict(overrides))  # raises ConfigError naming the key (and missing paths)
    raw = read_params_file(params_path)
    changed = sorted(key for key, value in overrides.items() if _get_dotted(raw, key) != (True, value))
    backup: Path | None = None
    if changed:
        state = params_path.parent / STATE_DIR
        state.mkdir(parents=True, exist_ok=True)
        # The folder ignores itself, so the workspace's git status stays clean without touching .gitignore.
        (state / ".gitignore").write_text("*\n", encoding="utf-8")
        backup = state / f"params.before-{_safe_name(run_key)}.yaml"
        atomic_write_text(backup, params_path.read_text(encoding="utf-8") if params_path.exists() else "")
        write_params(apply_overrides(raw, {key: overrides[key] for key in changed}), params_path)
        logger.info(
            "params: wrote %s to %s", ", ".join(f"{k}={overrides[k]!r}" for k in changed), params_path
        )
    else:
        logger.info("params: %s already has every override; nothing to write", params_path)
    return ParamsUpdate(
        params_path=str(params_path),
        sha256=file_sha256(params_path),
        changed=changed,
        backup=str(backup) if backup else None,
    )


def restore_params(update: Mapping[str, Any]) -> bool:
    """Put back the params file a failed run replaced, unless someone changed it since. True if restored."""
    backup = update.get("backup")
    if not backup or not Path(backup).exists():
        return False
    params_path = Path(update["params_path"])
    if file_sha256(params_path) != update.get("sha256"):
        logger.warning("params: %s changed since this run wrote it; not restoring %s", params_path, backup)
        return False
    atomic_write_text(params_path, Path(backup).read_text(encoding="utf-8"))
    logger.info("params: restored %s from %s (the run failed)", params_path, backup)
    return True


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)[:150]


# -- MLflow parent run ----------------------------------------------------------------------------------


def resolve_tracking_uri(settings: Settings) -> str:
    """The absolute MLflow URI the stages will use: the configured one, else the project's default."""
    from pipeline import tracking

    if settings.tracking_uri:
        return settings.tracking_uri
    return tracking.tracking_uri(load_params(settings.params_path, check_paths=False), settings.workspace)


@contextlib.contextmanager
def _tracking_env(settings: Settings) -> Iterator[None]:
    # pipeline.tracking reads MLFLOW_TRACKING_URI first: make it the URI these settings resolve to (an
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

    from pipeline import tracking

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

    from pipeline import tracking

    params = load_params(settings.params_path, check_paths=False)
    with _tracking_env(settings):
        client = MlflowClient(tracking_uri=resolve_tracking_uri(settings))
        for key, value in (tags or {}).items():
            client.set_tag(run_id, key, str(value)[:5000])
        tracking.finish_pipeline_run(params, settings.workspace, run_id, status=status)


# -- stage subprocess -----------------------------------------------------------------------------------


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
    settings: Settings, parent_run_id: str | None, tracking_uri: str | None
) -> dict[str, str]:
    """The child's environment: this one, plus MLflow, the parent run, offline Hub and unbuffered output."""
    env = dict(os.environ)
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
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
        if settings.hf_offline:
            env[name] = "1"
        else:
            env.pop(name, None)
    return env


_SKIP_PATTERNS = (
    re.compile(r"Stage '(?P<stage>[^']+)' didn't change, skipping"),
    re.compile(r"Stage '(?P<stage>[^']+)' is cached - skipping run"),
)
_CLI_ERROR = re.compile(r"colbert-pipeline (?P<stage>\S+): error: (?P<message>.*)")
_EXCEPTION_LINE = re.compile(r"^(?:[A-Za-z_][\w.]*\.)?[A-Z]\w*(?:Error|Exception|Exit|Interrupt)\b:?.*")
_DVC_ERROR = re.compile(r"^ERROR: (?P<message>.*)")


def stage_error_message(lines: list[str]) -> tuple[str, bool]:
    """The stage's own error from its output, and whether it is permanent (bad input: no retry).

    Preference: the CLI's one-line ``error:`` (with the lines that continue it), then the last exception line
    of a traceback, then DVC's ``ERROR:`` line, then the last output lines.
    """
    for index, line in enumerate(lines):
        match = _CLI_ERROR.search(line)
        if match:
            message = [match["message"]]
            # A ConfigError lists one key per line after the first.
            for follow in lines[index + 1 :]:
                if follow.startswith(("ERROR:", "colbert-pipeline")) or _SKIP_PATTERNS[0].search(follow):
                    break
                if follow.strip():
                    message.append(follow.strip())
            return "\n".join(message), True
    for line in reversed(lines):
        if _EXCEPTION_LINE.match(line.strip()):
            return line.strip(), False
    for line in reversed(lines):
        match = _DVC_ERROR.match(line.strip())
        if match:
            return match["message"], False
    tail = [line for line in lines if line.strip()][-5:]
    return ("\n".join(tail) or "no output"), False


def _cli_summary(lines: list[str]) -> dict[str, Any]:
    # The CLI ends with its outputs as an indented JSON object: "{" ... "}" at column 0.
    start = None
    for index in range(len(lines) - 1, -1, -1):
        if lines[index].rstrip() == "}":
            for begin in range(index, -1, -1):
                if lines[begin].rstrip() == "{":
                    start = begin
                    break
            if start is not None:
                try:
                    return json.loads("\n".join(lines[start : index + 1]))
                except json.JSONDecodeError:
                    return {}
    return {}


def dvc_lock_outputs(workspace: Path, stage: str) -> dict[str, str]:
    """``{path: md5}`` of a stage's outputs as recorded in ``dvc.lock`` (empty when it has none)."""
    lock = workspace / "dvc.lock"
    if not lock.exists():
        return {}
    data = yaml.safe_load(lock.read_text(encoding="utf-8")) or {}
    entry = (data.get("stages") or {}).get(stage) or {}
    return {str(out["path"]): str(out.get("md5", "")) for out in entry.get("outs") or [] if "path" in out}


def run_stage(
    stage: str,
    settings: Settings,
    parent_run_id: str | None,
    tracking_uri: str | None = None,
    emit: Callable[[str], None] | None = None,
    tail_lines: int = 400,
) -> StageResult:
    """Run one stage in a child process in the workspace, streaming its output line by line to ``emit``.

    Raises ``StageFailed`` with the stage's own error message when it exits non-zero. If this call is
    interrupted (an Airflow ``execution_timeout`` or a kill), the child's whole process group is stopped,
    so no stage keeps running (and holding DVC's lock) after its task is gone.
    """
    emit = emit or (lambda line: logger.info("[%s] %s", stage, line))
    command = stage_command(stage, settings)
    env = stage_environment(settings, parent_run_id, tracking_uri)
    logger.info("stage %s: running %s in %s", stage, " ".join(command), settings.workspace)
    started = time.monotonic()
    tail: collections.deque[str] = collections.deque(maxlen=tail_lines)
    skipped = False
    process = subprocess.Popen(
        command,
        cwd=settings.workspace,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
        bufsize=1,
        start_new_session=True,  # its own process group: we can stop the stage and everything it started
    )
    try:
        assert process.stdout is not None
        for raw_line in process.stdout:
            line = raw_line.rstrip("\n")
            tail.append(line)
            emit(line)
            if any((m := pattern.search(line)) and m["stage"] == stage for pattern in _SKIP_PATTERNS):
                skipped = True
        returncode = process.wait()
    except BaseException:
        _stop(process, stage)
        raise
    seconds = round(time.monotonic() - started, 3)
    lines = list(tail)
    if returncode != 0:
        message, permanent = stage_error_message(lines)
        # Through the CLI, exit status 2 is its "bad input" status; through DVC the error line says it.
        permanent = permanent or (settings.runner == "cli" and returncode == 2)
        raise StageFailed(stage, returncode, message, permanent)
    summary = _cli_summary(lines)
    outputs = dvc_lock_outputs(settings.workspace, stage) if settings.runner == "dvc" else {}
    if not outputs:
        outputs = {key: str(value) for key, value in summary.items() if _looks_like_path(key, value)}
    run_id = summary.get("mlflow_run_id")
    logger.info("stage %s: %s in %.1fs", stage, "skipped (unchanged)" if skipped else "done", seconds)
    return StageResult(
        stage=stage,
        skipped=skipped,
        outputs=outputs,
        mlflow_run_id=str(run_id) if run_id else None,
        seconds=seconds,
    )


def _looks_like_path(key: str, value: Any) -> bool:
    return isinstance(value, str) and key != "stage" and ("/" in value or os.sep in value)


def _stop(process: subprocess.Popen[str], stage: str, grace_seconds: float = 30.0) -> None:
    if process.poll() is not None:
        return
    logger.warning("stage %s: interrupted; stopping process group %d", stage, process.pid)
    for sig, wait in ((signal.SIGTERM, grace_seconds), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


# -- registry decision ----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class RegistryDecision:
    """The register stage's verdict (``metrics/registry.json``)."""

    promoted: bool
    version: str | None
    reason: str


REGISTRY_FILE = "metrics/registry.json"


def read_registry(path: Path) -> RegistryDecision:
    """Read and check ``metrics/registry.json``; a missing or malformed decision is an error naming it."""
    data = read_json(path)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(data).__name__}")
    for key in ("promoted", "reason"):
        if key not in data:
            raise ValueError(f"{path}: missing key {key!r}")
    if not isinstance(data["promoted"], bool):
        raise ValueError(f"{path}: promoted: expected true or false, got {data['promoted']!r}")
    version = data.get("version")
    return RegistryDecision(
        promoted=data["promoted"],
        version=None if version is None else str(version),
        reason=str(data["reason"]),
    )
