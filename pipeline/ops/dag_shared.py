"""What the DAG files in ``dags/`` share: the champion and corpus assets, how a task reads its settings, and
which errors fail a task for good instead of retrying it.

It lives in the package, not in ``dags/``, so it imports the same way in a scheduler, a worker, a test's
``DagBag`` and the docker image, whatever the dags folder is. Only the DAG files import it (it needs Airflow).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from pipeline.ops.orchestration import OrchestrationError, Settings, StageFailed
from pipeline.project.errors import require

require(__name__, "airflow", "airflow")

from airflow.sdk import Asset, Variable  # noqa: E402
from airflow.sdk.exceptions import AirflowFailException  # noqa: E402

#: Emitted by the pipeline DAG's ``promote`` task; the canary DAG is scheduled on it.
CHAMPION = Asset(name="colbert_champion", uri="x-colbert-pipeline://registry/champion")
#: The corpus in ``index.data``: whoever delivers a new corpus emits it; the corpus DAG is scheduled on it.
CORPUS = Asset(name="colbert_corpus", uri="x-colbert-pipeline://corpus")


def lookup(name: str) -> str | None:
    """A setting at run time: an Airflow Variable wins over the worker's environment."""
    return Variable.get(name, default=None) or os.environ.get(name)


@contextlib.contextmanager
def fail_without_retry(*permanent: type[Exception]) -> Iterator[None]:
    """Errors a retry cannot fix fail the task at once: ``permanent`` ones, and a stage's bad input.

    A stage that failed for another reason (a crash, a lost worker) is raised as it is, so Airflow retries it.
    """
    try:
        yield
    except StageFailed as failure:
        if failure.permanent:
            raise AirflowFailException(str(failure)) from None
        raise
    except permanent as error:
        raise AirflowFailException(str(error)) from None


def settings() -> Settings:
    """The run's settings (:func:`lookup`); a missing or bad one fails the task without a retry."""
    with fail_without_retry(OrchestrationError):
        return Settings.resolve(lookup)
