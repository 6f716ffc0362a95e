"""The Airflow DAG's structure, and the Airflow-free orchestration helpers it runs on.

The DAG tests load ``dags/`` with ``DagBag`` in a temporary ``AIRFLOW_HOME`` (nothing touches ``~/airflow``).
The helper tests run real child processes (and a real ``dvc repro`` on a toy project) in temporary folders.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from datetime import timedelta
from pathlib import Path

import pytest
import yaml

from pipeline.ops import lineage, orchestration, promotion, run_params
from pipeline.project.config import ConfigError
from pipeline.project.layout import STAGES
from tests.dag_module import load_dag_module

REPO_ROOT = Path(__file__).resolve().parents[2]
DAG_ID = "colbert_pipeline"


# -- the DAG --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def airflow_home(module_tmp_path: Path) -> Path:
    """A throwaway AIRFLOW_HOME, set before Airflow is first imported in this process."""
    home = module_tmp_path / "airflow-home"
    home.mkdir()
    os.environ["AIRFLOW_HOME"] = str(home)
    os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
    return home


@pytest.fixture(scope="module")
def dagbag(airflow_home: Path):
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(REPO_ROOT / "dags"))


@pytest.fixture(scope="module")
def dag(dagbag):
    return dagbag.dags[DAG_ID]


def test_dag_folder_imports_without_errors(dagbag) -> None:
    assert dagbag.import_errors == {}
    assert DAG_ID in dagbag.dags


def test_tasks_and_edges(dag) -> None:
    expected = {
        "validate_params",
        "start_mlflow_run",
        *STAGES,
        "record_run",
        "decide_promotion",
        "promote",
        "keep_champion",
    }
    assert set(dag.task_dict) == expected
    assert dag.task_dict["start_mlflow_run"].upstream_task_ids == {"validate_params"}
    assert "start_mlflow_run" in dag.task_dict[STAGES[0]].upstream_task_ids
    # The stages form one chain in the order DVC runs them.
    for before, after in itertools.pairwise(STAGES):
        assert before in dag.task_dict[after].upstream_task_ids, f"{before} -> {after}"
        assert after not in dag.task_dict[before].upstream_task_ids
    # The run is pushed and committed to its ref (and params.yaml restored) before the decision is shown.
    assert dag.task_dict["record_run"].upstream_task_ids == {"validate_params", "register"}
    assert dag.task_dict["decide_promotion"].upstream_task_ids == {"register", "record_run"}
    assert dag.task_dict["record_run"].pool == "colbert_dvc_workspace"
    assert dag.task_dict["decide_promotion"].downstream_task_ids == {"promote", "keep_champion"}
    assert type(dag.task_dict["decide_promotion"]).__name__ == "_BranchPythonDecoratedOperator"


def test_pools_queues_retries_timeouts(dag) -> None:
    train = dag.task_dict["train"]
    assert (train.pool, train.queue) == ("gpu", "gpu")
    for stage in STAGES:
        if stage == "train":
            continue
        task = dag.task_dict[stage]
        assert task.pool == "colbert_dvc_workspace", stage
        assert task.queue == "default", stage
    assert dag.task_dict["validate_params"].pool == "colbert_dvc_workspace"
    for task in dag.tasks:
        assert task.retries >= 1, task.task_id
        assert task.retry_exponential_backoff > 1, task.task_id
        assert task.max_retry_delay is not None, task.task_id
        assert task.retry_delay == timedelta(minutes=1), task.task_id  # COLBERT_PIPELINE_RETRY_DELAY_S unset
        assert task.execution_timeout is not None and task.execution_timeout > timedelta(0), task.task_id
    assert dag.task_dict["train"].execution_timeout > dag.task_dict["register"].execution_timeout
    stage_callbacks = [dag.task_dict[stage].on_failure_callback for stage in STAGES]
    assert all(stage_callbacks), "every stage restores params and fails the MLflow run on failure"


def test_schedule_and_run_limits(dag) -> None:
    assert dag.catchup is False
    assert dag.max_active_runs == 1
    assert type(dag.timetable).__name__ == "CronTriggerTimetable"
    assert dag.timetable.expression == "0 0 * * 0"  # @weekly


def test_params_and_their_validation(dag) -> None:
    from airflow.sdk.definitions.param import ParamValidationError

    assert set(dag.params) == {
        "base_model",
        "data_source",
        "data_path",
        "epochs",
        "promotion_margin",
        "overrides",
    }
    resolved = dag.params.validate()
    assert resolved["epochs"] is None and resolved["overrides"] == {}
    params = dag.params
    for name, bad in [("epochs", 0), ("epochs", "two"), ("data_source", "ftp"), ("promotion_margin", -1)]:
        with pytest.raises(ParamValidationError):
            params.get_param(name).resolve(bad)
    assert params.get_param("data_source").resolve("beir") == "beir"


def test_the_corpus_dag_runs_index_and_register_and_never_trains(dagbag) -> None:
    corpus = dagbag.dags["colbert_corpus"]
    assert set(corpus.task_dict) == {
        "check_champion_model",
        "start_mlflow_run",
        "index",
        "register",
        "record_run",
        "decide_promotion",
        "promote",
        "keep_champion",
    }
    assert not {"prepare", "baseline", "train", "evaluate"} & set(corpus.task_dict)
    assert corpus.task_dict["index"].upstream_task_ids == {"start_mlflow_run"}
    assert corpus.task_dict["start_mlflow_run"].upstream_task_ids == {"check_champion_model"}
    assert corpus.task_dict["register"].upstream_task_ids == {"start_mlflow_run", "index"}
    assert corpus.task_dict["decide_promotion"].downstream_task_ids == {"promote", "keep_champion"}
    # the same one-slot pool as the pipeline DAG's DVC tasks: never two DVC commands in one workspace
    for task_id in ("check_champion_model", "index", "register", "record_run"):
        assert corpus.task_dict[task_id].pool == "colbert_dvc_workspace", task_id
    assert {asset.name for asset in corpus.task_dict["promote"].outlets} == {"colbert_champion"}
    # scheduled on the corpus asset, and daily
    assert type(corpus.timetable).__name__ == "AssetOrTimeSchedule"
    assert corpus.timetable.timetable.expression == "0 0 * * *"
    assert [asset.name for asset in corpus.timetable.asset_condition.objects] == ["colbert_corpus"]
    assert corpus.max_active_runs == 1 and corpus.catchup is False


def test_assets_declared(dag) -> None:
    names = {task_id: {asset.name for asset in dag.task_dict[task_id].outlets} for task_id in dag.task_dict}
    assert names["prepare"] == {"colbert_prepared_data"}
    assert names["train"] == {"colbert_model"}
    assert names["index"] == {"colbert_index"}
    assert names["promote"] == {"colbert_champion"}
    assert names["keep_champion"] == set()


def test_parse_time_settings(monkeypatch: pytest.MonkeyPatch, airflow_home: Path) -> None:
    module = load_dag_module(
        monkeypatch,
        "colbert_pipeline_env_variant",
        COLBERT_PIPELINE_SCHEDULE="none",
        COLBERT_PIPELINE_RETRIES="0",
        COLBERT_PIPELINE_RETRY_DELAY_S="5",
        COLBERT_PIPELINE_GPU_STAGES="train,index",
    )
    variant = module.pipeline_dag
    assert type(variant.timetable).__name__ == "NullTimetable"  # manual runs only
    assert {task.retries for task in variant.tasks} == {0}
    assert {task.retry_delay for task in variant.tasks} == {timedelta(seconds=5)}
    assert (variant.task_dict["index"].pool, variant.task_dict["index"].queue) == ("gpu", "gpu")
    assert variant.task_dict["evaluate"].pool == "colbert_dvc_workspace"


def test_a_bad_retry_delay_is_refused_naming_the_setting() -> None:
    name = "COLBERT_PIPELINE_RETRY_DELAY_S"
    assert orchestration.seconds_from_env(name, 60.0, {}) == 60.0
    assert orchestration.seconds_from_env(name, 60.0, {name: "0"}) == 0.0
    for bad in ("soon", "-1", "nan", "inf"):
        with pytest.raises(orchestration.OrchestrationError, match=rf"{name}: '{bad}' is not a number"):
            orchestration.seconds_from_env(name, 60.0, {name: bad})


# -- orchestration helpers: settings and params ---------------------------------------------------------


def _lookup(values: dict[str, str]):
    return values.get


def test_settings_resolve_and_name_the_bad_setting(tmp_path: Path) -> None:
    settings = orchestration.Settings.resolve(
        _lookup({"COLBERT_PIPELINE_WORKSPACE": str(tmp_path), "COLBERT_PIPELINE_RUNNER": "cli"})
    )
    assert settings.workspace == tmp_path.resolve() and settings.runner == "cli" and settings.hf_offline
    with pytest.raises(orchestration.OrchestrationError, match="COLBERT_PIPELINE_RUNNER: 'make'"):
        orchestration.Settings.resolve(
            _lookup({"COLBERT_PIPELINE_WORKSPACE": str(tmp_path), "COLBERT_PIPELINE_RUNNER": "make"})
        )
    with pytest.raises(
        orchestration.OrchestrationError, match=r"COLBERT_PIPELINE_WORKSPACE: .* not a directory"
    ):
        orchestration.Settings.resolve(_lookup({"COLBERT_PIPELINE_WORKSPACE": str(tmp_path / "nope")}))
    with pytest.raises(orchestration.OrchestrationError, match=r"no dvc\.yaml and no \.dvc: run `dvc init`"):
        orchestration.Settings.resolve(_lookup({"COLBERT_PIPELINE_WORKSPACE": str(tmp_path)}))
    with pytest.raises(orchestration.OrchestrationError, match="COLBERT_PIPELINE_HF_OFFLINE: 'maybe'"):
        orchestration.Settings.resolve(
            _lookup(
                {
                    "COLBERT_PIPELINE_WORKSPACE": str(tmp_path),
                    "COLBERT_PIPELINE_RUNNER": "cli",
                    "COLBERT_PIPELINE_HF_OFFLINE": "maybe",
                }
            )
        )
    # The default workspace is the project itself, which is a DVC project.
    assert orchestration.Settings.resolve(_lookup({})).workspace == REPO_ROOT


def test_dag_params_become_dotted_overrides() -> None:
    overrides = orchestration.overrides_from_dag_params(
        {
            "base_model": "my/model",
            "data_source": "beir",
            "data_path": "../shared/data/scifact",
            "epochs": 3,
            "promotion_margin": 0.01,
            "overrides": {"train.max_steps": 5},
        },
        current_source="sample",
    )
    assert overrides == {
        "train.base_model": "my/model",
        "prepare.source": "beir",
        "prepare.beir.folder": "../shared/data/scifact",
        "train.epochs": 3,
        "register.margin": 0.01,
        "train.max_steps": 5,
    }
    # Unset Params keep params.yaml; data_path follows the file's source when the run does not set one.
    assert orchestration.overrides_from_dag_params({"epochs": None}, "sample") == {}
    assert orchestration.overrides_from_dag_params({"data_path": "t.jsonl"}, "triplets") == {
        "prepare.triplets.path": "t.jsonl"
    }
    with pytest.raises(ConfigError, match="data_path: the 'kd' source"):
        orchestration.overrides_from_dag_params({"data_path": "x"}, "kd")
    with pytest.raises(ConfigError, match="'epochs' is not a dotted params key"):
        orchestration.overrides_from_dag_params({"overrides": {"epochs": 2}}, "sample")


PARAMS_TEXT = "# comment\ntrain:\n  epochs: 1\n  batch_size: 16\nregister:\n  margin: 0.0\n"


def test_apply_run_overrides_writes_only_changes_and_restores(tmp_path: Path) -> None:
    params_path = tmp_path / "params.yaml"
    params_path.write_text(PARAMS_TEXT)
    params_path.chmod(0o644)
    same = orchestration.apply_run_overrides(params_path, {"train.epochs": 1}, run_key="manual__1")
    assert same.changed == [] and same.backup is None
    assert params_path.read_text() == PARAMS_TEXT  # untouched: DVC sees no change

    update = orchestration.apply_run_overrides(
        params_path, {"train.epochs": 2, "register.margin": 0.0, "train.max_steps": 5}, run_key="manual__2:x"
    )
    assert update.changed == ["train.epochs", "train.max_steps"]
    written = yaml.safe_load(params_path.read_text())
    assert written == {"train": {"epochs": 2, "batch_size": 16, "max_steps": 5}, "register": {"margin": 0.0}}
    assert update.sha256 == run_params.file_sha256(params_path)
    assert params_path.stat().st_mode & 0o777 == 0o644
    backup = Path(update.backup)
    assert backup.parent == tmp_path / ".colbert-pipeline" and ":" not in backup.name
    assert backup.read_text() == PARAMS_TEXT
    assert (backup.parent / ".gitignore").read_text() == "*\n"
    assert json.loads(json.dumps(update.as_xcom())) == update.as_xcom()  # XCom-safe

    assert orchestration.restore_params(update.as_xcom()) is True
    assert params_path.read_text() == PARAMS_TEXT


def test_restore_params_leaves_a_file_edited_since(tmp_path: Path) -> None:
    params_path = tmp_path / "params.yaml"
    params_path.write_text(PARAMS_TEXT)
    update = orchestration.apply_run_overrides(params_path, {"train.epochs": 4}, run_key="r")
    params_path.write_text(PARAMS_TEXT + "evaluate:\n  batch_size: 8\n")  # someone edited it meanwhile
    assert orchestration.restore_params(update.as_xcom()) is False
    assert "batch_size: 8" in params_path.read_text()
    assert orchestration.restore_params({"params_path": str(params_path), "backup": None}) is False


def test_a_stage_cleared_after_the_params_were_put_back_gets_its_run_params_again(tmp_path: Path) -> None:
    params_path = tmp_path / "params.yaml"
    params_path.write_text(PARAMS_TEXT)
    update = orchestration.apply_run_overrides(params_path, {"train.max_steps": 5}, run_key="run-a").as_xcom()
    ran_with = params_path.read_text()
    assert orchestration.reapply_params(update) is False  # already this run's: nothing written
    # A stage fails: its failure callback puts the defaults back. Then an operator clears the task.
    assert orchestration.restore_params(update) is True
    assert params_path.read_text() == PARAMS_TEXT
    assert orchestration.reapply_params(update) is True
    assert params_path.read_text() == ran_with
    assert run_params.params_owner(params_path) == "run-a"
    assert orchestration.restore_params(update) is True  # the run ends: defaults again, owned by no run
    assert params_path.read_text() == PARAMS_TEXT and run_params.params_owner(params_path) is None


def test_a_hand_edit_made_after_the_rollback_is_never_overwritten(tmp_path: Path) -> None:
    params_path = tmp_path / "params.yaml"
    params_path.write_text(PARAMS_TEXT)
    update = orchestration.apply_run_overrides(params_path, {"train.max_steps": 5}, run_key="run-a").as_xcom()
    assert orchestration.restore_params(update) is True
    edited = PARAMS_TEXT.replace("batch_size: 16", "batch_size: 8")
    params_path.write_text(edited)  # someone tunes params.yaml, then clears run-a's failed task
    with pytest.raises(ConfigError, match=r"params.yaml changed since run run-a wrote its params"):
        orchestration.reapply_params(update)
    assert params_path.read_text() == edited


def test_a_late_put_back_leaves_the_next_runs_identical_params_alone(tmp_path: Path) -> None:
    params_path = tmp_path / "params.yaml"
    params_path.write_text(PARAMS_TEXT)
    # Two runs triggered with the same Params; the first one's worker is killed during a stage.
    same = {"train.max_steps": 5}
    killed = orchestration.apply_run_overrides(params_path, same, run_key="killed").as_xcom()
    params_path.write_text(PARAMS_TEXT)  # (put back; the killed task's failure callback has not run yet)
    following = orchestration.apply_run_overrides(params_path, same, run_key="next").as_xcom()
    assert following["sha256"] == killed["sha256"]  # the same bytes: the hash cannot tell the runs apart
    assert orchestration.restore_params(killed) is False  # the killed task's callback, arriving late
    assert yaml.safe_load(params_path.read_text())["train"]["max_steps"] == 5
    assert run_params.params_owner(params_path) == "next"
    assert orchestration.restore_params(following) is True


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ({"train.epochs": "two"}, "train.epochs"),
        ({"train.epoch": 2}, "train.epoch: unknown key"),
        ({"prepare.source": "beir"}, "prepare"),
        ({"prepare.source": "beir", "prepare.beir.folder": "/no/such/folder"}, "prepare.beir.folder"),
    ],
)
def test_bad_override_names_the_key_and_writes_nothing(tmp_path: Path, overrides: dict, key: str) -> None:
    params_path = tmp_path / "params.yaml"
    params_path.write_text(PARAMS_TEXT)
    with pytest.raises(ConfigError, match=key):
        orchestration.apply_run_overrides(params_path, overrides, run_key="r")
    assert params_path.read_text() == PARAMS_TEXT
    assert not (tmp_path / ".colbert-pipeline").exists()


# -- orchestration helpers: the stage subprocess --------------------------------------------------------


def _script_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, script: str) -> orchestration.Settings:
    """Settings whose 'stage' is a Python script: the real subprocess machinery, a scripted child."""
    path = tmp_path / "stage.py"
    path.write_text(textwrap.dedent(script))
    monkeypatch.setattr(orchestration, "stage_command", lambda stage, settings: [sys.executable, str(path)])
    return orchestration.Settings(workspace=tmp_path, runner="cli")


def test_run_stage_streams_output_and_passes_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    settings = _script_settings(
        tmp_path,
        monkeypatch,
        """
        import json, os
        print("cwd", os.getcwd())
        for name in ("COLBERT_PIPELINE_PARENT_RUN_ID", "MLFLOW_TRACKING_URI", "HF_HUB_OFFLINE"):
            print(name, os.environ.get(name))
        # What the CLI does: the result goes to the file the orchestrator named, not to stdout.
        result = {"ok": True, "outputs": {"models/colbert": ""}, "mlflow_run_id": "abc123"}
        open(os.environ["COLBERT_PIPELINE_RESULT_FILE"], "w").write(json.dumps(result))
        print(json.dumps({"mlflow_run_id": "not-this-one"}, indent=2))
        """,
    )
    lines: list[str] = []
    result = orchestration.run_stage(
        "train", settings, parent_run_id="parent42", tracking_uri="http://127.0.0.1:5000", emit=lines.append
    )
    assert f"cwd {tmp_path}" in lines
    assert "COLBERT_PIPELINE_PARENT_RUN_ID parent42" in lines
    assert "MLFLOW_TRACKING_URI http://127.0.0.1:5000" in lines
    assert "HF_HUB_OFFLINE 1" in lines
    assert result.skipped is False
    assert result.mlflow_run_id == "abc123"
    assert result.outputs == {"models/colbert": ""}
    assert result.seconds >= 0


def test_run_stage_bad_input_fails_permanently_with_the_stage_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = _script_settings(
        tmp_path,
        monkeypatch,
        """
        import json, os, sys
        print("loading")
        print("colbert-pipeline prepare: error: this line is for people, not parsed", file=sys.stderr)
        message = "ConfigError: params.yaml: eval_queries: too small"
        result = {"ok": False, "kind": "input", "message": message}
        open(os.environ["COLBERT_PIPELINE_RESULT_FILE"], "w").write(json.dumps(result))
        sys.exit(2)
        """,
    )
    with pytest.raises(orchestration.StageFailed) as failure:
        orchestration.run_stage("prepare", settings, parent_run_id=None, emit=lambda line: None)
    assert failure.value.permanent is True and failure.value.kind == "input"
    assert failure.value.returncode == 2
    assert failure.value.message == "ConfigError: params.yaml: eval_queries: too small"
    assert "stage 'prepare' failed (exit status 2, input)" in str(failure.value)


def test_run_stage_through_the_real_cli_reports_bad_params_as_permanent(tmp_path: Path) -> None:
    (tmp_path / "params.yaml").write_text("train:\n  epochs: zero\n")
    settings = orchestration.Settings(workspace=tmp_path, runner="cli")
    with pytest.raises(orchestration.StageFailed) as failure:
        orchestration.run_stage("train", settings, parent_run_id=None, emit=lambda line: None)
    assert failure.value.kind == "input" and failure.value.permanent and failure.value.returncode == 2
    assert "train.epochs" in failure.value.message


def test_dag_tasks_fail_for_good_only_on_what_a_retry_cannot_fix(airflow_home: Path) -> None:
    from airflow.sdk.exceptions import AirflowFailException

    from pipeline.ops.dag_shared import fail_without_retry

    bad_input = orchestration.StageFailed("train", 2, "train epochs: not a number", "input")
    with pytest.raises(AirflowFailException, match="train epochs: not a number"), fail_without_retry():
        raise bad_input
    crash = orchestration.StageFailed("train", 1, "RuntimeError: CUDA out of memory", "internal")
    with pytest.raises(orchestration.StageFailed) as raised, fail_without_retry(ConfigError):
        raise crash  # Airflow retries it
    assert raised.value is crash
    with pytest.raises(AirflowFailException, match="3 is not one of"), fail_without_retry(ConfigError):
        raise ConfigError("index nbits: 3 is not one of 1, 2, 4, 8")
    with pytest.raises(OSError, match="disk full"), fail_without_retry(ConfigError):
        raise OSError("disk full")  # not listed: retried


def test_run_stage_crash_is_retryable_and_names_the_exception(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = _script_settings(tmp_path, monkeypatch, 'raise RuntimeError("CUDA out of memory")\n')
    with pytest.raises(orchestration.StageFailed) as failure:
        orchestration.run_stage("train", settings, parent_run_id=None, emit=lambda line: None)
    assert failure.value.permanent is False and failure.value.kind == "internal"
    assert failure.value.message.endswith("RuntimeError: CUDA out of memory")


def _alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in status  # a zombie waiting for its reaper is dead


def test_interrupted_stage_stops_its_whole_process_group(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pid_file = tmp_path / "grandchild.pid"
    settings = _script_settings(
        tmp_path,
        monkeypatch,
        f"""
        import subprocess, time
        child = subprocess.Popen(["sleep", "120"])
        open({str(pid_file)!r}, "w").write(str(child.pid))
        print("started", flush=True)
        time.sleep(120)
        """,
    )

    class Timeout(Exception):
        pass

    def emit(line: str) -> None:
        if line == "started":
            raise Timeout  # what an execution_timeout does to the task mid-stream

    started = time.monotonic()
    with pytest.raises(Timeout):
        orchestration.run_stage("train", settings, parent_run_id=None, emit=emit)
    assert time.monotonic() - started < 30
    grandchild = int(pid_file.read_text())
    deadline = time.monotonic() + 10
    while _alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(grandchild), "the stage's own children must not outlive its task"


def test_stage_environment_can_allow_the_hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("COLBERT_PIPELINE_PARENT_RUN_ID", "stale")
    settings = orchestration.Settings(workspace=tmp_path, runner="cli", hf_offline=False)
    env = orchestration.stage_environment(settings, parent_run_id=None, tracking_uri=None)
    assert "HF_HUB_OFFLINE" not in env and "COLBERT_PIPELINE_PARENT_RUN_ID" not in env
    assert env["PATH"].split(os.pathsep)[0] == str(Path(sys.executable).parent)


@pytest.fixture
def toy_dvc_project(tmp_path: Path) -> Path:
    """A git + DVC project with one stage that copies a params value into an output folder."""
    dvc = Path(sys.executable).parent / "dvc"
    if not dvc.exists():
        pytest.skip("dvc is not installed in this environment")
    (tmp_path / "params.yaml").write_text("train:\n  epochs: 1\n")
    (tmp_path / "dvc.yaml").write_text(
        "stages:\n  toy:\n    cmd: mkdir -p out && echo ${train.epochs} > out/value.txt\n"
        "    params:\n      - train.epochs\n    outs:\n      - out\n"
    )
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t"}
    env["GIT_COMMITTER_EMAIL"] = "t@t"
    for command in (["git", "init", "-q"], [str(dvc), "init", "-q"], ["git", "add", "-A"]):
        subprocess.run(command, cwd=tmp_path, check=True, env=env, capture_output=True)
    return tmp_path


def test_run_stage_with_real_dvc_skips_an_unchanged_stage(toy_dvc_project: Path) -> None:
    settings = orchestration.Settings(workspace=toy_dvc_project, runner="dvc")
    first = orchestration.run_stage("toy", settings, parent_run_id=None, emit=lambda line: None)
    assert first.skipped is False
    assert (toy_dvc_project / "out" / "value.txt").read_text().strip() == "1"
    assert list(first.outputs) == ["out"] and first.outputs["out"].endswith(".dir")

    lines: list[str] = []
    second = orchestration.run_stage("toy", settings, parent_run_id=None, emit=lines.append)
    assert second.skipped is True, lines
    assert second.outputs == first.outputs

    orchestration.apply_run_overrides(toy_dvc_project / "params.yaml", {"train.epochs": 2}, run_key="r")
    third = orchestration.run_stage("toy", settings, parent_run_id=None, emit=lambda line: None)
    assert third.skipped is False and third.outputs != first.outputs
    assert (toy_dvc_project / "out" / "value.txt").read_text().strip() == "2"


# -- orchestration helpers: the registry decision -------------------------------------------------------


def test_read_registry(tmp_path: Path) -> None:
    path = tmp_path / "registry.json"
    path.write_text(json.dumps({"promoted": True, "version": 3, "reason": "beat champion by 0.02"}))
    decision = promotion.Decision.read(path)
    assert decision == promotion.Decision(promoted=True, version="3", reason="beat champion by 0.02")
    path.write_text(json.dumps({"promoted": "yes", "reason": "x"}))
    with pytest.raises(ValueError, match="promoted: expected true or false"):
        promotion.Decision.read(path)
    path.write_text(json.dumps({"promoted": False}))
    with pytest.raises(ValueError, match="missing key 'reason'"):
        promotion.Decision.read(path)
    with pytest.raises(FileNotFoundError, match=r"missing\.json"):
        promotion.Decision.read(tmp_path / "missing.json")


def test_dvc_lock_outputs(tmp_path: Path) -> None:
    (tmp_path / "dvc.lock").write_text(
        yaml.safe_dump(
            {
                "schema": "2.0",
                "stages": {"train": {"outs": [{"path": "models/colbert", "md5": "abc.dir", "size": 1}]}},
            }
        )
    )
    assert lineage.stage_outputs(tmp_path, "train") == {"models/colbert": "abc.dir"}
    assert lineage.stage_outputs(tmp_path, "index") == {}
    assert shutil.which("true")  # (a sanity anchor: the helpers above rely on a POSIX userland)


def test_parent_run_is_keyed_on_the_airflow_run_and_closed_with_its_outcome(tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    (tmp_path / "params.yaml").write_text("tracking:\n  experiment: dag-unit\n  retries: 0\n")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    settings = orchestration.Settings(workspace=tmp_path, runner="cli", tracking_uri=uri)
    first = orchestration.start_parent_run(settings, "colbert_pipeline", "manual__1", {"overrides": "a,b"})
    again = orchestration.start_parent_run(settings, "colbert_pipeline", "manual__1", {"overrides": "a,b"})
    other = orchestration.start_parent_run(settings, "colbert_pipeline", "manual__2")
    assert first == again != other  # a retried task finds its run; another DAG run gets its own
    orchestration.finish_parent_run(settings, first, "FAILED", {"failed_task": "train"})
    run = MlflowClient(tracking_uri=uri).get_run(first)
    assert run.info.status == "FAILED"
    assert run.data.tags["airflow.dag_id"] == "colbert_pipeline"
    assert run.data.tags["airflow.run_id"] == "manual__1"
    assert run.data.tags["overrides"] == "a,b" and run.data.tags["failed_task"] == "train"
    assert "MLFLOW_TRACKING_URI" not in os.environ or os.environ["MLFLOW_TRACKING_URI"] != uri
