"""The deploy tier with no shared disk: Celery workers that share no folder, runs carried by three services.

``stateless_platform`` starts the deploy tier's platform (PostgreSQL, Redis, Postgres-backed ``mlflow
server``, Airflow 3 on Celery) in the DAG's stateless mode, plus moto's S3 server and a ``git daemon``:
MLflow's artifacts and the DVC remote are on the S3 server, the git remote is served over ``git://``, and
each worker (``worker-default``, ``worker-gpu``) has its own HOME, TMPDIR, AIRFLOW_HOME and clone. The
tests drive it only through Airflow's REST API, MLflow's client and the git remote, in order:

1. the running workers' folders (read from their processes) are disjoint, and only the tracking server
   holds the S3 endpoint and keys for MLflow's artifacts;
2. two runs with different Params (a training step more in one), triggered together, run at once and both
   succeed, ``train`` on the gpu worker and every other stage on the default worker, each run on its own
   ``refs/colbert-runs/<run id>`` holding its own Params, its data in the S3 bucket, a champion registered
   (its artifacts in the bucket too), each stage task started from its own worker's clone;
3. ``colbert-pipeline reproduce`` of the champion in a fresh clone of the git remote, with the tracking
   server and the S3 DVC remote set as a team member sets them (and, first, without the tracking URI: the
   error names it), pulls the data, model and index with the hashes its run ref's ``dvc.lock`` records;
4. a worker SIGKILLed (with everything it started, as a host that dies) while it runs a stage: with retries
   at 1 the task's second try runs on the other worker and completes, and the run's outputs (DVC hashes and
   the metrics' deterministic values) equal those of the uninterrupted run with the same Params. For this the
   gpu worker is restarted serving ``gpu,default`` first (a GPU host that also takes CPU stages, as
   docs/stateless.md's recipe runs it): while the default worker alone serves ``default``, tests 1-2 know
   where each stage runs; a retry can only move to a worker that serves its queue;
5. afterwards the workers' clones are as they were, and every service that was not killed is up.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import yaml

from pipeline.ops import dvc_remote, git_remote, lineage, services, stateless_dag, versioning
from pipeline.project.layout import STAGES
from tests import remotes
from tests.deploy.deploy_platform import AirflowApi, require_binaries, running_platform, wait_until
from tests.deploy.stateless_platform import (
    BUCKET,
    DVC_REMOTE_URL,
    FOLDER_SETTINGS,
    MLFLOW_ARTIFACTS,
    WORKER_NAMES,
    StatelessPlatform,
    git_ref,
)
from tests.workspace import DAG_TINY, GIT_IDENTITY

pytestmark = pytest.mark.deploy

BIN = Path(sys.executable).parent

DAG_ID = "colbert_pipeline"
MODEL_NAME = "colbert-stateless"
#: The deploy tier's tiny run, and one with a training step more (other Params, another model).
PARAMS = {
    "one": {**DAG_TINY, "register.model_name": MODEL_NAME},
    "other": {
        **DAG_TINY,
        "register.model_name": MODEL_NAME,
        "train.max_steps": DAG_TINY["train.max_steps"] + 1,
    },
}
RUN_TIMEOUT = 1500.0  # bounded, with room for a loaded 2-core machine
#: The stage a worker is killed in: a CPU stage after train, so whichever worker dies, the other one (both
#: serve ``default`` by then) can run it and every stage after it.
KILLED_STAGE = "evaluate"
ENV = {
    "COLBERT_PIPELINE_SCHEDULE": "none",
    "COLBERT_PIPELINE_RETRIES": "1",  # a task lost with its worker is tried once more
    "COLBERT_PIPELINE_RETRY_DELAY_S": "5",  # (default 60 s)
    "AIRFLOW__API__WORKERS": "1",
    "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
    # A task whose worker vanished is failed (then retried) after 30 s without a heartbeat (default 300 s).
    "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "30",
    "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "5",
}
#: Values in a metrics file that differ between identical runs by design (timings, the tuner's choice by
#: measured time, the task workspace's paths, the registry's decision), excluded by name.
NOT_REPRODUCIBLE = re.compile(
    r"seconds|qps|_ms$|^corpus$|^model$|probe_source|^settings$|^description$|threads"
)
#: Outputs that record a run's circumstances rather than its results: compared field by field instead
#: (index.json), or not at all (registry.json: the promotion decision depends on the registry it met).
BY_FIELD, NOT_COMPARED = "metrics/index.json", "metrics/registry.json"
#: The DVC-tracked outputs a version's lineage names (prepared data, model weights, index).
LINEAGE_OUTPUTS = ("data/prepared/train", "data/prepared/eval", "models/colbert", "indexes/sample")


@pytest.fixture(scope="module")
def stack() -> Iterator[dict[str, Any]]:
    require_binaries()
    with running_platform(extra_env=ENV, kind=StatelessPlatform) as platform:
        assert isinstance(platform, StatelessPlatform)
        api = AirflowApi(platform.api_url, services.ADMIN_USER, platform.admin_password)
        api.wait_parsed([DAG_ID], platform)
        api.request("PATCH", f"/dags/{DAG_ID}", {"is_paused": False})
        clones = {worker: _clone_state(platform.folders(worker)["clone"]) for worker in WORKER_NAMES}
        yield {"platform": platform, "api": api, "runs": {}, "clones": clones}


def _git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True).stdout.strip()


def _clone_state(clone: Path) -> dict[str, str]:
    return {
        "head": _git(clone, "rev-parse", "HEAD"),
        "status": _git(clone, "status", "--porcelain", "--ignored"),
    }


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def _stage_tis(api: AirflowApi, run_id: str) -> dict[str, dict[str, Any]]:
    return {task: ti for task, ti in api.task_instances(DAG_ID, run_id).items() if task in STAGES}


def _task_log(platform: StatelessPlatform, worker: str, run_id: str, task: str, attempt: int = 1) -> str:
    """A task's log as its worker wrote it, in the worker's own AIRFLOW_HOME (no log server is shared)."""
    logs = platform.folders(worker)["AIRFLOW_HOME"] / "logs" / f"dag_id={DAG_ID}" / f"run_id={run_id}"
    path = logs / f"task_id={task}" / f"attempt={attempt}.log"
    return path.read_text(errors="replace") if path.exists() else f"(no {path})"


def _ref_files(platform: StatelessPlatform, scratch: Path, run_id: str) -> dict[str, Any]:
    """What the git remote holds for a run: its ref's commits (run id trailer, subject), Params, dvc.lock."""
    if not (scratch / ".git").exists():
        remotes.clone_from(platform.git_url, scratch)
    ref = stateless_dag.run_ref(run_id)
    tip = git_ref(scratch, platform.git_url, ref)
    main = _git(scratch, "rev-parse", "origin/HEAD")
    trailer = "%(trailers:key=Colbert-Run-Id,valueonly)"
    log = _git(scratch, "log", f"--format={trailer}%x1f%s%x1e", f"{main}..{tip}")
    commits = [entry.split("\x1f", 1) for entry in log.split("\x1e") if entry.strip()]
    show = {name: _git(scratch, "show", f"{tip}:{name}") for name in ("params.yaml", "dvc.lock")}
    metrics = {}
    for name in ("metrics/baseline.json", "metrics/eval.json", BY_FIELD, "metrics/comparison.json"):
        metrics[name] = json.loads(_git(scratch, "show", f"{tip}:{name}"))
    return {
        "ref": ref,
        "commits": [(trailer.strip(), subject) for trailer, subject in commits],
        "params": yaml.safe_load(show["params.yaml"]),
        "lock": yaml.safe_load(show["dvc.lock"])["stages"],
        "metrics": metrics,
    }


def _mlflow(platform: StatelessPlatform) -> Any:
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=platform.mlflow_url)


def _outputs(lock: dict[str, Any]) -> dict[str, str]:
    return {out["path"]: out["md5"] for stage in lock.values() for out in stage.get("outs") or []}


def _deterministic(value: Any) -> Any:
    """A metrics file's values without those :data:`NOT_REPRODUCIBLE` names."""
    if isinstance(value, dict):
        return {k: _deterministic(v) for k, v in value.items() if not NOT_REPRODUCIBLE.search(k)}
    return value


def test_each_worker_runs_in_folders_of_its_own(stack: dict[str, Any]) -> None:
    platform: StatelessPlatform = stack["platform"]
    seen = {worker: platform.worker_settings(worker) for worker in WORKER_NAMES}
    for worker, settings in seen.items():
        assert set(FOLDER_SETTINGS) < set(settings), settings
        own = platform.folders(worker)
        for name, path in settings.items():
            assert any(_inside(path, str(folder)) for folder in own.values()), (worker, name, path)
            # Nothing of the control plane's: its AIRFLOW_HOME, the checkout the git daemon serves.
            for shared in (platform.root / "airflow-home", platform.workspace, platform.served):
                assert not _inside(path, str(shared)), (worker, name, path)
    for (first, a), (second, b) in itertools.combinations(seen.items(), 2):
        for x, y in itertools.product(a.values(), b.values()):
            assert not (_inside(x, y) or _inside(y, x)), f"{first} {x} and {second} {y} share a folder"
    for worker in WORKER_NAMES:
        clone = platform.folders(worker)["clone"]
        assert _git(clone, "remote", "get-url", "origin") == platform.git_url  # git://, over the network
        remote = dvc_remote.read_remote(clone)  # the clone's default DVC remote, as a task reads it
        assert (remote.url, remote.options["endpointurl"]) == (DVC_REMOTE_URL, platform.s3_url), remote
    # MLflow's artifacts: the tracking server alone knows the S3 endpoint and keys; a worker has neither, so
    # it can only reach artifacts through the server's HTTP API (proxied).
    mlflow = next(p for p in platform.services["mlflow"].group_members() if "server" in p.cmdline()[1:3])
    command = mlflow.cmdline()
    assert command[command.index("--artifacts-destination") + 1] == MLFLOW_ARTIFACTS
    assert "--serve-artifacts" in command
    assert mlflow.environ()["MLFLOW_S3_ENDPOINT_URL"] == platform.s3_url
    for worker in WORKER_NAMES:
        # (Celery's processes set their title over their environment block: /proc shows them none.)
        environs = [env for proc in platform.services[worker].group_members() if (env := proc.environ())]
        assert environs, worker
        for environ in environs:
            assert not {"MLFLOW_S3_ENDPOINT_URL", "AWS_ACCESS_KEY_ID"} & set(environ), worker
            assert environ["COLBERT_PIPELINE_STATELESS"] == "1"


def test_two_runs_with_other_params_run_at_once_each_on_its_own_ref(
    stack: dict[str, Any], tmp_path: Path
) -> None:
    api, platform = stack["api"], stack["platform"]
    assert api.get(f"/dags/{DAG_ID}")["max_active_runs"] > 1
    runs = {key: api.trigger(DAG_ID, {"overrides": params}) for key, params in PARAMS.items()}
    states = {key: api.wait_run(DAG_ID, run_id, RUN_TIMEOUT, platform) for key, run_id in runs.items()}
    tis = {key: api.task_instances(DAG_ID, run_id) for key, run_id in runs.items()}
    assert states == {"one": "success", "other": "success"}, {
        key: {task: ti["state"] for task, ti in found.items()} for key, found in tis.items()
    }
    stack["runs"].update(runs)
    for key, found in tis.items():
        for stage in STAGES:
            ti = found[stage]
            # The gpu worker serves only `gpu` here: train there, every other stage on the default worker.
            worker = "worker-gpu" if stage == "train" else "worker-default"
            assert (ti["state"], ti["hostname"], ti["try_number"]) == ("success", worker, 1), (key, stage)
            assert ti["queue"] == ("gpu" if stage == "train" else "default"), (key, stage)
        # Each stage task ran `colbert-pipeline task` from its own worker's clone.
        for stage in ("prepare", "train"):
            worker = found[stage]["hostname"]
            clone = platform.folders(worker)["clone"]
            assert f"colbert-pipeline task {stage} --run" in _task_log(platform, worker, runs[key], stage)
            assert f" in {clone}" in _task_log(platform, worker, runs[key], stage)
    # At once: a stage of one run ran while a stage of the other did (no lock serialised them).
    spans = {
        key: [(ti["start_date"], ti["end_date"]) for ti in _stage_tis(api, run_id).values()]
        for key, run_id in runs.items()
    }
    assert any(a0 < b1 and b0 < a1 for (a0, a1), (b0, b1) in itertools.product(spans["one"], spans["other"]))

    # Each run on its own ref on the git remote: its own Params, one commit per stage with its run id.
    listed = _git(tmp_path, "ls-remote", platform.git_url, "refs/colbert-runs/*")
    refs = {key: _ref_files(platform, tmp_path / "scratch", run_id) for key, run_id in runs.items()}
    stack["refs"] = refs
    for key, ref in refs.items():
        assert ref["ref"] in listed
        assert ref["params"]["train"]["max_steps"] == PARAMS[key]["train.max_steps"]
        run_id = stateless_dag.task_run_id(runs[key])
        assert sorted(subject for _, subject in ref["commits"]) == sorted(
            f"colbert-pipeline task {stage} of run {run_id}" for stage in STAGES
        )
        assert {trailer for trailer, _ in ref["commits"]} == {run_id}
        assert list(ref["lock"]) == list(STAGES)
    one, other = (_outputs(refs[key]["lock"]) for key in ("one", "other"))
    assert one["data/prepared/train"] == other["data/prepared/train"]  # the same prepare Params
    assert one["models/colbert"] != other["models/colbert"]  # a training step more

    # The data of both runs in the DVC remote, MLflow's artifacts beside it, both on the S3 server.
    keys = remotes.bucket_keys(platform.s3_url, BUCKET)
    for model in (one["models/colbert"], other["models/colbert"]):
        assert f"dvc/files/md5/{model[:2]}/{model[2:]}" in keys, model
    assert any(key.startswith("mlartifacts/") and key.endswith("/MLmodel") for key in keys), keys[:20]

    # Both registered, one at a time (the one-slot register pool), both decisions recorded; a champion.
    (a0, a1), (b0, b1) = (
        (found["register"]["start_date"], found["register"]["end_date"]) for found in tis.values()
    )
    assert {found["register"]["pool"] for found in tis.values()} == {stateless_dag.REGISTER_POOL}
    assert a1 <= b0 or b1 <= a0, "the two register tasks overlapped"
    client = _mlflow(platform)
    versions = client.search_model_versions(f"name = '{MODEL_NAME}'")
    assert len(versions) == 2 and all(v.tags.get("promotion.decision") for v in versions)
    champion = client.get_model_version_by_alias(MODEL_NAME, "champion")
    assert champion.tags["colbert.run_ref"] in {ref["ref"] for ref in refs.values()}
    assert champion.tags["lineage.model.md5"] in {one["models/colbert"], other["models/colbert"]}
    stack["champion"] = str(champion.version)


def _colbert(clone: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    command = [str(BIN / "colbert-pipeline"), *args]
    return subprocess.run(
        command, cwd=clone, env=env, capture_output=True, text=True, timeout=600, check=False
    )


def test_reproduce_the_champion_in_a_fresh_clone_of_the_git_remote(
    stack: dict[str, Any], tmp_path: Path
) -> None:
    """A team member's clone of the git remote, on the run's tracking server and DVC remote through the usual
    settings, pulls the champion's data, model and index with the hashes its run ref's dvc.lock records."""
    platform: StatelessPlatform = stack["platform"]
    assert "champion" in stack, "needs the uninterrupted runs"
    (tmp_path / "home").mkdir()
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in (git_remote.GIT_REMOTE_ENV, dvc_remote.DVC_REMOTE_ENV, "MLFLOW_TRACKING_URI")
    }
    env |= {"HOME": str(tmp_path / "home"), **GIT_IDENTITY}
    env |= {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"}
    clone = remotes.clone_from(platform.git_url, tmp_path / "clone", env)
    assert not _git(clone, "for-each-ref", "refs/colbert-runs")  # a plain clone: no run ref in it yet
    into, reference = tmp_path / "champion", f"{MODEL_NAME}@champion"

    # No tracking URI set: the clone's default store does not exist; the command names the setting.
    missing = _colbert(clone, env, "reproduce", reference, "--into", str(into))
    assert missing.returncode == 2, missing.stdout[-2000:] + missing.stderr[-2000:]
    assert "set MLFLOW_TRACKING_URI" in missing.stderr, missing.stderr[-2000:]
    assert not into.exists() and not _git(clone, "status", "--porcelain", "--ignored")

    # The settings a team member sets (docs/stateless.md): the tracking server, the S3 DVC remote.
    env["MLFLOW_TRACKING_URI"] = platform.mlflow_url
    dvc = versioning.dvc_executable()
    subprocess.run(
        [dvc, "remote", "add", "--local", "-d", "runs", DVC_REMOTE_URL], cwd=clone, env=env, check=True
    )
    endpoint = ["remote", "modify", "--local", "runs", "endpointurl", platform.s3_url]
    subprocess.run([dvc, *endpoint], cwd=clone, env=env, check=True)
    done = _colbert(clone, env, "reproduce", reference, "--into", str(into))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads(done.stdout[: done.stdout.rindex("}") + 1])
    tags = _mlflow(platform).get_model_version_by_alias(MODEL_NAME, "champion").tags
    assert (report["model"], report["version"]) == (MODEL_NAME, stack["champion"])
    assert (report["ref"], report["commit"], report["remote"]) == (
        tags["colbert.run_ref"],
        tags["colbert.run_commit"],
        DVC_REMOTE_URL,
    )
    assert f"{MODEL_NAME} v{stack['champion']} from {report['ref']}" in done.stdout
    assert _git(into, "rev-parse", "HEAD") == report["commit"]  # the ref was fetched from the git remote

    # What was pulled has the hashes the run ref's dvc.lock (read from the git remote) records.
    (recorded,) = [ref for ref in stack["refs"].values() if ref["ref"] == report["ref"]]
    expected = _outputs(recorded["lock"])
    assert {c["artifact"] for c in report["checks"]} == {"data_train", "data_eval", "model", "index"}
    assert {c["path"] for c in report["checks"]} == set(LINEAGE_OUTPUTS)
    for path in LINEAGE_OUTPUTS:
        assert lineage.compute_md5(into / path, into) == expected[path], path
    assert (into / "models" / "colbert" / "model.safetensors").is_file()
    assert not _git(clone, "status", "--porcelain")  # the clone itself is left as it was


def _stage_running(platform: StatelessPlatform, stage: str, seconds: float) -> psutil.Process | None:
    """The stage's own command (``colbert-pipeline <stage>`` under ``dvc repro``), once it has run
    ``seconds``."""
    for proc in platform.stage_processes():
        try:
            command = proc.cmdline()
            running = time.time() - proc.create_time()
        except psutil.Error:
            continue
        is_stage = len(command) >= 2 and Path(command[-2]).name == "colbert-pipeline" and command[-1] == stage
        if is_stage and running >= seconds:
            return proc
    return None


def _kill_worker(platform: StatelessPlatform, worker: str) -> None:
    """SIGKILL the worker and everything it started (task processes live in sessions of their own), at once:
    a worker host that dies."""
    members = platform.services[worker].group_members()
    tree = {proc.pid: proc for member in members for proc in [member, *member.children(recursive=True)]}
    for proc in tree.values():
        try:
            proc.kill()
        except psutil.Error:
            continue
    platform.services[worker].kill_group()  # (marks it stopped: no longer expected to be up)


def test_a_worker_killed_mid_stage_its_task_retried_on_the_other_worker_same_outputs(
    stack: dict[str, Any], tmp_path: Path
) -> None:
    api, platform = stack["api"], stack["platform"]
    assert "refs" in stack, "needs the uninterrupted runs"
    platform.services["worker-gpu"].stop()
    platform.start_worker("gpu", serves="gpu,default")
    run_id = api.trigger(DAG_ID, {"overrides": PARAMS["one"]})
    stack["runs"]["killed"] = run_id
    stage = wait_until(
        f"{KILLED_STAGE} running", lambda: _stage_running(platform, KILLED_STAGE, 2.0), RUN_TIMEOUT, 0.5
    )
    victim = platform.worker_of(stage.pid)
    assert victim in WORKER_NAMES, stage.cmdline()
    _kill_worker(platform, victim)
    killed_at = time.time()
    state = api.wait_run(DAG_ID, run_id, RUN_TIMEOUT, platform)
    tis = api.task_instances(DAG_ID, run_id)
    assert state == "success", {
        task: (ti["state"], ti["try_number"], ti["hostname"]) for task, ti in tis.items()
    }
    (survivor,) = set(WORKER_NAMES) - {victim}
    tries = [
        (ti["try_number"], ti["state"], ti["hostname"]) for ti in api.tries(DAG_ID, run_id, KILLED_STAGE)
    ]
    assert [(number, host) for number, _, host in tries] == [(1, victim), (2, survivor)], tries
    assert tries[-1][1] == "success" and tries[0][1] in ("failed", "up_for_retry"), tries
    took = time.time() - killed_at
    print(f"\n{KILLED_STAGE}: {victim} SIGKILLed; retried on {survivor}; the run ended {took:.0f} s later")

    # The run's outputs are those of the uninterrupted run with the same Params, and its ref records each
    # stage once (the lost try pushed nothing).
    killed, whole = _ref_files(platform, tmp_path / "scratch", run_id), stack["refs"]["one"]
    assert sorted(subject.split(" of run")[0] for _, subject in killed["commits"]) == sorted(
        f"colbert-pipeline task {stage}" for stage in STAGES
    )
    outputs = {
        path: md5 for path, md5 in _outputs(killed["lock"]).items() if path not in (BY_FIELD, NOT_COMPARED)
    }
    expected = {
        path: md5 for path, md5 in _outputs(whole["lock"]).items() if path not in (BY_FIELD, NOT_COMPARED)
    }
    assert {"data/prepared/train", "models/colbert", "indexes/sample", "metrics/eval.json"} <= set(outputs)
    assert outputs == expected
    assert _deterministic(killed["metrics"]) == _deterministic(whole["metrics"])
    assert killed["metrics"][BY_FIELD]["documents"] == whole["metrics"][BY_FIELD]["documents"] > 0
    # The first run's model again: not better than the champion, which stays where it was.
    champion = _mlflow(platform).get_model_version_by_alias(MODEL_NAME, "champion")
    assert str(champion.version) == stack["champion"]


def test_the_clones_are_as_they_were_and_the_services_up(stack: dict[str, Any]) -> None:
    platform: StatelessPlatform = stack["platform"]
    for worker in WORKER_NAMES:
        assert _clone_state(platform.folders(worker)["clone"]) == stack["clones"][worker], worker
    for name, process in platform.services.items():
        if not process.stopped:
            assert process.process is not None and process.process.poll() is None, name
