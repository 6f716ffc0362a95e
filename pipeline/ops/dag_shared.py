"""What the DAG files in ``dags/`` share: the champion and corpus assets and how a task reads its settings.

It lives in the package, not in ``dags/``, so it imports the same way in a scheduler, a worker, a test's
``DagBag`` and the docker image, whatever the dags folder is. Only the DAG files import it (it needs Airflow).
"""

from __future__ import annotations

import os

from pipeline.project.errors import require

require(__name__, "airflow", "airflow")

from airflow.sdk import Asset, Variable  # noqa: E402

#: Emitted by the pipeline DAG's ``promote`` task; the canary DAG is scheduled on it.
CHAMPION = Asset(name="colbert_champion", uri="x-colbert-pipeline://registry/champion")
#: The corpus in ``index.data``: whoever delivers a new corpus emits it; the corpus DAG is scheduled on it.
CORPUS = Asset(name="colbert_corpus", uri="x-colbert-pipeline://corpus")


def lookup(name: str) -> str | None:
    """A setting at run time: an Airflow Variable wins over the worker's environment."""
    return Variable.get(name, default=None) or os.environ.get(name)
