"""Drive a running stack as an operator does: a DAG run through Airflow's REST API, the served champion.

Used by ``make test-docker`` (docker/test-docker.sh) against the compose stack, and by hand against the local
platform (docs/deployment.md)::

    python tests/deploy/drive_stack.py run --api http://127.0.0.1:8080 --password ... \
        --mlflow http://127.0.0.1:5000 --model colbert-pipeline
    python tests/deploy/drive_stack.py serve --serve http://127.0.0.1:5001

``run`` unpauses ``colbert_pipeline``, triggers it with a few training steps and prints each task's queue,
worker and duration; it exits non-zero (with the task states) unless the run succeeds and the registry's
``champion`` alias exists. ``serve`` posts one query to ``/invocations`` and prints the answer. Every wait is
bounded.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shlex
import shutil
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository: tests.workspace

from deploy_platform import AirflowApi, http_json, wait_until

from tests.workspace import DAG_TINY

DAG_ID = "colbert_pipeline"
TINY = DAG_TINY
QUERY = "a question about entity 3"


def _api(url: str, password: str, timeout: float) -> AirflowApi:
    def ready() -> AirflowApi | None:
        status, _ = http_json("GET", f"{url}/api/v2/monitor/health", timeout=5)
        return AirflowApi(url, "admin", password) if status == 200 else None

    def attempt() -> AirflowApi | None:
        try:
            return ready()
        except OSError:
            return None

    return wait_until(f"Airflow API server at {url}", attempt, timeout, interval=3.0)


def task_table(tis: dict[str, dict]) -> list[dict]:
    """``task, state, queue, worker, seconds`` of each task instance that started, in start order."""
    rows = []
    for task, ti in sorted(tis.items(), key=lambda item: item[1]["start_date"] or "9"):
        if not ti["start_date"] or not ti["end_date"]:
            continue
        seconds = dt.datetime.fromisoformat(ti["end_date"]) - dt.datetime.fromisoformat(ti["start_date"])
        rows.append(
            {
                "task": task,
                "state": ti["state"],
                "queue": ti["queue"],
                "worker": ti["hostname"],
                "seconds": round(seconds.total_seconds(), 1),
            }
        )
    return rows


def run(args: argparse.Namespace) -> int:
    api = _api(args.api, args.password, args.timeout)

    def parsed() -> bool:
        return api.get(f"/dags/{DAG_ID}", expect=(200, 404)).get("dag_id") == DAG_ID

    wait_until(f"DAG {DAG_ID} parsed", parsed, args.timeout, interval=3.0)
    api.request("PATCH", f"/dags/{DAG_ID}", {"is_paused": False})
    overrides = {**TINY, "register.model_name": args.model}
    started = time.monotonic()
    run_id = api.trigger(DAG_ID, {"overrides": overrides})
    print(f"triggered {DAG_ID} {run_id}", flush=True)
    state = api.wait_run(DAG_ID, run_id, args.timeout)
    rows = task_table(api.task_instances(DAG_ID, run_id))
    print(f"run {run_id}: {state} in {time.monotonic() - started:.0f} s (trigger to end, polled)")
    print(f"{'task':<18} {'state':<9} {'queue':<8} {'worker':<22} seconds")
    for row in rows:
        print(f"{row['task']:<18} {row['state']:<9} {row['queue']:<8} {row['worker']:<22} {row['seconds']}")
    if state != "success":
        return 1
    name = urllib.parse.quote(args.model)
    status, body = http_json(
        "GET", f"{args.mlflow}/api/2.0/mlflow/registered-models/alias?name={name}&alias=champion"
    )
    if status != 200:
        print(f"no champion alias on {args.model}: HTTP {status} {body}", file=sys.stderr)
        return 1
    print(f"champion: {args.model} v{body['model_version']['version']}")
    return 0


def serve(args: argparse.Namespace) -> int:
    wait_until(
        f"model server at {args.serve}",
        lambda: _ping(args.serve),
        args.timeout,
        interval=3.0,
    )
    request = {"dataframe_split": {"columns": ["query"], "data": [[QUERY]]}, "params": {"k": 3}}
    status, body = http_json("POST", f"{args.serve}/invocations", request, timeout=120)
    ok = status == 200 and len(body["predictions"][0]["ids"]) == 3
    if shutil.which("curl"):  # the same question as an operator asks it (docs/deployment.md)
        command = [
            "curl",
            "-s",
            "-H",
            "Content-Type: application/json",
            "-d",
            json.dumps(request),
            f"{args.serve}/invocations",
        ]
        print("$ " + " ".join(shlex.quote(part) for part in command), flush=True)
        answer = subprocess.run(command, capture_output=True, text=True, timeout=120)
        print(answer.stdout[:4000])
        ok = ok and answer.returncode == 0 and json.loads(answer.stdout)["predictions"][0]["ids"]
    else:
        print(json.dumps(body, indent=1)[:4000])
    return 0 if ok else 1


def _ping(url: str) -> bool:
    try:
        return http_json("GET", f"{url}/ping", timeout=5)[0] == 200
    except OSError:
        return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("phase", choices=["run", "serve"])
    parser.add_argument("--api", default="http://127.0.0.1:8080")
    parser.add_argument("--password", default="admin")
    parser.add_argument("--mlflow", default="http://127.0.0.1:5000")
    parser.add_argument("--model", default="colbert-pipeline")
    parser.add_argument("--serve", default="http://127.0.0.1:5001")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds for each wait")
    args = parser.parse_args(argv)
    return run(args) if args.phase == "run" else serve(args)


if __name__ == "__main__":
    raise SystemExit(main())
