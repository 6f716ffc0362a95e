"""MLflow tracking: one parent run per pipeline run, one child run per stage, lineage tags, bounded retries.

**Where runs go.** The tracking URI is absolute: ``MLFLOW_TRACKING_URI`` if set, else
``tracking.tracking_uri`` from params (a relative ``sqlite:///mlruns.db`` is taken relative to the project
folder), else ``sqlite:///<project>/mlruns.db``.

**Grouping.** Stages of one pipeline run are children of one parent run: the run named by
``COLBERT_PIPELINE_PARENT_RUN_ID`` (Airflow creates it with :func:`start_pipeline_run` and passes it to every
stage process), else the parent for this git commit and params (so the stages of one ``dvc repro`` land
together even though each runs in its own process).

**Lineage.** Every stage run carries ``git_commit``, ``git_dirty``, ``params_hash``, ``<stage>_params_hash``
and the DVC md5 of the artifacts it reads and writes (:data:`pipeline.project.layout.STAGE_IO`), as tags
``lineage.<artifact>.md5`` with artifact one of ``data_train``, ``data_eval`` (the held-out benchmark),
``model``, ``index``. Hashes come from ``dvc.lock`` when its entry is current, else they are computed with
DVC's own hashing (``dvc_data``), so they are the same values ``dvc.lock`` would hold.

**A server that is down** is found before any work: :func:`check_tracking_server` polls ``/health``
``tracking.retries`` more times with exponential backoff, then raises :class:`TrackingUnavailableError` naming
the URI and how to fix it. After that check, MLflow's own HTTP retries are the one retry layer, bounded by the
same number and by ``tracking.request_timeout`` per request (:func:`bound_mlflow_http_retries`); anything
longer is for the orchestrator's task retries.

Example (the store is ``MLFLOW_TRACKING_URI``; the doctests run against a throwaway SQLite one):
    >>> import tempfile
    >>> from pipeline.project.config import Params
    >>> project = Path(tempfile.mkdtemp())
    >>> with stage_run("evaluate", Params(), project) as run:
    ...     pass  # the stage's work; inputs were hashed at the start, outputs are hashed at the end
    >>> run.data.tags["stage"], run.data.tags["git_commit"]
    ('evaluate', 'unknown')
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

from pipeline.ops.lineage import LINEAGE_PREFIX, dvc_md5, git_commit, lineage_tags, params_hash
from pipeline.project.config import Params
from pipeline.project.errors import InfrastructureError
from pipeline.project.layout import STAGE_IO, Layout
from pipeline.project.params_file import flatten

logger = logging.getLogger(__name__)

PARENT_RUN_ENV = "COLBERT_PIPELINE_PARENT_RUN_ID"
TRACKING_URI_ENV = "MLFLOW_TRACKING_URI"

_T = TypeVar("_T")
#: The MLflow HTTP retry settings this module set (so a later, different ``retries`` can replace them).
_OWN_HTTP_SETTINGS: dict[str, str] = {}


class TrackingUnavailableError(InfrastructureError):
    """The MLflow tracking server (or store) cannot be reached after the configured retries."""


# ---------------------------------------------------------------------------------------------- where


def tracking_uri(params: Params, project: Path) -> str:
    """The absolute tracking URI for this project.

    Example (``MLFLOW_TRACKING_URI`` wins when it is set; here it is not):
        >>> saved = os.environ.pop(TRACKING_URI_ENV, None)
        >>> tracking_uri(Params(), Path("/srv/project"))
        'sqlite:////srv/project/mlruns.db'
        >>> tracking_uri(Params.model_validate({"tracking": {"tracking_uri": "sqlite:///t.db"}}), Path("/p"))
        'sqlite:////p/t.db'
        >>> os.environ.update({TRACKING_URI_ENV: saved} if saved else {})
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


def bound_mlflow_http_retries(retries: int, timeout: float) -> None:
    """Make MLflow's own HTTP retries the one retry layer, bounded: ``retries`` retries, ``timeout`` s each.

    MLflow's REST client retries a refused connection 7 times with backoff factor 2 and waits 120 s per
    request by default (minutes in all). Here a call takes at most about ``(1 + retries) * timeout`` seconds
    plus 1 + 2 + 4 ... s of backoff. Variables the user set themselves are left alone.
    """
    wanted = {
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": str(retries),
        "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
        "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0.5",
        "MLFLOW_HTTP_REQUEST_TIMEOUT": str(max(1, round(timeout))),
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
        pipeline.ops.tracking.TrackingUnavailableError: MLflow tracking server http://127.0.0.1:9 is not ...
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


def configure(params: Params, project: Path, experiment: bool = True) -> str:
    """Point MLflow at this project's tracking URI (and experiment), after checking the server is up.

    Returns the URI. Raises :class:`TrackingUnavailableError` when the server is down (bounded retry).
    ``experiment=False`` skips selecting (and maybe creating) the experiment: for read-only callers.
    """
    import mlflow

    uri = tracking_uri(params, project)
    retries = params.tracking.retries
    bound_mlflow_http_retries(retries, params.tracking.request_timeout)
    check_tracking_server(uri, retries, timeout=min(5.0, params.tracking.request_timeout))
    mlflow.set_tracking_uri(uri)
    if not experiment:
        return uri
    mlflow.set_experiment(params.tracking.experiment)
    return uri


# ---------------------------------------------------------------------------------------------- runs


def _experiment_id(client: Any, name: str) -> str:
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return str(experiment.experiment_id)
    return str(client.create_experiment(name))


def start_pipeline_run(params: Params, project: Path, tags: Mapping[str, str] | None = None) -> str:
    """Create the parent run that groups one pipeline run's stage runs; return its run id.

    Idempotent on ``tags``: a retried call with the same tags (e.g. an Airflow ``dag_id`` and ``run_id``)
    finds the parent it created before. The run stays ``RUNNING`` until :func:`finish_pipeline_run`. Pass
    its id to stage processes in ``COLBERT_PIPELINE_PARENT_RUN_ID``.

    Example:
        >>> from pipeline.project.config import Params
        >>> tags = {"airflow.dag_id": "colbert", "airflow.run_id": "r1"}
        >>> run_id = start_pipeline_run(Params(), Path("."), tags)
        >>> start_pipeline_run(Params(), Path("."), tags) == run_id  # a retried task finds its run again
        True
        >>> finish_pipeline_run(Params(), Path("."), run_id, status="FINISHED")
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
    client = MlflowClient(tracking_uri=uri)
    experiment_id = _experiment_id(client, params.tracking.experiment)
    if identity:
        clauses = [f"tags.`{key}` = '{_quote(value)}'" for key, value in sorted(identity.items())]
        found = client.search_runs(
            [experiment_id],
            filter_string=" and ".join(["tags.pipeline_parent = 'true'", *clauses]),
            max_results=1,
        )
        if found:
            logger.debug("mlflow: reusing pipeline run %s", found[0].info.run_id)
            return str(found[0].info.run_id)
    all_tags = {**lineage_tags(params, project), "pipeline_parent": "true", **extra, **identity}
    run = client.create_run(experiment_id, tags=all_tags)
    if finished:
        # A dvc repro's parent has no one to close it: it is a folder for its children, closed at once.
        client.set_terminated(run.info.run_id)
    logger.info("mlflow: pipeline run %s at %s", run.info.run_id, uri)
    return str(run.info.run_id)


def finish_pipeline_run(params: Params, project: Path, run_id: str, status: str = "FINISHED") -> None:
    """Mark a parent run ``FINISHED`` or ``FAILED``."""
    from mlflow import MlflowClient

    uri = configure(params, project)
    client = MlflowClient(tracking_uri=uri)
    client.set_terminated(run_id, status=status)


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
def stage_run(
    stage: str,
    params: Params,
    project: Path,
    tags: dict[str, str] | None = None,
    system_metrics: bool = False,
) -> Iterator[Any]:
    """A child MLflow run for one stage (the active run inside the block), tagged with its lineage.

    Inputs of the stage (:data:`pipeline.project.layout.STAGE_IO`) are hashed at the start, its outputs when
    the block ends without an error. The data among its inputs (the prepared training set, the benchmark)
    become the run's dataset inputs, their DVC md5 the digest. The stage's params section is logged as params
    ``<stage>.<key>``. ``system_metrics`` (the long stages: train, index) samples CPU, memory, disk, network
    and GPU use into ``system/*`` metrics every ``tracking.system_metrics_interval`` seconds, when
    ``tracking.system_metrics`` is on.
    """
    import mlflow

    from pipeline.ops import run_inputs

    project = Path(project)
    configure(params, project)
    sample_system = system_metrics and params.tracking.system_metrics
    if sample_system:
        mlflow.set_system_metrics_sampling_interval(params.tracking.system_metrics_interval)
    parent = parent_run_id(params, project)
    inputs, outputs = STAGE_IO.get(stage, ((), ()))
    section = getattr(params, stage, None)
    all_tags = {
        "stage": stage,
        "mlflow.parentRunId": parent,
        **lineage_tags(params, project, inputs),
        **({f"{stage}_params_hash": params_hash(section)} if section is not None else {}),
        **(tags or {}),
    }
    run = mlflow.start_run(run_name=stage, tags=all_tags, log_system_metrics=sample_system)
    try:
        run_inputs.log_datasets(run_inputs.lineage_datasets(params, project, all_tags))
        if section is not None and hasattr(section, "model_dump"):
            flat = flatten(section.model_dump(mode="json"))
            mlflow.log_params({f"{stage}.{key}": _param_value(value) for key, value in flat.items()})
        yield run
        paths = Layout(params, project).artifacts()
        produced = {f"{LINEAGE_PREFIX}{name}.md5": dvc_md5(paths[name], project) for name in outputs}
        mlflow.set_tags({key: value for key, value in produced.items() if value})
    except BaseException:
        try:
            mlflow.end_run(status="FAILED")
        except Exception as error:  # the server may be what failed: keep the stage's own error on top
            logger.warning("mlflow: could not mark the %s run FAILED (%s)", stage, error)
        raise
    mlflow.end_run(status="FINISHED")


def _param_value(value: Any) -> Any:
    text = value if isinstance(value, str) else json.dumps(value)
    return text[:6000]


def log_numbers(values: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """Log every number in ``values`` to the active run as ``<prefix><key>``; return what was logged.

    Keys are made metric-safe (``ndcg@10`` becomes ``ndcg_at_10``); strings, booleans and NaN are left out,
    since MLflow would refuse or mis-plot them.
    """
    import math

    import mlflow

    numbers = {
        f"{prefix}{key}".replace("@", "_at_"): float(value)
        for key, value in values.items()
        if isinstance(value, int | float) and not isinstance(value, bool) and not math.isnan(value)
    }
    if numbers:
        mlflow.log_metrics(numbers)
    return numbers
