"""Airflow's own alerting on the pipeline DAG: e-mails on a run's failure and success, and the run's deadline.

A real SMTP server on 127.0.0.1 (a minimal one, in a thread of this process) receives what the SMTP
provider's notifier sends through an Airflow connection, as an operator's mail relay would. One driver process
(Airflow reads its settings once per process) with a migrated ``AIRFLOW_HOME``:

1. ``dag.test()`` of the pipeline DAG with a bad override: ``validate_params`` fails, the run fails, and the
   DAG's ``on_failure_callback`` (``SmtpNotifier``) e-mails the recipients;
2. the DAG's ``on_success_callback`` notifier, called with a run's context, e-mails them too;
3. a run created queued, as the scheduler creates one, gets a deadline one second after its queued time
   (``COLBERT_PIPELINE_DEADLINE=1s``); once past it, the scheduler's missed-deadline step
   (``Deadline.handle_miss``, the same query and call as ``SchedulerJobRunner``'s loop) queues the alert's
   callback on a trigger, and the trigger runs (as the triggerer runs it): the e-mail arrives. Only the two
   service loops are stood in for; the deadline's creation, its miss and its callback are Airflow's own.
"""

from __future__ import annotations

import email
import json
import os
import socketserver
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from pipeline.ops import notify

REPO_ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
RECIPIENT = "ml-team@example.org"

DRIVER = r"""
import asyncio, importlib, json, os, time
from datetime import datetime, timezone

from sqlalchemy import select

from airflow.dag_processing.dagbag import DagBag
from airflow.models import Deadline
from airflow.models.trigger import Trigger
from airflow.serialization.serialized_objects import DagSerialization
from airflow.utils.session import create_session
from airflow.utils.state import DagRunState
from airflow.utils.types import DagRunTriggeredByType, DagRunType

bag = DagBag(dag_folder=os.environ["AIRFLOW__CORE__DAGS_FOLDER"])
assert not bag.import_errors, bag.import_errors
dag = bag.dags["colbert_pipeline"]
out = {}

# 1. A run that fails at its first task: the DAG's failure notifier sends its e-mail.
run = dag.test(run_conf={"overrides": {"train.epochs": "two"}})
out["failed_run"] = {"state": str(getattr(run.state, "value", run.state)), "run_id": run.run_id}

# 2. The success notifier, called as the scheduler calls a DAG's callback on a successful run.
for notifier in dag.on_success_callback:
    notifier({"dag": dag, "run_id": "scheduled__ok", "reason": "success"})

# 3. A queued run (as the scheduler creates one) gets a deadline: queued_at + COLBERT_PIPELINE_DEADLINE.
scheduler_dag = DagSerialization.deserialize_dag(DagSerialization.serialize_dag(dag))
with create_session() as session:
    queued = scheduler_dag.create_dagrun(
        run_id="manual__deadline", run_after=datetime.now(timezone.utc), run_type=DagRunType.MANUAL,
        triggered_by=DagRunTriggeredByType.TEST, state=DagRunState.QUEUED, session=session,
    )
    session.flush()
    deadline = session.scalars(select(Deadline).where(Deadline.dagrun_id == queued.id)).one()
    out["deadline_after_queued_s"] = (deadline.deadline_time - queued.queued_at).total_seconds()
    wait = (deadline.deadline_time - datetime.now(timezone.utc)).total_seconds()
time.sleep(max(0.0, wait) + 0.5)  # the run overruns its deadline: nothing ran it

# The scheduler loop's step for missed deadlines (scheduler_job_runner.py), then the triggerer's work.
with create_session() as session:
    missed = session.scalars(
        select(Deadline).where(Deadline.deadline_time < datetime.now(timezone.utc)).where(~Deadline.missed)
    ).all()
    out["missed"] = len(missed)
    for row in missed:
        row.handle_miss(session)
    session.flush()
    triggers = [row.callback.trigger for row in missed]
    specs = [(t.classpath, dict(t.kwargs)) for t in triggers]

async def fire(classpath, kwargs):
    module, name = classpath.rsplit(".", 1)
    trigger = getattr(importlib.import_module(module), name)(**kwargs)
    return [event.payload for event in [e async for e in trigger.run()]]

out["trigger_events"] = [asyncio.run(fire(c, k)) for c, k in specs]
print("ALERTS-RESULT " + json.dumps(out, default=str), flush=True)
"""


class _SmtpHandler(socketserver.StreamRequestHandler):
    """Just enough SMTP to take a message: greeting, EHLO/HELO, MAIL, RCPT, DATA, QUIT."""

    def handle(self) -> None:
        self.wfile.write(b"220 sink.local ESMTP\r\n")
        envelope: dict[str, Any] = {"to": []}
        while line := self.rfile.readline():
            command = line.strip().upper()
            if command.startswith(b"EHLO"):
                self.wfile.write(b"250-sink.local\r\n250 8BITMIME\r\n")
            elif command.startswith(b"MAIL FROM"):
                envelope = {"from": line.strip()[10:].decode(), "to": []}
                self.wfile.write(b"250 OK\r\n")
            elif command.startswith(b"RCPT TO"):
                envelope["to"].append(line.strip()[8:].decode().strip("<>"))
                self.wfile.write(b"250 OK\r\n")
            elif command == b"DATA":
                self.wfile.write(b"354 end with <CRLF>.<CRLF>\r\n")
                self.server.received.append({**envelope, "message": self._data()})  # type: ignore[attr-defined]
                self.wfile.write(b"250 OK queued\r\n")
            elif command == b"QUIT":
                self.wfile.write(b"221 bye\r\n")
                return
            else:  # HELO, RSET, NOOP ...
                self.wfile.write(b"250 OK\r\n")

    def _data(self) -> email.message.Message:
        lines = []
        while (line := self.rfile.readline()) not in (b".\r\n", b".\n", b""):
            lines.append(line[1:] if line.startswith(b"..") else line)
        return email.message_from_bytes(b"".join(lines))


@pytest.fixture(scope="module")
def smtp_sink() -> Iterator[socketserver.ThreadingTCPServer]:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _SmtpHandler)
    server.daemon_threads = True
    server.received = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def alerts(module_tmp_path: Path, smtp_sink: socketserver.ThreadingTCPServer) -> dict[str, Any]:
    home, workspace = module_tmp_path / "airflow-home", module_tmp_path / "workspace"
    home.mkdir()
    workspace.mkdir()
    (workspace / "params.yaml").write_text((REPO_ROOT / "params.yaml").read_text())
    connection = {
        "conn_type": "smtp",
        "host": "127.0.0.1",
        "port": smtp_sink.server_address[1],
        "extra": {
            "disable_ssl": True,
            "disable_tls": True,
            "from_email": "airflow@sink.local",
            "retry_limit": 1,
        },
    }
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO_ROOT / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW_CONN_SMTP_DEFAULT": json.dumps(connection),
        "COLBERT_PIPELINE_WORKSPACE": str(workspace),
        "COLBERT_PIPELINE_RUNNER": "cli",
        "COLBERT_PIPELINE_RETRIES": "0",
        notify.NOTIFY_TO_ENV: RECIPIENT,
        notify.DEADLINE_ENV: "1s",
        "MLFLOW_TRACKING_URI": f"sqlite:///{module_tmp_path / 'mlflow.db'}",
    }
    migrate = subprocess.run(
        [str(BIN / "airflow"), "db", "migrate"], env=env, capture_output=True, text=True, timeout=600
    )
    assert migrate.returncode == 0, migrate.stdout[-3000:] + migrate.stderr[-3000:]
    process = subprocess.run(
        [sys.executable, "-c", DRIVER],
        env=env,
        cwd=module_tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    output = process.stdout + process.stderr
    (module_tmp_path / "driver.log").write_text(output)  # kept when a test fails, for the reader
    marker = [line for line in process.stdout.splitlines() if line.startswith("ALERTS-RESULT ")]
    assert process.returncode == 0 and marker, output[-6000:]
    return {"result": json.loads(marker[-1].removeprefix("ALERTS-RESULT ")), "output": output}


def _mails(sink: socketserver.ThreadingTCPServer, words: str) -> list[dict[str, Any]]:
    return [mail for mail in sink.received if words in str(mail["message"]["Subject"])]  # type: ignore[attr-defined]


def test_a_failed_run_emails_the_recipients(alerts: dict[str, Any], smtp_sink) -> None:
    failed = alerts["result"]["failed_run"]
    assert failed["state"] == "failed"
    mails = _mails(smtp_sink, f"{failed['run_id']} failed")
    assert len(mails) == 1, [str(m["message"]["Subject"]) for m in smtp_sink.received]
    mail = mails[0]
    assert mail["to"] == [RECIPIENT] and mail["message"]["To"] == RECIPIENT
    assert str(mail["message"]["Subject"]) == f"[colbert-pipeline] colbert_pipeline {failed['run_id']} failed"
    assert "airflow@sink.local" in mail["from"]


def test_a_successful_run_emails_the_recipients(alerts: dict[str, Any], smtp_sink) -> None:
    mails = _mails(smtp_sink, "scheduled__ok succeeded")
    assert len(mails) == 1 and mails[0]["to"] == [RECIPIENT]


def test_a_run_past_its_deadline_raises_the_alert(alerts: dict[str, Any], smtp_sink) -> None:
    result = alerts["result"]
    assert result["deadline_after_queued_s"] == pytest.approx(1.0)  # queued_at + COLBERT_PIPELINE_DEADLINE
    assert result["missed"] == 1
    (events,) = result["trigger_events"]
    assert events[-1]["state"] == "success", events
    mails = _mails(smtp_sink, "manual__deadline missed its deadline")
    assert len(mails) == 1 and mails[0]["to"] == [RECIPIENT]
    body = mails[0]["message"].get_payload(decode=True) or b""
    if mails[0]["message"].is_multipart():
        body = b"".join(part.get_payload(decode=True) or b"" for part in mails[0]["message"].walk())
    assert b"was not finished by its deadline" in body


def test_the_dag_declares_its_alerts(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without recipients: no e-mail notifiers, and a deadline's callback logs on the triggerer. No deadline
    unless one is set (Airflow 3.3.2 cannot clear a run holding one: apache/airflow#70368)."""
    assert notify.run_notifiers(notify.NotifySettings.from_environ({}), "failed") == []
    assert notify.deadline_alert(notify.NotifySettings.from_environ({})) is None
    alert = notify.deadline_alert(notify.NotifySettings.from_environ({notify.DEADLINE_ENV: "30h"}))
    assert alert.interval == timedelta(hours=30)
    assert alert.callback.path == "pipeline.ops.notify.log_missed_deadline"
    assert notify.deadline_alert(notify.NotifySettings.from_environ({notify.DEADLINE_ENV: "none"})) is None
    with pytest.raises(ValueError, match="COLBERT_PIPELINE_DEADLINE: 'tomorrow'"):
        notify.NotifySettings.from_environ({notify.DEADLINE_ENV: "tomorrow"})
