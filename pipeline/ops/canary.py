"""The champion canary: ask a new champion a fixed set of benchmark queries before anyone else does.

``dags/colbert_canary.py`` runs :func:`run_canary` each time the pipeline DAG emits the ``colbert_champion``
asset. It loads the champion from the MLflow registry (and the champion it replaced, from the version's
``promotion.champion_before`` tag), answers the same queries with both, one at a time, and records to MLflow
(experiment ``colbert-canary``) each one's latency percentiles, recall@10 and how many queries it answered.
A champion that cannot answer every query (an error, or no hits) raises :class:`CanaryFailed` with the
numbers.

The queries are the first ``n`` (by id) of the workspace's prepared benchmark, the one ``register`` compares
champions on, so the same queries are asked of every champion.

Nothing heavy is imported at module level: the DAG file that imports this stays cheap to parse.

Example (the doctests provide ``workspace``, a project whose prepared benchmark asks about the three documents
of a registered champion, ``canary-example`` v1, in a throwaway SQLite store; tests/deploy runs the canary
DAG against the platform's MLflow server):
    >>> import mlflow
    >>> result = run_canary(workspace, mlflow.get_tracking_uri(), "canary-example", n_queries=2)
    >>> result["version"], result["previous"], result["new"]["answered"], result["new"]["recall_at_10"]
    ('1', None, 2, 1.0)
    >>> run = mlflow.search_runs(experiment_names=[EXPERIMENT], output_format="list")[0]
    >>> run.data.tags["canary.passed"], run.data.metrics["new_answered"]
    ('true', 2.0)
"""

from __future__ import annotations

import logging
import math
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.ops import tracking

logger = logging.getLogger(__name__)

EXPERIMENT = "colbert-canary"
DEFAULT_QUERIES = 8
K = 10


class CanaryFailed(RuntimeError):
    """The new champion could not answer the canary queries; the message carries the numbers."""


@dataclass(frozen=True)
class CanarySet:
    """Fixed canary queries and their relevant documents."""

    benchmark: str
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]


def canary_set(workspace: Path, n: int = DEFAULT_QUERIES, params_file: str = "params.yaml") -> CanarySet:
    """The first ``n`` queries (by id) with relevant documents of the workspace's prepared benchmark."""
    from pipeline.data.benchmark import load_prepared_benchmarks
    from pipeline.project.errors import InputError
    from pipeline.project.layout import Layout
    from pipeline.project.params_file import load_params

    folder = Layout(load_params(workspace / params_file), workspace).benchmark
    try:
        name, data = next(iter(load_prepared_benchmarks(folder).items()))
    except InputError as error:
        raise CanaryFailed(f"{error}: no canary queries to take") from None
    chosen = [qid for qid in sorted(data.queries) if data.qrels.get(qid)][:n]
    if not chosen:
        raise CanaryFailed(f"{folder}/{name}: no query has a relevant document")
    return CanarySet(
        benchmark=name,
        queries={qid: data.queries[qid] for qid in chosen},
        qrels={qid: data.qrels[qid] for qid in chosen},
    )


def percentile(values: list[float], q: float) -> float:
    """The ``q``-th percentile (0-100) by linear interpolation; NaN for no values.

    Example:
        >>> percentile([1.0, 2.0, 3.0, 4.0], 50)
        2.5
    """
    if not values:
        return math.nan
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100.0
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def probe(model: Any, canary: CanarySet, k: int = K) -> dict[str, Any]:
    """Ask ``model`` (a loaded pyfunc) each canary query alone; latency percentiles, recall@k, failures."""
    import pandas as pd

    latencies, recalls, errors = [], [], []
    for qid, text in canary.queries.items():
        started = time.perf_counter()
        try:
            answer = model.predict(pd.DataFrame({"query": [text]}), params={"k": k})
            ids = [str(i) for i in answer["ids"].iloc[0]]
        except Exception as error:  # the canary reports every failure, it does not stop at the first
            errors.append(f"{qid}: {type(error).__name__}: {error}")
            continue
        latencies.append((time.perf_counter() - started) * 1000.0)
        if not ids:
            errors.append(f"{qid}: no hits")
            continue
        relevant = {doc for doc, grade in canary.qrels[qid].items() if grade > 0}
        recalls.append(len(relevant & set(ids[:k])) / len(relevant) if relevant else 0.0)
    return {
        "queries": len(canary.queries),
        "answered": len(recalls),
        "p50_ms": percentile(latencies, 50),
        "p95_ms": percentile(latencies, 95),
        f"recall_at_{k}": sum(recalls) / len(recalls) if recalls else 0.0,
        "errors": errors,
    }


def _probe_registered(model_uri: str, canary: CanarySet) -> dict[str, Any]:
    """Load a registered version into a scratch folder, probe it, and remove the folder.

    Without ``dst_path`` MLflow downloads the model (weights and index, ~90 MB for the sample) to a new
    temporary folder that nothing removes: one per canary run.
    """
    import mlflow.pyfunc

    with tempfile.TemporaryDirectory(prefix="colbert-canary-") as scratch:
        return probe(mlflow.pyfunc.load_model(model_uri, dst_path=scratch), canary)


def run_canary(
    workspace: Path,
    tracking_uri: str,
    model_name: str | None = None,
    n_queries: int = DEFAULT_QUERIES,
    params_file: str = "params.yaml",
) -> dict[str, Any]:
    """Probe the champion and the champion before it; log both to MLflow; raise if the new one fails."""
    import mlflow
    from mlflow import MlflowClient

    from pipeline.project.params_file import load_params

    name = model_name or load_params(workspace / params_file).register.model_name
    client = MlflowClient(tracking_uri=tracking_uri)
    champion = client.get_model_version_by_alias(name, "champion")
    previous = (champion.tags or {}).get("promotion.champion_before", "none")
    canary = canary_set(workspace, n_queries, params_file)
    logger.info("canary: %s v%s (previous: %s) on %d queries", name, champion.version, previous, n_queries)
    try:
        new = _probe_registered(f"models:/{name}/{champion.version}", canary)
    except Exception as error:  # a champion that cannot even load
        new = {
            "queries": len(canary.queries),
            "answered": 0,
            "errors": [f"load: {type(error).__name__}: {error}"],
        }
    old = None
    if previous not in ("none", "", str(champion.version)):
        try:
            old = _probe_registered(f"models:/{name}/{previous}", canary)
        except Exception as error:  # the old champion's trouble is recorded, not fatal
            old = {"queries": len(canary.queries), "answered": 0, "errors": [f"load: {error}"]}
    result = {
        "model": name,
        "version": str(champion.version),
        "previous_version": None if old is None else previous,
        "benchmark": canary.benchmark,
        "new": new,
        "previous": old,
    }
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_experiment(EXPERIMENT)
    with mlflow.start_run(run_name=f"canary {name} v{champion.version}"):
        mlflow.set_tags(
            {
                "model_name": name,
                "champion_version": str(champion.version),
                "previous_version": result["previous_version"] or "none",
                "benchmark": canary.benchmark,
                "canary.passed": str(not new["errors"] and new["answered"] == new["queries"]).lower(),
            }
        )
        for prefix, numbers in (("new", new), ("previous", old)):
            tracking.log_numbers(numbers or {}, prefix=f"{prefix}_")
        mlflow.log_dict(result, "canary.json")
    if new["errors"] or new["answered"] < new["queries"]:
        raise CanaryFailed(
            f"champion {name} v{champion.version} answered {new['answered']}/{new['queries']} "
            "canary queries; "
            f"errors: {new['errors'][:5]}; numbers: {result}"
        )
    return result
