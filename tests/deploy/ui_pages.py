"""The two UI pages the docs show, opened in headless Chromium on the deploy tier's own servers.

* MLflow's page of the champion's LoggedModel (what the version's "Source model" links to): the evaluation and
  index metrics logged against it, each with its dataset, and the registered version it belongs to
  (docs/versions.md, "On MLflow's model page").
* Airflow's grid of a ``colbert_pipeline`` run: every task's state in that run and the runs before it
  (docs/orchestration.md).

Each function waits until the page's rendered text shows what the servers' APIs say it should (the model's
metric and dataset names and its version; the DAG's task ids and the run's id), so a login form, an error page
or a page still loading fails with what it showed instead of becoming a screenshot.
"""

from __future__ import annotations

import urllib.parse

from tests.deploy.browser import Browser

#: The cookie Airflow 3's API server reads the UI's JWT from (``COOKIE_NAME_JWT_TOKEN`` in
#: ``airflow.api_fastapi.auth.managers.base_auth_manager``): its login page sets it; here the token comes
#: from ``/auth/token``.
AIRFLOW_TOKEN_COOKIE = "_token"
#: MLflow's assistant panel opens by itself on a first visit, over a quarter of the page: closed first.
MLFLOW_ASSISTANT = "MLflow Assistant"


def mlflow_model_page(browser: Browser, mlflow_url: str, model_name: str, alias: str = "champion") -> bytes:
    """A screenshot of the LoggedModel page of ``model_name@alias`` once it shows its metrics and datasets."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=mlflow_url)
    version = client.get_model_version_by_alias(model_name, alias)
    # The version's source names its LoggedModel (models:/m-...); the registry's REST answer has no model_id.
    model = client.get_logged_model(version.model_id or version.source.removeprefix("models:/"))
    metrics = sorted({metric.key for metric in model.metrics})
    datasets = sorted({metric.dataset_name for metric in model.metrics if metric.dataset_name})
    assert any(key.startswith("eval_") for key in metrics), f"no evaluation metric on {model.model_id}"
    assert any(key.startswith("index_") for key in metrics), f"no index metric on {model.model_id}"
    url = f"{mlflow_url}/#/experiments/{model.experiment_id}/models/{model.model_id}"
    browser.open(url, [model_name, f"v{version.version}", *metrics, *datasets])
    browser.close('button[aria-label="Close"]', within=MLFLOW_ASSISTANT)
    return browser.screenshot()


def airflow_grid(
    browser: Browser, api_url: str, token: str, dag_id: str, run_id: str, tasks: list[str]
) -> bytes:
    """A screenshot of Airflow's grid on run ``run_id`` of ``dag_id``, once it shows the run and ``tasks``.

    ``token`` is a JWT from the API server's ``/auth/token`` (what the UI's login form obtains), set as the
    cookie the UI sends; the tier's auth stays as it is.
    """
    browser.set_cookie(api_url, AIRFLOW_TOKEN_COOKIE, token)
    url = f"{api_url}/dags/{dag_id}/runs/{urllib.parse.quote(run_id, safe='')}"
    browser.open(url, [dag_id, run_id, *tasks])
    return browser.screenshot()
