"""A tiny searchable project for the registry, serving and batch-inference tests: a saved (untrained) ColBERT,
a 30-document corpus about ten animals, a Nano benchmark over it and the PLAID index built with the model,
with the texts beside it as the index stage writes them.

Built in a few seconds on a CPU; each document's own text finds it first, so answers are checkable.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

TOPICS = [
    ("otter", "river", "shellfish"),
    ("camel", "desert", "thorny shrubs"),
    ("penguin", "antarctic ice", "krill"),
    ("koala", "eucalyptus forest", "gum leaves"),
    ("panda", "bamboo mountains", "bamboo shoots"),
    ("falcon", "cliffs", "pigeons"),
    ("salmon", "cold ocean", "small fish"),
    ("beaver", "wooded streams", "tree bark"),
    ("gecko", "tropical walls", "moths"),
    ("walrus", "arctic shores", "clams"),
]


def corpus() -> dict[str, str]:
    """Three documents per animal: where it lives (``d<i>a``), what it eats (``b``), its young (``c``)."""
    documents = {}
    for i, (animal, place, food) in enumerate(TOPICS):
        documents[f"d{i}a"] = f"The {animal} lives in the {place}."
        documents[f"d{i}b"] = f"The {animal} mostly eats {food}."
        documents[f"d{i}c"] = f"Young {animal}s stay with their mother for a season."
    return documents


def build_search_project(project: Path, saved_colbert: Path) -> Path:
    """``project`` with ``models/colbert``, ``data/prepared/eval`` and ``indexes/sample`` (+ its texts)."""
    from pipeline import indexes, models
    from pipeline.data.beir import BeirData
    from pipeline.data.nano import build_nano_benchmark
    from pipeline.indexes.storage import TEXTS_FILE
    from pipeline.ops import serving

    project.mkdir(parents=True, exist_ok=True)
    shutil.copytree(saved_colbert, project / "models" / "colbert")
    documents = corpus()
    queries = {f"q{i}": f"What does the {animal} eat?" for i, (animal, _, _) in enumerate(TOPICS)}
    qrels = {f"q{i}": {f"d{i}b": 1} for i in range(len(TOPICS))}
    build_nano_benchmark(
        BeirData(corpus=documents, queries=queries, qrels=qrels, name="animals"),
        project / "data" / "prepared" / "eval",
        n_queries=len(queries),
        n_documents=len(documents),
        seed=0,
    )
    model = models.ColBERT(model_name_or_path=str(project / "models" / "colbert"), device="cpu")
    index = indexes.PLAID(index_folder=project / "indexes", index_name="sample", override=True, device="cpu")
    index.add_documents(
        documents_ids=list(documents),
        documents_embeddings=model.encode(list(documents.values()), is_query=False),
    )
    # as the index stage does: the texts beside the index, for the served model to answer with
    serving.write_documents(documents, index.path / TEXTS_FILE)
    return project


def register_version(project: Path, name: str, **log_args: Any) -> str:
    """Log the project's model + index as a served model and register it under ``name``; its version.

    MLflow's current tracking URI and experiment are used (the caller's store; a SQLite one is fine).
    """
    import mlflow

    from pipeline.ops import serving

    with mlflow.start_run():
        info = serving.log_search_model(
            project / "models" / "colbert", project / "indexes" / "sample", **{"k": 4, **log_args}
        )
    return str(mlflow.register_model(info.model_uri, name).version)


@contextlib.contextmanager
def sqlite_registry(
    folder: Path, saved_colbert: Path, name: str, versions: int = 1
) -> Iterator[SimpleNamespace]:
    """A SQLite registry in ``folder`` holding ``versions`` versions of the search project under ``name``.

    MLflow's current tracking URI is the registry's while the context is open, then put back. The versions
    share one model and index (a test tells them apart by the ``model_version`` answers name).
    """
    import mlflow
    from mlflow import MlflowClient

    project = build_search_project(folder / "project", saved_colbert)
    uri = f"sqlite:///{folder / 'registry.db'}"
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        client = MlflowClient(uri)
        client.create_experiment("search-project", artifact_location=str(folder / "artifacts"))
        mlflow.set_experiment("search-project")
        numbers = [register_version(project, name) for _ in range(versions)]
        yield SimpleNamespace(uri=uri, project=project, versions=numbers, client=client, name=name)
    finally:
        mlflow.set_tracking_uri(previous)
