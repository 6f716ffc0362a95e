"""Airflow's own alerting for the pipeline DAG: SMTP notifiers on a run's failure and success, and a deadline.

- **Notifiers**: the SMTP provider's ``SmtpNotifier`` (a dependency of Airflow itself) as the DAG's
  ``on_failure_callback`` and ``on_success_callback``: one e-mail per DAG run that fails or succeeds, sent
  through the Airflow connection ``COLBERT_PIPELINE_SMTP_CONN_ID`` (default ``smtp_default``: host, port,
  ``from_email``, TLS in its extras) to ``COLBERT_PIPELINE_NOTIFY_TO``. Without recipients there are none.
- **Deadline**: a ``DeadlineAlert`` on the DAG (Airflow 3.1+), its reference the run's queued time, its
  interval ``COLBERT_PIPELINE_DEADLINE`` (e.g. ``30h``: the stages' timeouts add up to more than a day, train
  alone may take 24 h). A run not finished by then is a missed deadline: the scheduler hands the alert's
  callback to the triggerer, which e-mails the recipients through the same connection (or, with none, logs a
  warning there). Airflow's UI lists missed deadlines either way. Off by default (``none``): with Airflow
  3.3.2 clearing the tasks of a run that holds a queued-time deadline answers HTTP 500 (apache/airflow#70368:
  the clear reads the alert's interval as a number, where 3.3 stores JSON), and clearing failed tasks is how
  a run is recovered (the deploy tier's broker-crash test does it).

These are parse-time settings, read from the environment like the schedule (parsing never touches the
metadata database). Only the DAG files import this module (it needs Airflow).

Example:
    >>> settings = NotifySettings.from_environ({NOTIFY_TO_ENV: "ml@example.org, ops@example.org"})
    >>> settings.recipients, settings.deadline
    (['ml@example.org', 'ops@example.org'], None)
    >>> NotifySettings.from_environ({DEADLINE_ENV: "30h"}).deadline
    datetime.timedelta(days=1, seconds=21600)
    >>> parse_duration("90s"), parse_duration("none")
    (datetime.timedelta(seconds=90), None)
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

logger = logging.getLogger(__name__)

NOTIFY_TO_ENV = "COLBERT_PIPELINE_NOTIFY_TO"
NOTIFY_FROM_ENV = "COLBERT_PIPELINE_NOTIFY_FROM"
SMTP_CONN_ENV = "COLBERT_PIPELINE_SMTP_CONN_ID"
DEADLINE_ENV = "COLBERT_PIPELINE_DEADLINE"
#: Off: Airflow 3.3.2 cannot clear a run's tasks while the run holds a queued-time deadline (module docs).
DEFAULT_DEADLINE = "none"
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}

#: Subjects and bodies, rendered by the notifier with the callback's context. A DAG callback's context has
#: ``dag`` and ``run_id``; a deadline callback's has ``dag_run`` (the run as the REST API shows it: its id is
#: ``dag_run_id``) and ``deadline``.
RUN_SUBJECT = "[colbert-pipeline] {{ dag.dag_id }} {{ run_id }} {outcome}"
RUN_BODY = (
    "<p>DAG run <b>{{ run_id }}</b> of <b>{{ dag.dag_id }}</b> {outcome}.</p>"
    "<p>The promotion decision and each stage's MLflow run are linked from the run's tasks; "
    "metrics/registry.json in the workspace holds the gate's criteria.</p>"
)
DEADLINE_SUBJECT = "[colbert-pipeline] {{ dag_run.dag_id }} {{ dag_run.dag_run_id }} missed its deadline"
DEADLINE_BODY = (
    "<p>DAG run <b>{{ dag_run.dag_run_id }}</b> of <b>{{ dag_run.dag_id }}</b> was not finished by its "
    "deadline ({{ deadline.deadline_time }}; queued at {{ dag_run.queued_at }}). "
    "State: {{ dag_run.state }}.</p>"
)


def parse_duration(text: str) -> timedelta | None:
    """``30h``, ``45m``, ``90s``, ``2d`` or plain seconds; ``none``/``off``/empty is None.

    Example:
        >>> parse_duration("1.5h")
        datetime.timedelta(seconds=5400)
        >>> parse_duration("soon")
        Traceback (most recent call last):
        ValueError: COLBERT_PIPELINE_DEADLINE: 'soon' is not a duration like 30h, 45m, 90s, 2d or none
    """
    value = text.strip().lower()
    if value in ("", "none", "off", "0"):
        return None
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([smhd]?)", value)
    if not match:
        raise ValueError(f"{DEADLINE_ENV}: {text!r} is not a duration like 30h, 45m, 90s, 2d or none")
    return timedelta(**{_UNITS[match.group(2) or "s"]: float(match.group(1))})


@dataclasses.dataclass(frozen=True)
class NotifySettings:
    """Who gets the pipeline's e-mails, through which Airflow connection, and the run's deadline."""

    recipients: list[str]
    sender: str | None
    smtp_conn_id: str
    deadline: timedelta | None

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> NotifySettings:
        recipients = [a.strip() for a in environ.get(NOTIFY_TO_ENV, "").split(",") if a.strip()]
        return cls(
            recipients=recipients,
            sender=environ.get(NOTIFY_FROM_ENV) or None,
            smtp_conn_id=environ.get(SMTP_CONN_ENV) or "smtp_default",
            deadline=parse_duration(environ.get(DEADLINE_ENV, DEFAULT_DEADLINE)),
        )

    def email_kwargs(self) -> dict[str, Any]:
        # No sender here: the connection's from_email then applies (the notifier reads it).
        return {
            "to": self.recipients,
            "smtp_conn_id": self.smtp_conn_id,
            **({"from_email": self.sender} if self.sender else {}),
        }


def _run_notifier_class() -> type:
    from airflow.providers.smtp.notifications.smtp import SmtpNotifier

    class RunSmtpNotifier(SmtpNotifier):
        """The provider's SMTP notifier, also under ``dag.test()``.

        There a DAG callback's context holds the serialized DAG, which cannot make a template environment
        (``'SerializedDAG' object has no attribute 'get_template_env'``: the e-mail is never sent); the
        scheduler's DAG processor passes the parsed DAG. Without one, the notifier's own sandboxed
        environment renders the same templates.
        """

        def get_template_env(self, dag: Any = None) -> Any:
            if dag is not None and not hasattr(dag, "get_template_env"):
                dag = None
            return super().get_template_env(dag=dag)

    return RunSmtpNotifier


def run_notifiers(settings: NotifySettings, outcome: str) -> list[Any]:
    """``[SmtpNotifier]`` for a DAG-level callback (``outcome``: failed, succeeded); [] without recipients."""
    if not settings.recipients:
        return []
    notifier = _run_notifier_class()
    return [
        notifier(
            subject=RUN_SUBJECT.replace("{outcome}", outcome),
            html_content=RUN_BODY.replace("{outcome}", outcome),
            **settings.email_kwargs(),
        )
    ]


async def log_missed_deadline(context: Mapping[str, Any] | None = None, **kwargs: Any) -> str:
    """The deadline's callback when nobody is to be e-mailed: a warning in the triggerer's log."""
    run = (context or {}).get("dag_run") or {}
    message = f"colbert-pipeline: DAG run {run.get('dag_run_id')} of {run.get('dag_id')} missed its deadline"
    logger.warning("%s (%s)", message, (context or {}).get("deadline"))
    return message


def deadline_alert(settings: NotifySettings) -> Any | None:
    """The DAG's ``DeadlineAlert``: the run's queued time plus ``settings.deadline``; None when off.

    The callback runs on the triggerer (an ``AsyncCallback``): the SMTP notifier, awaited there, or
    :func:`log_missed_deadline` without recipients.
    """
    if settings.deadline is None:
        return None
    from airflow.sdk.definitions.callback import AsyncCallback
    from airflow.sdk.definitions.deadline import DeadlineAlert, DeadlineReference

    if settings.recipients:
        from airflow.providers.smtp.notifications.smtp import SmtpNotifier

        kwargs = {"subject": DEADLINE_SUBJECT, "html_content": DEADLINE_BODY, **settings.email_kwargs()}
        callback = AsyncCallback(SmtpNotifier, kwargs=kwargs)
    else:
        callback = AsyncCallback(log_missed_deadline)
    return DeadlineAlert(
        reference=DeadlineReference.DAGRUN_QUEUED_AT,
        interval=settings.deadline,
        callback=callback,
        name="colbert-pipeline run deadline",
    )
