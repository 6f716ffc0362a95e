"""The DAG's stateless mode (``COLBERT_PIPELINE_STATELESS=1``): its shape, the task command it runs, and two
stages of one run through the real ``colbert-pipeline task`` from two clones that share only the servers.

The DAG is imported under another module name with the parse-time settings set (as ``test_dag.py`` does);
the end-to-end test calls the stage tasks' own helper (``stateless_dag.run_stage``), not ``dag.test()``.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from pipeline.ops import orchestration, stateless_dag
from pipeline.project.config import ConfigError
from pipeline.project.layout import STAGES
from pipeline.project.params_file import parse_override
from tests.dag_module import dag_test_env, load_dag_module


@pytest.fixture(scope="module")
def airflow_home(module_tmp_path: Path) -> Path:
    """A throwaway AIRFLOW_HOME, set before Airflow is first imported in this process."""
    home = module_tmp_path / "airflow-home"
    home.mkdir()
    os.environ.setdefault("AIRFLOW_HOME", str(home))
    os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
    return home


@pytest.fixture()
def stateless_dag_module(monkeypatch: pytest.MonkeyPatch, airflow_home: Path) -> Any:
    return load_dag_module(
        monkeypatch,
        "colbert_pipeline_stateless_variant",
        COLBERT_PIPELINE_STATELESS="1",
        COLBERT_PIPELINE_MAX_ACTIVE_RUNS="3",
    )


def test_stateless_dag_has_no_dvc_pool_several_runs_and_one_register_at_a_time(
    stateless_dag_module: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    dag = stateless_dag_module.pipeline_dag
    monkeypatch.delenv("COLBERT_PIPELINE_STATELESS")
    monkeypatch.delenv("COLBERT_PIPELINE_MAX_ACTIVE_RUNS")
    default = load_dag_module(monkeypatch, "colbert_pipeline_default_variant").pipeline_dag
    # The same task ids and edges (only how they run changes), plus the index's encoding mapped over shards.
    assert set(dag.task_dict) == set(default.task_dict) | {"index_shards", "encode_shard"}
    for task_id, task in default.task_dict.items():
        added = {"encode_shard"} if task_id == "index" else set()
        assert dag.task_dict[task_id].upstream_task_ids == task.upstream_task_ids | added, task_id
    assert dag.max_active_runs == 3 and default.max_active_runs == 1
    assert all(task.pool != "colbert_dvc_workspace" for task in dag.tasks)
    assert dag.task_dict["register"].pool == "colbert_register"
    assert (dag.task_dict["train"].pool, dag.task_dict["train"].queue) == ("gpu", "gpu")
    for stage in set(STAGES) - {"train", "register"}:
        assert dag.task_dict[stage].pool == "default_pool", stage
    assert dag.task_dict["validate_params"].pool == "default_pool"
    assert default.task_dict["register"].pool == "colbert_dvc_workspace"  # the default mode is unchanged
    assert "colbert-pipeline task prepare" in dag.task_dict["prepare"].doc_md


def test_the_index_encoding_is_mapped_over_the_run_s_shards(stateless_dag_module: Any) -> None:
    dag = stateless_dag_module.pipeline_dag
    shards, index = dag.task_dict["encode_shard"], dag.task_dict["index"]
    assert shards.is_mapped  # Airflow's dynamic task mapping: one instance per shard, known at run time
    assert {"train", "index_shards"} <= shards.upstream_task_ids
    assert shards.queue == index.queue and (shards.pool or "default_pool") == index.pool
    assert "colbert-pipeline task index --shard I/N" in shards.doc_md
    # With no shards the mapped task is skipped: index must still run (and not after a failure).
    assert index.trigger_rule == "none_failed_min_one_success"
    assert stateless_dag.shard_labels(2) == ["0/2", "1/2"] and stateless_dag.shard_labels(1) == []
    assert stateless_dag.validated({}, 3)["index_shards"] == 3
    command = stateless_dag.task_command("index", "r", {"index.shards": 2}, shard="1/2")[1:]
    assert command == ["task", "index", "--shard", "1/2", "--run", "r", "--set", "index.shards=2"]


def test_register_pool_is_created_with_one_slot(monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.ops import services

    created: dict[str, int] = {}

    class FakePool:
        @staticmethod
        def create_or_update_pool(name: str, slots: int, description: str, include_deferred: bool) -> None:
            created[name] = slots

    import airflow.models.pool

    monkeypatch.setattr(airflow.models.pool, "Pool", FakePool)
    services.create_pools(2)
    assert created == {"colbert_dvc_workspace": 1, "gpu": 2, stateless_dag.REGISTER_POOL: 1}


def test_parse_time_settings_name_the_bad_one() -> None:
    assert stateless_dag.stateless_from_env({}) is False
    assert stateless_dag.stateless_from_env({"COLBERT_PIPELINE_STATELESS": "true"}) is True
    assert stateless_dag.max_active_runs_from_env(False, {"COLBERT_PIPELINE_MAX_ACTIVE_RUNS": "8"}) == 1
    assert stateless_dag.max_active_runs_from_env(True, {}) == stateless_dag.DEFAULT_MAX_ACTIVE_RUNS > 1
    with pytest.raises(orchestration.OrchestrationError, match="COLBERT_PIPELINE_STATELESS"):
        stateless_dag.stateless_from_env({"COLBERT_PIPELINE_STATELESS": "maybe"})
    with pytest.raises(orchestration.OrchestrationError, match="COLBERT_PIPELINE_MAX_ACTIVE_RUNS"):
        stateless_dag.max_active_runs_from_env(True, {"COLBERT_PIPELINE_MAX_ACTIVE_RUNS": "0"})


def test_task_command_names_the_sanitised_run_and_its_params() -> None:
    overrides = {"train.max_steps": 20, "prepare.source": "beir", "train.base_model": None, "x.list": [1, 2]}
    command = stateless_dag.task_command("train", "manual__2025-01-01T00:00:00+00:00", overrides)
    assert Path(command[0]).name == "colbert-pipeline"
    assert command[1:5] == ["task", "train", "--run", "manual__2025-01-01T00-00-00+00-00"]
    assert command[4] == stateless_dag.run_ref("manual__2025-01-01T00:00:00+00:00").rsplit("/", 1)[1]
    sets = command[5:]
    assert sets[::2] == ["--set"] * 4
    assert dict(parse_override(text) for text in sets[1::2]) == overrides  # round-trips through --set
    reordered = dict(reversed(list(overrides.items())))
    assert stateless_dag.task_command("train", "r", reordered)[5:] == sets  # every task: the same args
    assert stateless_dag.task_command("prepare", "r", {})[1:] == ["task", "prepare", "--run", "r"]


def test_validate_only_keeps_the_params_for_the_tasks() -> None:
    first = stateless_dag.validated({"b": 1, "a": "x"})
    assert first == {**first, "stateless": True, "overrides": {"b": 1, "a": "x"}, "changed": ["a", "b"]}
    assert first["sha256"] == stateless_dag.validated({"a": "x", "b": 1})["sha256"]


def test_a_task_that_cannot_start_fails_permanently_with_its_message(tmp_path: Path) -> None:
    # Not a clone: the task command's own input error comes back through the result file.
    with pytest.raises(orchestration.StageFailed) as failure:
        stateless_dag.run_stage("prepare", "r1", {}, tmp_path, None, f"sqlite:///{tmp_path}/mlruns.db")
    assert failure.value.permanent and failure.value.kind == "input"
    assert "not in a git clone" in failure.value.message


def test_an_unreachable_git_remote_fails_the_stage_task_for_a_retry(tmp_path: Path) -> None:
    """The task command's bounded retries end in exit 3 (infrastructure): the stage task raises a failure
    that Airflow retries, not the permanent kind."""
    from tests.mlflow_server import free_port
    from tests.workspace import GIT_IDENTITY

    clone = tmp_path / "clone"
    (clone / ".dvc").mkdir(parents=True)
    (clone / ".dvc" / "config").write_text(
        f"[core]\n    remote = r\n['remote \"r\"']\n    url = {tmp_path}/r\n"
    )
    for command in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "clone"]):
        subprocess.run(command, cwd=clone, check=True, env={**os.environ, **GIT_IDENTITY})
    closed = f"git://127.0.0.1:{free_port()}/project.git"  # nothing listens there
    settings = {"COLBERT_PIPELINE_GIT_REMOTE": closed, "COLBERT_PIPELINE_REMOTE_ATTEMPTS": "2"}
    settings["COLBERT_PIPELINE_REMOTE_BACKOFF_S"] = "0.1"
    with pytest.raises(orchestration.StageFailed) as failure:
        stateless_dag.run_stage(
            "prepare", "r1", {}, clone, None, f"sqlite:///{tmp_path}/mlruns.db", extra_env=settings
        )
    assert (failure.value.returncode, failure.value.kind, failure.value.permanent) == (
        3,
        "infrastructure",
        False,
    )
    assert closed in failure.value.message and "failed 2 times" in failure.value.message


@pytest.mark.slow
def test_two_stages_of_a_dag_run_through_the_task_command(
    monkeypatch: pytest.MonkeyPatch, module_tmp_path: Path
) -> None:
    from tests import remotes
    from tests.ops import test_stateless as base

    served = module_tmp_path / "served"
    with remotes.git_daemon(served) as git_url, remotes.s3_server(module_tmp_path / "s3") as endpoint:
        remotes.make_bucket(endpoint, base.BUCKET)
        toy = base.make_toy(module_tmp_path, {"git": git_url, "s3": endpoint, "served": str(served)})
        (a, env_a), (b, env_b) = toy["a"], toy["b"]
        run_id = "scheduled__2026-01-04T00:00:00+00:00"
        uri = f"sqlite:///{module_tmp_path}/mlruns.db"
        for clone, env, stage in ((a, env_a, "prepare"), (b, env_b, "baseline")):
            monkeypatch.setattr(os, "environ", {**env})
            result = stateless_dag.run_stage(stage, run_id, {"prepare.seed": 5}, clone, None, uri)
            assert result["ok"] and result["ref"] == stateless_dag.run_ref(run_id), result
        lock = base.remote_lock(a, stateless_dag.run_ref(run_id))
        assert list(lock["stages"]) == ["prepare", "baseline"]
        with pytest.raises(ConfigError, match=r"registry\.json"):  # the toy has no register stage
            stateless_dag.read_run_decision(a, run_id, lambda name: None)


# -- two runs that finish together: the register pool serialises them, the re-check settles the rest -------


class _Registry:
    """A fake MLflow client holding one model's aliases and version tags; ``on_set`` runs after each write
    (another run's register moving the alias in between)."""

    def __init__(self, values: dict[str, float], champion: str) -> None:
        from pipeline.ops import promotion

        self.tags = {
            version: {promotion.METRIC_VALUE_TAG: repr(value), promotion.BENCHMARK_TAG: "b1"}
            | {promotion.METRIC_NAME_TAG: "ndcg"}
            for version, value in values.items()
        }
        self.aliases = {"champion": champion}
        self.on_set: list[Any] = []

    def get_model_version_by_alias(self, name: str, alias: str) -> Any:
        from types import SimpleNamespace

        version = self.aliases[alias]
        return SimpleNamespace(version=version, tags=dict(self.tags[version]))

    def set_registered_model_alias(self, name: str, alias: str, version: str) -> None:
        self.aliases[alias] = version
        while self.on_set:
            self.on_set.pop(0)()

    def set_model_version_tag(self, name: str, version: str, key: str, value: str) -> None:
        self.tags[version][key] = value


def _plan(value: float, champion_before: str = "1") -> Any:
    from pipeline.ops import registry

    return registry._Plan(
        name="m",
        metric="ndcg",
        value=value,
        benchmark="b1",
        key="k",
        existing=None,
        promote=True,
        comparison="same_benchmark",
        reason="better",
        champion_value=0.5,
        champion_before=champion_before,
        challenger_before=None,
        champion_benchmark="b1",
    )


@pytest.mark.parametrize("better_first", [True, False])
def test_two_runs_promoting_together_leave_the_better_version_champion(better_first: bool) -> None:
    from pipeline.ops.registry import settle_champion

    client = _Registry({"1": 0.5, "2": 0.6, "3": 0.7}, champion="1")
    order = [("3", 0.7), ("2", 0.6)] if better_first else [("2", 0.6), ("3", 0.7)]
    # Both planned against v1, then registered one after the other (the register pool's order).
    plans = {version: settle_champion(client, _plan(value), version) for version, value in order}
    assert client.aliases["champion"] == "3"
    assert plans["3"].promote is True
    if better_first:  # v2 found v3 there and kept it: both decisions are recorded, v2's as superseded
        assert plans["2"].promote is False and "superseded: v3" in plans["2"].reason
        assert client.tags["2"]["promotion.decision"] == "not promoted"


def test_the_re_check_sees_an_alias_moved_right_after_its_own_write() -> None:
    from pipeline.ops.registry import settle_champion

    client = _Registry({"1": 0.5, "2": 0.6, "3": 0.7}, champion="1")
    # v3's register moves the alias; before it re-reads, a worse v2 (planned against v1) writes over it.
    client.on_set.append(lambda: client.aliases.update(champion="2"))
    assert settle_champion(client, _plan(0.7), "3").promote is True
    assert client.aliases["champion"] == "3"  # moved back: the better version ends as champion
    # And the worse one (planned against v1), re-checking after a better one overwrote it, gives way.
    client.aliases["champion"] = "1"
    client.on_set.append(lambda: client.aliases.update(champion="3"))
    late = settle_champion(client, _plan(0.6), "2")
    assert client.aliases["champion"] == "3" and late.promote is False


# -- the mapped shard tasks under Airflow: dag.test() of the stateless DAG, the task command stood in ----

DAG_DRIVER = r"""
import json, os, sys
from airflow.dag_processing.dagbag import DagBag
from airflow.utils.session import create_session
from pipeline.ops import stateless_dag
from pipeline.ops.promotion import Decision

calls = []

def run_stage(stage, run_id, overrides, clone, parent, uri, emit=None, extra_env=None, shard=None):
    # what the worker would start: the real task command line, recorded instead of run
    command = stateless_dag.task_command(stage, run_id, overrides, shard)[1:]
    calls.append({"run": stateless_dag.task_run_id(run_id), "command": command})
    return {"stage": stage, "ok": True, "skipped": False, "outputs": {}, "seconds": 0.0}

stateless_dag.run_stage = run_stage
stateless_dag.read_run_decision = lambda clone, run_id, lookup: Decision(False, "1", "kept (stand-in)")
bag = DagBag(dag_folder=os.environ["AIRFLOW__CORE__DAGS_FOLDER"])
assert not bag.import_errors, bag.import_errors
dag = bag.dags["colbert_pipeline"]
run = dag.test(run_conf=json.loads(sys.argv[1]))  # one run per process, as Airflow reads settings once
value = lambda state: getattr(state, "value", state)
with create_session() as session:
    instances = run.get_task_instances(session=session)
    tasks = sorted((ti.task_id, ti.map_index, value(ti.state)) for ti in instances)
result = {"run_id": run.run_id, "state": value(run.state), "tasks": tasks, "calls": calls}
print("DAG-RESULT " + json.dumps(result), flush=True)
"""


@pytest.mark.slow
def test_a_sharded_run_maps_one_shard_task_per_shard_before_the_index(module_tmp_path: Path) -> None:
    """``dag.test()`` of the stateless DAG: with ``index.shards`` 2, two mapped ``encode_shard`` instances run
    ``task index --shard 0/2`` and ``1/2`` after train and before index; unsharded, none runs and index still
    does. The task command is recorded instead of run (the stateless tests run it for real)."""
    import json
    import subprocess
    import sys

    home, workspace = module_tmp_path / "dag-home", module_tmp_path / "dag-workspace"
    home.mkdir()
    workspace.mkdir()
    repo = Path(__file__).resolve().parents[2]
    (workspace / "params.yaml").write_text((repo / "params.yaml").read_text())
    env = dag_test_env(
        os.environ,
        home,
        workspace,
        COLBERT_PIPELINE_STATELESS="1",
        COLBERT_PIPELINE_RUNNER="cli",  # the workspace holds only params.yaml (no stage runs in it)
        MLFLOW_TRACKING_URI=f"sqlite:///{module_tmp_path / 'dag-mlflow.db'}",
    )
    bin_dir = Path(sys.executable).parent
    migrate = subprocess.run(
        [str(bin_dir / "airflow"), "db", "migrate"], env=env, capture_output=True, text=True, timeout=600
    )
    assert migrate.returncode == 0, migrate.stdout[-3000:] + migrate.stderr[-3000:]

    def dag_test(conf: dict[str, Any]) -> dict[str, Any]:
        process = subprocess.run(
            [sys.executable, "-c", DAG_DRIVER, json.dumps(conf)],
            env=env,
            cwd=module_tmp_path,
            capture_output=True,
            text=True,
            timeout=600,
        )
        marker = [line for line in process.stdout.splitlines() if line.startswith("DAG-RESULT ")]
        assert process.returncode == 0 and marker, (process.stdout + process.stderr)[-6000:]
        return json.loads(marker[-1].removeprefix("DAG-RESULT "))

    sharded, unsharded = dag_test({"overrides": {"index.shards": 2}}), dag_test({})
    assert sharded["state"] == unsharded["state"] == "success", (sharded, unsharded)
    states = {(task, index): state for task, index, state in sharded["tasks"]}
    assert states[("encode_shard", 0)] == states[("encode_shard", 1)] == "success"
    assert ("encode_shard", 2) not in states and states[("index", -1)] == "success"

    def commands(run: dict[str, Any]) -> list[list[str]]:
        run_id = stateless_dag.task_run_id(run["run_id"])
        return [call["command"] for call in run["calls"] if call["run"] == run_id]

    # in the order they ran (dag.test runs one task at a time): "index 0/2" is `task index --shard 0/2`
    ran = [f"index {c[3]}" if c[2] == "--shard" else c[1] for c in commands(sharded)]
    assert sorted(ran) == sorted([*STAGES, "index 0/2", "index 1/2"]), ran
    assert ran.index("train") < min(ran.index("index 0/2"), ran.index("index 1/2"))
    assert max(ran.index("index 0/2"), ran.index("index 1/2")) < ran.index("index")
    assert all("index.shards=2" in command for command in commands(sharded))  # every task: the run's Params
    # Unsharded: the mapped task has no instance to run (skipped), and index runs all the same.
    states = {(task, index): state for task, index, state in unsharded["tasks"]}
    assert states[("encode_shard", -1)] == "skipped" and states[("index", -1)] == "success"
    assert [c[1] for c in commands(unsharded)] == list(STAGES)
