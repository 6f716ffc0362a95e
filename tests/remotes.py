"""The two shared remotes of stateless tasks, as real servers for tests: ``git daemon`` and an S3 API.

Both bind 127.0.0.1 on a free port, run in their own process group and are stopped (SIGTERM, then SIGKILL)
when their ``with`` block ends, whatever happens in it: no server outlives its test. The S3 API is moto's
standalone server (``moto[server]``), which DVC reaches through its ``s3`` remote with ``endpointurl``.

Used as (servers take seconds to start, so this is not a doctest; tests/ops/test_stateless.py runs it)::

    with git_daemon(tmp_path / "served") as base, s3_server(tmp_path) as endpoint:
        make_bucket(endpoint, "runs")
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from tests.mlflow_server import HOST, _stop, free_port

BIN = Path(sys.executable).parent
#: moto accepts any credentials; DVC and boto3 still want some.
S3_CREDENTIALS = {"access_key_id": "test", "secret_access_key": "test", "region": "us-east-1"}


def _wait_for_port(port: int, process: subprocess.Popen[bytes], log: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}: {log.read_text(errors='replace')}")
        with contextlib.suppress(OSError), socket.create_connection((HOST, port), timeout=1):
            return
        time.sleep(0.1)
    output = log.read_text(errors="replace")
    raise RuntimeError(f"nothing listens on {HOST}:{port} after {timeout:.0f}s: {output}")


@contextlib.contextmanager
def _serving(command: list[str], port: int, log: Path, cwd: Path) -> Iterator[None]:
    with open(log, "ab") as output:
        process = subprocess.Popen(
            command,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stopping it ends its children too
        )
    try:
        _wait_for_port(port, process, log)
        yield
    finally:
        _stop(process)


def git_daemon_command(base: Path, port: int) -> list[str]:
    """``git daemon`` serving every repository under ``base`` on ``port`` of 127.0.0.1, fetch and push."""
    return [
        "git",
        "daemon",
        f"--base-path={base}",
        "--export-all",
        "--enable=receive-pack",  # pushes too: run refs go back to it
        f"--listen={HOST}",
        f"--port={port}",
        "--reuseaddr",
        str(base),
    ]


def s3_server_command(port: int) -> list[str]:
    """moto's standalone S3 API (in memory) on ``port`` of 127.0.0.1."""
    return [str(BIN / "moto_server"), "-H", HOST, "-p", str(port)]


def wait_s3_answers(endpoint: str, timeout: float = 30.0) -> None:
    """Block until the S3 API at ``endpoint`` answers HTTP (its port opens a moment before it does)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(endpoint, timeout=2).close()
            return
        except urllib.error.HTTPError:  # an answer, if not a 200
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


@contextlib.contextmanager
def git_daemon(base: Path) -> Iterator[str]:
    """Serve every repository under ``base`` over ``git://`` (fetch and push); yield ``git://host:port``."""
    base.mkdir(parents=True, exist_ok=True)
    port = free_port()
    with _serving(git_daemon_command(base, port), port, base.parent / f"git-daemon-{port}.log", base):
        yield f"git://{HOST}:{port}"


@contextlib.contextmanager
def s3_server(workdir: Path) -> Iterator[str]:
    """moto's S3 API (in memory); yield its endpoint URL."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    with _serving(s3_server_command(port), port, workdir / f"moto-{port}.log", workdir):
        endpoint = f"http://{HOST}:{port}"
        wait_s3_answers(endpoint)
        yield endpoint


def s3_client(endpoint: str):
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=S3_CREDENTIALS["access_key_id"],
        aws_secret_access_key=S3_CREDENTIALS["secret_access_key"],
        region_name=S3_CREDENTIALS["region"],
    )


def make_bucket(endpoint: str, bucket: str) -> None:
    s3_client(endpoint).create_bucket(Bucket=bucket)


def bucket_keys(endpoint: str, bucket: str, prefix: str = "") -> list[str]:
    listed = s3_client(endpoint).list_objects_v2(Bucket=bucket, Prefix=prefix)
    return sorted(item["Key"] for item in listed.get("Contents", []))


def add_s3_remote(clone: Path, name: str, url: str, endpoint: str) -> None:
    """``url`` (s3://bucket/prefix) as the clone's default DVC remote, endpoint and keys in config.local.

    Written as ``dvc remote add --local -d`` + ``dvc remote modify --local`` would (five DVC processes).
    """
    lines = ["[core]", f"    remote = {name}", f"['remote \"{name}\"']", f"    url = {url}"]
    lines += [f"    endpointurl = {endpoint}"] + [f"    {k} = {v}" for k, v in S3_CREDENTIALS.items()]
    (clone / ".dvc" / "config.local").write_text("\n".join(lines) + "\n")


def serve_repository(source: Path, base: Path, name: str = "project.git") -> Path:
    """A bare copy of ``source`` under ``base`` (what the git daemon serves), its HEAD on ``main``."""
    bare = base / name
    subprocess.run(["git", "clone", "-q", "--bare", str(source), str(bare)], check=True)
    branch = subprocess.run(
        ["git", "rev-parse", "--abbrev-ref", "HEAD"], cwd=source, capture_output=True, text=True, check=True
    ).stdout.strip()
    subprocess.run(["git", "symbolic-ref", "HEAD", f"refs/heads/{branch}"], cwd=bare, check=True)
    return bare


def clone_from(url: str, dest: Path, env: dict[str, str] | None = None) -> Path:
    """``git clone url dest`` (its ``origin`` is the served repository)."""
    subprocess.run(["git", "clone", "-q", url, str(dest)], check=True, env=env or dict(os.environ))
    return dest
