"""The deploy tier's bad cases: a service that dies or never answers fails the fixture naming the service and
quoting the end of its log; ports are taken from the OS, never one already in use."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from tests.deploy.deploy_platform import Process, ServiceFailed, free_port


def _service(tmp_path: Path, name: str, script: str) -> Process:
    return Process(name, ["sh", "-c", script], dict(os.environ), tmp_path / f"{name}.log", tmp_path).start()


def _failure(service: Process, timeout: float) -> str:
    """What waiting for a service that never becomes ready raises; the service is stopped either way."""
    try:
        with pytest.raises(ServiceFailed) as failure:
            service.wait_ready(lambda: False, timeout=timeout)
    finally:
        service.stop()
    return str(failure.value)


def test_a_service_that_exits_is_named_with_the_end_of_its_log(tmp_path: Path) -> None:
    service = _service(tmp_path, "fake-postgres", "echo 'FATAL: could not bind IPv4 address'; exit 3")
    message = _failure(service, timeout=60)
    assert message.startswith("fake-postgres exited with status 3")
    assert str(service.log) in message and "FATAL: could not bind IPv4 address" in message


def test_a_service_that_never_answers_fails_within_its_bound(tmp_path: Path) -> None:
    script = "echo 'waiting for a database that never comes'; exec sleep 600"
    service = _service(tmp_path, "fake-mlflow", script)
    message = _failure(service, timeout=2)
    assert message.startswith("fake-mlflow did not come up within 2 s")
    assert "waiting for a database that never comes" in message
    assert service.process is not None and service.process.poll() is not None  # stopped, not left behind


def test_ports_in_use_are_never_handed_out() -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        taken = held.getsockname()[1]
        ports = {free_port() for _ in range(50)}
        assert taken not in ports
        for port in list(ports)[:5]:
            with socket.socket() as probe:
                probe.bind(("127.0.0.1", port))  # each one was free to bind
