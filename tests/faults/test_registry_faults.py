"""Faults around the registry: the tracking server killed during ``register``; searches during a rebuild.

One real ``mlflow server`` and one tiny project (a saved model, a Nano benchmark, its PLAID index: the
register tests' template) serve both tests.

The MLflow tracking server SIGKILLed while ``colbert-pipeline register`` runs, then restarted.

A real ``mlflow server`` (SQLite store, proxied artifacts) holds a champion, v1. Then ``register`` runs (the
CLI's ``main``, in this process, so a hook can fire at an exact point) with a better score, and the server's
whole process group is SIGKILLed at one of three points: while the model is being uploaded (no version yet),
after the version was created but before its ``challenger`` alias, and between the ``challenger`` and
``champion`` aliases. Each time:

- ``register`` exits 3 (``infrastructure``): Airflow retries it;
- after a restart, every alias names a version that exists and carries all its tags (no dangling alias), and
  the champion is still the one before; a version the dead registration created holds no alias, so nothing
  reads it;
- the next ``register`` completes: it finishes (reuses) what the dead one left, or, when it registers another
  score, removes it; no version is newer than ``challenger``, every version carries its tags, and the better
  model is champion.
"""

from __future__ import annotations

import concurrent.futures
import os
import shutil
import signal
import subprocess
import threading
from pathlib import Path

import pytest
from mlflow import MlflowClient

from pipeline import cli
from pipeline.ops import promotion, serving, tracking
from pipeline.project.errors import EXIT_CODES
from tests.ops.test_register import _evaluate, booting_server, template  # noqa: F401 (fixtures)
from tests.workspace import REPO, workspace_env

pytestmark = [pytest.mark.slow, pytest.mark.faults]
NAME = "killed-server"
SEARCH_NAME = "searched-while-rebuilt"


def _sets(settings: list[str]) -> list[str]:
    return [arg for setting in settings for arg in ("--set", setting)]


def _kill(server) -> None:
    os.killpg(server.process.pid, signal.SIGKILL)
    server.process.wait(30)


def _registry(uri: str) -> tuple[dict[str, dict], dict[str, str]]:
    """Every version of NAME with its tags, and every alias with the version it names."""
    client = MlflowClient(uri)
    versions = {str(v.version): dict(v.tags or {}) for v in client.search_model_versions(f"name = '{NAME}'")}
    aliases = dict(client.get_registered_model(NAME).aliases or {})
    return versions, {alias: str(version) for alias, version in aliases.items()}


def _consistent(uri: str) -> tuple[dict[str, dict], dict[str, str]]:
    versions, aliases = _registry(uri)
    for alias, version in aliases.items():
        assert version in versions, f"alias {alias} names v{version}, which does not exist"
        assert promotion.IDENTITY_TAG in versions[version], f"alias {alias}: v{version} lacks its tags"
    return versions, aliases


def _hook_upload(server, monkeypatch) -> None:
    original = serving.log_search_model

    def dying(*args, **kwargs):
        _kill(server)
        return original(*args, **kwargs)

    monkeypatch.setattr(serving, "log_search_model", dying)


def _hook_alias(alias: str):
    def install(server, monkeypatch) -> None:
        original = MlflowClient.set_registered_model_alias

        def dying(self, name, which, version):
            if which == alias:
                _kill(server)
            return original(self, name, which, version)

        monkeypatch.setattr(MlflowClient, "set_registered_model_alias", dying)

    return install


#: Where the next run registers another score, so the version left behind is removed rather than finished.
REMOVED_AT = "version created, before its challenger alias"
POINTS = {
    "uploading the model": _hook_upload,
    "version created, before its challenger alias": _hook_alias(promotion.CHALLENGER),
    "between the challenger and champion aliases": _hook_alias(promotion.CHAMPION),
}


def test_server_killed_during_register_leaves_no_half_version_and_the_next_run_completes(
    booting_server,  # noqa: F811
    template,  # noqa: F811
    tmp_path,
    monkeypatch,
) -> None:
    uri = booting_server.wait()
    project = tmp_path / "project"
    shutil.copytree(template, project, symlinks=True)
    shutil.copy(REPO / "params.yaml", project / "params.yaml")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.delenv(tracking.PARENT_RUN_ENV, raising=False)
    monkeypatch.delenv("COLBERT_PIPELINE_RESULT_FILE", raising=False)
    argv = ["register", "--params", str(project / "params.yaml")]
    for setting in (f"register.model_name={NAME}", "tracking.experiment=faults", "tracking.retries=1"):
        argv += ["--set", setting]

    _evaluate(project, 0.5)
    assert cli.main(argv) == 0
    assert _consistent(uri)[1] == {"champion": "1", "challenger": "1"}

    rows = []
    for value, (point, hook) in zip((0.6, 0.7, 0.8), POINTS.items(), strict=True):
        _, before = _consistent(uri)
        _evaluate(project, value)  # better than the champion: this registration would promote
        with monkeypatch.context() as patch:
            hook(booting_server, patch)
            code = cli.main(argv)
        assert booting_server.process.poll() is not None, f"{point}: the server was never killed"
        assert code == EXIT_CODES["infrastructure"], f"{point}: exit {code}"
        booting_server.start()
        booting_server.wait()
        versions, after = _consistent(uri)
        assert after["champion"] == before["champion"], f"{point}: the champion moved without a complete run"
        left = [v for v in versions if int(v) > int(after["challenger"])]
        assert all(v not in after.values() for v in left)

        if point == REMOVED_AT:  # the next run scores another model: what was left is removed, not finished
            assert left, f"{point}: the killed registration left no version"
            value += 0.05
            _evaluate(project, value)
        next_code = cli.main(argv)
        versions, aliases = _consistent(uri)
        newest, champion = max(versions, key=int), aliases.get("champion")
        removed = [v for v in left if v not in versions]
        # What the next run did, as observed: each a condition of "recovered" below.
        row = {
            "point": point,
            "exit": code,
            "left": len(left),
            "removed": len(removed),
            "next exit": next_code,
            "champion is the newest": champion == aliases.get("challenger") == newest,
            "champion's score": float(versions[champion][promotion.METRIC_VALUE_TAG]) if champion else None,
            "all tagged": all(promotion.IDENTITY_TAG in tags for tags in versions.values()),
            "removed as expected": removed == (left if point == REMOVED_AT else []),
        }
        row["recovered"] = (
            next_code == 0
            and row["champion is the newest"]
            and row["champion's score"] == value
            and row["all tagged"]
            and row["removed as expected"]
        )
        rows.append(row)
        if not row["recovered"]:
            break  # the registry is not in the state the next point starts from

    print("\nserver killed at                              exit  left behind  removed  next run completes")
    for row in rows:
        print(
            f"{row['point']:<45} {row['exit']:>4}  {row['left']:>11}  {row['removed']:>7}  {row['recovered']}"
        )
    recovered = sum(row["recovered"] for row in rows)
    print(f"faults injected {len(rows)}, recovered {recovered}, lost {len(rows) - recovered}")
    assert len(rows) == len(POINTS) and recovered == len(rows), rows


def _search(project: Path, env: dict[str, str], query: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["colbert-pipeline", "search", query, "--k", "3", "--params", str(project / "params.yaml"), "--set",
         f"register.model_name={SEARCH_NAME}"],
        cwd=project, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip


def test_two_searches_during_an_index_rebuild_always_answer_from_a_complete_index(
    booting_server,  # noqa: F811
    template,  # noqa: F811
    tmp_path,
    monkeypatch,
) -> None:
    """``search`` answers from the champion's registered copy of its index, never from the folder the index
    stage is rebuilding: two searchers, each calling ``colbert-pipeline search`` in a loop while
    ``colbert-pipeline index`` rebuilds ``indexes/sample``, get exactly the answer they got before, each time.
    """
    uri = booting_server.wait()
    project = tmp_path / "project"
    shutil.copytree(template, project, symlinks=True)
    shutil.copy(REPO / "params.yaml", project / "params.yaml")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.delenv(tracking.PARENT_RUN_ENV, raising=False)
    _evaluate(project, 0.5)
    settings = [f"register.model_name={SEARCH_NAME}", "tracking.experiment=faults", "index.device=cpu"]
    assert cli.main(["register", "--params", str(project / "params.yaml"), *_sets(settings)]) == 0
    env = workspace_env(uri, REPO)
    queries = ("What does the otter eat?", "Where does the camel live?")
    with concurrent.futures.ThreadPoolExecutor(len(queries)) as pool:  # the answers before the rebuild
        answered = pool.map(lambda query: _search(project, env, query), queries)
        expected = dict(zip(queries, answered, strict=True))
    for answer in expected.values():
        assert answer.returncode == 0 and " d" in answer.stdout, answer.stderr[-2000:]
    live_before = (project / "indexes" / "sample" / "CURRENT").read_text()

    rebuild = subprocess.Popen(
        ["colbert-pipeline", "index", "--params", str(project / "params.yaml"), *_sets(settings)],
        cwd=project, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    answers: dict[str, list[subprocess.CompletedProcess]] = {query: [] for query in queries}

    def searcher(query: str) -> None:
        while True:
            running = rebuild.poll() is None
            answers[query].append(_search(project, env, query))
            if not running:
                return

    threads = [threading.Thread(target=searcher, args=(query,)) for query in queries]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(900)
    _, stderr = rebuild.communicate(timeout=600)
    assert rebuild.returncode == 0, stderr[-2000:]
    assert (project / "indexes" / "sample" / "CURRENT").read_text() != live_before  # it did rebuild
    for query, results in answers.items():
        assert len(results) >= 2, f"{query}: no answer overlapped the rebuild"
        for result in results:
            assert result.returncode == 0, result.stderr[-2000:]
            assert result.stdout == expected[query].stdout
    count = sum(map(len, answers.values()))
    print(f"\nsearches during the rebuild: {count}, all identical to the answers before it, errors 0")
