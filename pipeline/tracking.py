"""MLflow tracking: one parent run per pipeline run, one child run per stage, lineage tags, bounded retries.

**Where runs go.** The tracking URI is absolute: ``MLFLOW_TRACKING_URI`` if set, else
``tracking.tracking_uri`` from params (a relative ``sqlite:///mlruns.db`` is taken relative to the project
folder), else ``sqlite:///<project>/mlruns.db``.

**Grouping.** Stages of one pipeline run are children of one parent run: the run named by
``COLBERT_PIPELINE_PARENT_RUN_ID`` (Airflow creates it with :func:`start_pipeline_run` and passes it to every
stage process), else the parent for this git commit and params (so the stages of one ``dvc repro`` land
together even though each runs in its own process).

**Lineage.** Every stage run carries ``git_commit``, ``git_dirty``, ``params_hash``, ``<stage>_params_hash``
and the DVC md5 of the artifacts it reads and writes (:data:`STAGE_ARTIFACTS`), as tags
``lineage.<artifact>.md5`` with artifact one of ``data_train``, ``data_eval`` (the held-out benchmark),
``model``, ``index``. Hashes come from ``dvc.lock`` when its entry is current, else they are computed with
DVC's own hashing (``dvc_data``), so they are the same values ``dvc.lock`` would hold.

**A server that is down** is found before any work: :func:`check_tracking_server` polls ``/health``
``tracking.retries`` more times with exponential backoff, then raises :class:`TrackingUnavailableError`
naming the URI and how to fix it. MLflow's own HTTP retries are bounded by the same number (its default
retries for minutes).

Example:
    >>> from pipeline import tracking  # doctest: +SKIP
    >>> with tracking.stage_run("train", params, project) as run:  # doctest: +SKIP
    ...     trainer = Trainer(..., callbacks=[tracking.MlflowLossCallback()])
    >>> run.info.run_id  # doctest: +SKIP
    '3f0c...'
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

from pipeline.config import Params, resolve_path

logger = logging.getLogger(__name__)

PARENT_RUN_ENV = "COLBERT_PIPELINE_PARENT_RUN_ID"
TRACKING_URI_ENV = "MLFLOW_TRACKING_URI"
LINEAGE_PREFIX = "lineage."

#: Artifacts each stage reads and writes: inputs are hashed when its run starts, outputs when it succeeds.
STAGE_ARTIFACTS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "prepare": ((), ("data_train", "data_eval")),
    "baseline": (("data_eval",), ()),
    "train": (("data_train",), ("model",)),
    "evaluate": (("data_eval", "model"), ()),
    "index": (("model",), ("index",)),
    "register": (("data_train", "data_eval", "model", "index"), ()),
}

_T = TypeVar("_T")
#: The MLflow HTTP retry settings this module set (so a later, different ``retries`` can replace them).
_OWN_HTTP_SETTINGS: dict[str, str] = {}


class TrackingUnavailableError(RuntimeError):
    """The MLflow tracking server (or store) cannot be reached after the configured retries."""


# ---------------------------------------------------------------------------------------------- where


def tracking_uri(params: Params, project: Path) -> str:
    """The absolute tracking URI for this project.

    Example (with ``MLFLOW_TRACKING_URI`` unset):
        >>> from pathlib import Path
        >>> tracking_uri(Params(), Path("/srv/project"))
        'sqlite:////srv/project/mlruns.db'
        >>> tracking_uri(Params.model_validate({"tracking": {"tracking_uri": "sqlite:///t.db"}}), Path("/p"))
        'sqlite:////p/t.db'
    """
    uri = os.environ.get(TRACKING_URI_ENV) or params.tracking.tracking_uri
    project = Path(project)
    if not uri:
        return f"sqlite:///{(project / 'mlruns.db').resolve()}"
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return f"sqlite:///{(project / uri.removeprefix('sqlite:///')).resolve()}"
    if uri.startswith("file:") and not uri.startswith("file:///") and not uri.startswith("file://"):
        return (project / uri.removeprefix("file:")).resolve().as_uri()
    if "://" not in uri and not uri.startswith(("databricks", "file:")):
        return (project / uri).resolve().as_uri()  # a bare folder: MLflow's file store
    return uri


def _bound_mlflow_http_retries(retries: int) -> None:
    # MLflow's REST client retries a refused connection 7 times with backoff factor 2 (minutes). Bound it by
    # tracking.retries, unless the user set these variables themselves.
    wanted = {
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": str(retries),
        "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
        "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0.5",
    }
    for name, value in wanted.items():
        current = os.environ.get(name)
        if current is None or _OWN_HTTP_SETTINGS.get(name) == current:
            os.environ[name] = value
            _OWN_HTTP_SETTINGS[name] = value


def _health_url(uri: str) -> str:
    return uri.rstrip("/") + "/health"


def check_tracking_server(uri: str, retries: int, timeout: float = 5.0, first_wait: float = 0.5) -> None:
    """Raise :class:`TrackingUnavailableError` unless ``uri`` answers, trying ``1 + retries`` times.

    HTTP(S) servers must answer ``GET /health``; a SQLite store needs its folder to exist. Waits between
    attempts double from ``first_wait`` seconds (0.5, 1, 2, ... capped at 8).

    Example:
        >>> check_tracking_server("http://127.0.0.1:9", retries=0, first_wait=0)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        pipeline.tracking.TrackingUnavailableError: MLflow tracking server http://127.0.0.1:9 is not ...
    """
    if uri.startswith("sqlite:///"):
        folder = Path(uri.removeprefix("sqlite:///")).parent
        if not folder.is_dir():
            raise TrackingUnavailableError(
                f"MLflow tracking store {uri}: folder {folder} does not exist "
                f"(fix tracking.tracking_uri in params.yaml or {TRACKING_URI_ENV})"
            )
        return
    if not uri.startswith(("http://", "https://")):
        return
    wait = first_wait
    error: Exception | None = None
    for attempt in range(1 + retries):
        try:
            with urllib.request.urlopen(_health_url(uri), timeout=timeout) as response:
                if response.status == 200:
                    if attempt:
                        logger.info("mlflow: %s answered after %d retries", uri, attempt)
                    return
                error = RuntimeError(f"/health answered HTTP {response.status}")
        except (urllib.error.URLError, OSError) as exc:
            error = exc
        if attempt < retries:
            logger.warning("mlflow: %s not reachable (%s); retrying in %.1fs", uri, error, wait)
            time.sleep(wait)
            wait = min(wait * 2, 8.0)
    raise TrackingUnavailableError(
        f"MLflow tracking server {uri} is not reachable after {1 + retries} attempts ({error}): start it, or "
        f"point {TRACKING_URI_ENV} / tracking.tracking_uri in params.yaml at a running server "
        f"(tracking.retries sets the attempts)"
    )


def call_with_retries(action: Callable[[], _T], what: str, uri: str, retries: int) -> _T:
    """Run one MLflow call; on a connection failure retry it ``retries`` times, then raise clearly.

    Errors that are not about reaching the server (a bad name, a missing version) are raised at once.
    """
    from mlflow.exceptions import MlflowException

    wait = 0.5
    for attempt in range(1 + retries):
        try:
            return action()
        except (MlflowException, OSError) as error:
            if not _is_connection_error(error):
                raise
            if attempt >= retries:
                raise TrackingUnavailableError(
                    f"MLflow tracking server {uri}: {what} failed after {1 + retries} attempts: "
                    f"{str(error).splitlines()[0][:300]}"
                ) from error
            logger.warning("mlflow: %s failed (%s); retrying in %.1fs", what, type(error).__name__, wait)
            time.sleep(wait)
            wait = min(wait * 2, 8.0)
    raise AssertionError("unreachable")  # pragma: no cover


def _is_connection_error(error: BaseException) -> bool:
    text = str(error)
    markers = (
        "Max retries exceeded",
        "Connection refused",
        "ConnectionError",
        "Failed to establish",
        "timed out",
    )
    return isinstance(error, ConnectionError | TimeoutError) or any(marker in text for marker in markers)


def configure(params: Params, project: Path, experiment: bool = True) -> str:
    """Point MLflow at this project's tracking URI (and experiment), after checking the server is up.

    Returns the URI. Raises :class:`TrackingUnavailableError` when the server is down (bounded retry).
    ``experiment=False`` skips selecting (and maybe creating) the experiment: for read-only callers.
    """
    import mlflow

    uri = tracking_uri(params, project)
    retries = params.tracking.retries
    _bound_mlflow_http_retries(retries)
    check_tracking_server(uri, retries)
    mlflow.set_tracking_uri(uri)
    if not experiment:
        return uri
    call_with_retries(
        lambda: mlflow.set_experiment(params.tracking.experiment), "set_experiment", uri, retries
    )
    return uri


# ---------------------------------------------------------------------------------------------- lineage


def git_commit(project: Path) -> str:
    """The checked-out commit, or ``unknown`` outside a git work tree."""
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=project, capture_output=True, text=True, check=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return result.stdout.strip()


def git_dirty(project: Path) -> str:
    """``true`` when tracked files differ from the commit (the code is not exactly ``git_commit``)."""
    try:
        result = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=project,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return "true" if result.stdout.strip() else "false"


def params_hash(section: Any) -> str:
    """A short stable hash of a params section (or the whole params, or any JSON-able value).

    Example:
        >>> params_hash({"epochs": 1}) == params_hash({"epochs": 1}), len(params_hash({"epochs": 1}))
        (True, 16)
    """
    data = section.model_dump(mode="json") if hasattr(section, "model_dump") else section
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def artifact_paths(params: Params, project: Path) -> dict[str, Path]:
    """Where each lineage artifact lives for these params."""
    prepared = resolve_path(params.prepare.output, project)
    return {
        "data_train": prepared / "train",
        "data_eval": prepared / "eval",
        "model": resolve_path(params.train.output, project),
        "index": resolve_path(params.index.folder, project) / params.index.name,
    }


def compute_md5(path: Path) -> str:
    """DVC's md5 of a file or folder (a folder's ends in ``.dir``), the value ``dvc.lock`` records.

    Example:
        >>> import tempfile
        >>> folder = Path(tempfile.mkdtemp()); _ = (folder / "a.txt").write_text("hello\\n")
        >>> compute_md5(folder).endswith(".dir"), compute_md5(folder / "a.txt")
        (True, 'b1946ac92492d2347c6235b4d2611184')
    """
    from dvc_data.hashfile.build import build
    from dvc_data.hashfile.db import HashFileDB
    from dvc_objects.fs.local import LocalFileSystem
    from dvc_objects.fs.memory import MemoryFileSystem

    odb = HashFileDB(MemoryFileSystem(), "/lineage-odb")
    _, _, obj = build(odb, str(Path(path).resolve()), LocalFileSystem(), "md5", dry_run=True)
    return str(obj.hash_info.value)


def _dvc_lock_entries(project: Path) -> dict[str, dict[str, Any]]:
    import yaml

    lock = project / "dvc.lock"
    if not lock.is_file():
        return {}
    try:
        data = yaml.safe_load(lock.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as error:
        logger.warning("lineage: ignoring unreadable %s (%s)", lock, error)
        return {}
    entries: dict[str, dict[str, Any]] = {}
    for stage in (data.get("stages") or {}).values():
        for out in (stage or {}).get("outs") or []:
            if isinstance(out, dict) and "path" in out and "md5" in out:
                entries[str(Path(out["path"]))] = out
    return entries


def _lock_entry_is_current(entry: Mapping[str, Any], path: Path, lock_mtime: float) -> bool:
    # dvc.lock is written after its stage's outputs; a file newer than the lock, or another file count or
    # size, means the output was rewritten outside DVC (e.g. the CLI) and the recorded md5 is stale.
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    if any(p.stat().st_mtime > lock_mtime for p in files):
        return False
    if "size" in entry and sum(p.stat().st_size for p in files) != entry["size"]:
        return False
    return not ("nfiles" in entry and path.is_dir() and len(files) != entry["nfiles"])


def dvc_md5(path: Path, project: Path) -> str | None:
    """The DVC md5 of ``path``: from ``dvc.lock`` when its entry is current, else computed; None if absent."""
    path = Path(path)
    if not path.exists():
        return None
    project = Path(project).resolve()
    try:
        relative = str(path.resolve().relative_to(project))
    except ValueError:
        relative = None
    if relative is not None:
        entry = _dvc_lock_entries(project).get(relative)
        if entry and _lock_entry_is_current(entry, path, (project / "dvc.lock").stat().st_mtime):
            return str(entry["md5"])
    return compute_md5(path)


def lineage_tags(params: Params, project: Path, artifacts: Iterable[str] = ()) -> dict[str, str]:
    """``git_commit``, ``git_dirty``, ``params_hash`` and ``lineage.<artifact>.md5`` of existing artifacts.

    Example:
        >>> tags = lineage_tags(params, project, ["model", "index"])  # doctest: +SKIP
        >>> tags["lineage.model.md5"]  # doctest: +SKIP
        '5d41402abc4b2a76b9719d911017c592.dir'
    """
    project = Path(project)
    commit = git_commit(project)
    tags = {
        "git_commit": commit,
        "git_dirty": git_dirty(project),
        "params_hash": params_hash(params),
    }
    if commit != "unknown":
        tags["mlflow.source.git.commit"] = commit
    paths = artifact_paths(params, project)
    for name in artifacts:
        md5 = dvc_md5(paths[name], project)
        if md5 is not None:
            tags[f"{LINEAGE_PREFIX}{name}.md5"] = md5
    return tags


# ---------------------------------------------------------------------------------------------- runs


def _experiment_id(client: Any, name: str, uri: str, retries: int) -> str:
    experiment = call_with_retries(
        lambda: client.get_experiment_by_name(name), "get_experiment", uri, retries
    )
    if experiment is not None:
        return str(experiment.experiment_id)
    return str(call_with_retries(lambda: client.create_experiment(name), "create_experiment", uri, retries))


def start_pipeline_run(params: Params, project: Path, tags: Mapping[str, str] | None = None) -> str:
    """Create the parent run that groups one pipeline run's stage runs; return its run id.

    Idempotent on ``tags``: a retried call with the same tags (e.g. an Airflow ``dag_id`` and ``run_id``)
    finds the parent it created before. The run stays ``RUNNING`` until :func:`finish_pipeline_run`. Pass
    its id to stage processes in ``COLBERT_PIPELINE_PARENT_RUN_ID``.

    Example:
        >>> tags = {"airflow.dag_id": "colbert", "airflow.run_id": "r1"}
        >>> run_id = start_pipeline_run(params, project, tags)  # doctest: +SKIP
        >>> os.environ["COLBERT_PIPELINE_PARENT_RUN_ID"] = run_id  # doctest: +SKIP
    """
    tags = {str(k): str(v) for k, v in (tags or {}).items()}
    extra = {}
    if "airflow.dag_id" in tags:
        extra["mlflow.runName"] = f"{tags['airflow.dag_id']}/{tags.get('airflow.run_id', '')}"
    return _find_or_create_parent(params, project, identity=tags, extra=extra, finished=False)


def _find_or_create_parent(
    params: Params, project: Path, identity: Mapping[str, str], extra: Mapping[str, str], finished: bool
) -> str:
    from mlflow import MlflowClient

    uri = configure(params, project)
    retries = params.tracking.retries
    client = MlflowClient(tracking_uri=uri)
    experiment_id = _experiment_id(client, params.tracking.experiment, uri, retries)
    if identity:
        clauses = [f"tags.`{key}` = '{_quote(value)}'" for key, value in sorted(identity.items())]
        found = call_with_retries(
            lambda: client.search_runs(
                [experiment_id],
                filter_string=" and ".join(["tags.pipeline_parent = 'true'", *clauses]),
                max_results=1,
            ),
            "search_runs",
            uri,
            retries,
        )
        if found:
            logger.debug("mlflow: reusing pipeline run %s", found[0].info.run_id)
            return str(found[0].info.run_id)
    all_tags = {**lineage_tags(params, project), "pipeline_parent": "true", **extra, **identity}
    run = call_with_retries(
        lambda: client.create_run(experiment_id, tags=all_tags), "create_run", uri, retries
    )
    if finished:
        # A dvc repro's parent has no one to close it: it is a folder for its children, closed at once.
        call_with_retries(lambda: client.set_terminated(run.info.run_id), "set_terminated", uri, retries)
    logger.info("mlflow: pipeline run %s at %s", run.info.run_id, uri)
    return str(run.info.run_id)


def finish_pipeline_run(params: Params, project: Path, run_id: str, status: str = "FINISHED") -> None:
    """Mark a parent run ``FINISHED`` or ``FAILED``."""
    from mlflow import MlflowClient

    uri = configure(params, project)
    client = MlflowClient(tracking_uri=uri)
    call_with_retries(
        lambda: client.set_terminated(run_id, status=status), "set_terminated", uri, params.tracking.retries
    )


def _quote(value: str) -> str:
    return value.replace("'", "\\'")


def parent_run_id(params: Params, project: Path) -> str:
    """The parent run: ``COLBERT_PIPELINE_PARENT_RUN_ID``, else the one for this git commit and params."""
    if os.environ.get(PARENT_RUN_ENV):
        return os.environ[PARENT_RUN_ENV]
    key = f"{git_commit(project)}-{params_hash(params)}"
    return _find_or_create_parent(
        params, project, {"pipeline_key": key}, {"mlflow.runName": f"pipeline-{key[:12]}"}, finished=True
    )


@contextlib.contextmanager
def stage_run(stage: str, params: Params, project: Path, tags: dict[str, str] | None = None) -> Iterator[Any]:
    """A child MLflow run for one stage (the active run inside the block), tagged with its lineage.

    Inputs of the stage (:data:`STAGE_ARTIFACTS`) are hashed at the start, its outputs when the block ends
    without an error. The stage's params section is logged as params ``<stage>.<key>``.
    """
    import mlflow

    project = Path(project)
    uri = configure(params, project)
    parent = parent_run_id(params, project)
    inputs, outputs = STAGE_ARTIFACTS.get(stage, ((), ()))
    section = getattr(params, stage, None)
    all_tags = {
        "stage": stage,
        "mlflow.parentRunId": parent,
        **lineage_tags(params, project, inputs),
        **({f"{stage}_params_hash": params_hash(section)} if section is not None else {}),
        **(tags or {}),
    }
    retries = params.tracking.retries
    run = call_with_retries(
        lambda: mlflow.start_run(run_name=stage, tags=all_tags), f"start {stage} run", uri, retries
    )
    try:
        if section is not None and hasattr(section, "model_dump"):
            flat = _flatten(section.model_dump(mode="json"))
            mlflow.log_params({f"{stage}.{key}": _param_value(value) for key, value in flat.items()})
        yield run
        paths = artifact_paths(params, project)
        produced = {f"{LINEAGE_PREFIX}{name}.md5": dvc_md5(paths[name], project) for name in outputs}
        mlflow.set_tags({key: value for key, value in produced.items() if value})
    except BaseException:
        mlflow.end_run(status="FAILED")
        raise
    mlflow.end_run(status="FINISHED")


def _param_value(value: Any) -> Any:
    text = value if isinstance(value, str) else json.dumps(value)
    return text[:6000]


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


# ---------------------------------------------------------------------------------------------- training


def _loss_callback_class() -> type:
    from transformers import TrainerCallback

    class MlflowLossCallback(TrainerCallback):
        """Log the trainer's numeric logs (``loss``, ``learning_rate``, ``grad_norm``...) per step to MLflow.

        Logs to ``run_id`` if given, else to the active run (the stage run). Only the main process logs.

        Example:
            >>> trainer = SentenceTransformerTrainer(..., callbacks=[tracking.MlflowLossCallback()])
            ... # doctest: +SKIP
        """

        def __init__(self, run_id: str | None = None) -> None:
            self.run_id = run_id

        def on_log(
            self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any
        ) -> None:
            import mlflow

            if not getattr(state, "is_world_process_zero", True):
                return
            numbers = {
                key: float(value)
                for key, value in (logs or {}).items()
                if isinstance(value, int | float) and not isinstance(value, bool)
            }
            if not numbers:
                return
            if self.run_id:
                mlflow.log_metrics(numbers, step=state.global_step, run_id=self.run_id)
            elif mlflow.active_run() is not None:
                mlflow.log_metrics(numbers, step=state.global_step)

    return MlflowLossCallback


def __getattr__(name: str) -> Any:
    # ``tracking.MlflowLossCallback`` is built on first use, so importing this module does not import
    # transformers (the Airflow DAG and the CLI's status command stay light).
    if name == "MlflowLossCallback":
        cls = _loss_callback_class()
        globals()[name] = cls
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
