"""``colbert-pipeline serve`` for real: uvicorn on a free 127.0.0.1 port, a registry on SQLite, real versions.

The module registers two versions of the tiny search project (tests/search_project.py); each test points
``champion`` where it needs and starts its own server (in a thread, or as a ``colbert-pipeline serve``
process that the test always stops), polling the alias every 0.2 s.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest

from pipeline.ops import server as serving_server
from pipeline.ops.follower import AliasFollower
from pipeline.ops.scoring import Limits
from tests.mlflow_server import free_port
from tests.search_project import sqlite_registry

MODEL = "served-animals"
POLL = 0.2
FALCON = "The falcon lives in the cliffs."
GOOD = {"dataframe_split": {"columns": ["query"], "data": [[FALCON]]}, "params": {"k": 3}}


@pytest.fixture(scope="module")
def registry(module_tmp_path: Path, saved_colbert: Path) -> Iterator[SimpleNamespace]:
    """A SQLite registry holding versions 1 and 2 of ``served-animals`` (same model and index)."""
    with sqlite_registry(module_tmp_path, saved_colbert, MODEL, versions=2) as registry:
        yield registry


def _champion(registry: SimpleNamespace, version: str) -> None:
    registry.client.set_registered_model_alias(MODEL, "champion", version)


class Running:
    """A :class:`serving_server.ScoringApp` on uvicorn in a thread; :meth:`stop` drains it like SIGTERM."""

    def __init__(self, registry: SimpleNamespace, **settings) -> None:
        self.settings = serving_server.ServeSettings(
            model_name=MODEL, port=free_port(), tracking_uri=registry.uri, poll_seconds=POLL, **settings
        )
        self.scoring = serving_server.ScoringApp(self.settings)
        self.server = serving_server.uvicorn_server(self.scoring)
        self.url = f"http://127.0.0.1:{self.settings.port}"
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self, timeout: float = 180.0) -> Running:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/ping", timeout=5).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"the server did not load a version within {timeout} s")

    def stop(self) -> None:
        self.server.should_exit = True  # what uvicorn's SIGTERM handler does
        self.thread.join(60)
        assert not self.thread.is_alive()


@pytest.fixture()
def running(registry: SimpleNamespace) -> Iterator[Running]:
    _champion(registry, registry.versions[0])
    server = Running(registry).start()
    try:
        yield server
    finally:
        server.stop()


def _ask(client: httpx.Client, body: dict | None = None) -> tuple[int, dict]:
    response = client.post("/invocations", json=GOOD if body is None else body, timeout=60)
    return response.status_code, response.json()


# ------------------------------------------------------------------------------------------ following
def test_a_moved_alias_is_followed_with_no_failed_request(registry, running) -> None:
    v1, v2 = registry.versions
    status, body = _ask(httpx.Client(base_url=running.url))
    assert (status, body["model_version"], body["model"]) == (200, v1, MODEL)
    old = running.scoring.follower.current
    released = weakref.ref(old.model.unwrap_python_model().model)  # version 1's torch model
    old_folder = old.folder
    del old

    answers: list[tuple[float, int, str | None]] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def client_loop() -> None:
        with httpx.Client(base_url=running.url) as client:
            while not stop.is_set():
                try:
                    response = client.post("/invocations", json=GOOD, timeout=60)
                    answers.append(
                        (time.monotonic(), response.status_code, response.json().get("model_version"))
                    )
                except Exception as error:  # a transport failure is a failed request too
                    errors.append(error)

    clients = [threading.Thread(target=client_loop) for _ in range(4)]
    for thread in clients:
        thread.start()
    try:
        time.sleep(1.0)
        moved = time.monotonic()
        _champion(registry, v2)
        deadline = moved + 120
        while time.monotonic() < deadline and not any(v == v2 for _, _, v in answers):
            time.sleep(0.1)
        switched = next((t for t, _, v in answers if v == v2), None)
        time.sleep(1.0)  # and a while after the switch
    finally:
        stop.set()
        for thread in clients:
            thread.join(60)
    assert not errors, errors[:3]
    assert answers and all(status == 200 for _, status, _ in answers), [a for a in answers if a[1] != 200][:3]
    assert switched is not None, "no answer named version 2 within 120 s of the move"
    assert any(t < moved and v == v1 for t, _, v in answers)  # version 1 answered while the clients ran
    assert all(v == v2 for t, _, v in answers if t > switched + 0.5)
    # Version 1 is released: its model object is collected and its download folder removed.
    deadline = time.monotonic() + 30
    while released() is not None and time.monotonic() < deadline:
        gc.collect()
        time.sleep(0.2)
    assert released() is None, gc.get_referrers(released())[:3]
    assert not old_folder.exists()
    health = httpx.get(f"{running.url}/health").json()
    assert (health["model_version"], health["registry_reachable"]) == (v2, True)


def _register_broken(registry: SimpleNamespace, module_tmp_path: Path) -> str:
    """A version whose artifact is no loadable model (its loader module does not exist)."""
    import mlflow

    folder = module_tmp_path / "broken"
    folder.mkdir(exist_ok=True)
    (folder / "MLmodel").write_text(
        "flavors:\n  python_function:\n    loader_module: colbert_no_such_loader\n"
        '    python_version: "3.11"\n'
    )
    mlflow.set_tracking_uri(registry.uri)
    mlflow.set_experiment("search-project")
    with mlflow.start_run() as run:
        mlflow.log_artifacts(str(folder), "broken")
    return str(mlflow.register_model(f"runs:/{run.info.run_id}/broken", MODEL).version)


def test_a_version_that_fails_to_load_is_not_switched_to_and_an_outage_is_logged_once(
    registry, running, module_tmp_path, caplog, monkeypatch
) -> None:
    caplog.set_level(logging.INFO, logger="pipeline.ops.follower")
    client = httpx.Client(base_url=running.url)
    v1 = registry.versions[0]
    broken = _register_broken(registry, module_tmp_path)
    _champion(registry, broken)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and broken not in running.scoring.follower._failed:
        assert _ask(client)[1]["model_version"] == v1
        time.sleep(0.1)
    failures = [r for r in caplog.records if "failed to load or warm up" in r.getMessage()]
    assert len(failures) == 1 and f"v{broken} of {MODEL}" in failures[0].getMessage()
    assert "colbert_no_such_loader" in failures[0].getMessage()  # the cause is named
    assert f"v{v1} keeps serving" in failures[0].getMessage()
    for _ in range(10):  # polls go on; the failed version is not tried again at once, nor logged again
        assert _ask(client)[1]["model_version"] == v1
        time.sleep(POLL)
    assert len([r for r in caplog.records if "failed to load" in r.getMessage()]) == 1

    # The registry goes away: the loaded version keeps answering, one warning for the whole outage.
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    follower: AliasFollower = running.scoring.follower
    follower._tracking_uri = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    polls_before = follower.last_poll
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and (follower.registry_reachable or follower.last_poll == polls_before):
        time.sleep(0.1)
    assert not follower.registry_reachable
    assert httpx.get(f"{running.url}/health").json()["registry_reachable"] is False
    for _ in range(10):
        assert _ask(client)[0] == 200
        time.sleep(POLL)
    follower._tracking_uri = registry.uri
    _champion(registry, v1)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not follower.registry_reachable:
        time.sleep(0.1)
    messages = [r.getMessage() for r in caplog.records]
    assert len([m for m in messages if m.startswith("registry unreachable")]) == 1, messages
    assert len([m for m in messages if m.startswith("registry reachable again")]) == 1, messages


# ------------------------------------------------------------------------------------------ requests
def _big(size: int) -> bytes:
    return json.dumps({"inputs": ["x" * size]}).encode()


def _chunks(body: bytes) -> Iterator[bytes]:
    for start in range(0, len(body), 65536):
        yield body[start : start + 65536]


BAD_REQUESTS = [
    ("not JSON", b"{not json", 400, "not JSON"),
    ("empty body", b"", 400, "not JSON"),
    ("a JSON list", b"[1, 2]", 400, "expected a JSON object"),
    ("no input key", {"data": [["q"]]}, 400, "expected exactly one of"),
    ("two input keys", {"inputs": ["q"], "instances": ["q"]}, 400, "expected exactly one of"),
    (
        "no query column",
        {"dataframe_split": {"columns": ["text"], "data": [["q"]]}},
        400,
        "no 'query' column",
    ),
    ("records without query", {"dataframe_records": [{"text": "q"}]}, 400, "no 'query'"),
    ("ragged row", {"dataframe_split": {"columns": ["query"], "data": [["q", "extra"]]}}, 400, "data row 0"),
    ("no queries", {"inputs": []}, 400, "no queries"),
    ("empty query", {"inputs": [""]}, 400, "query 0 is empty"),
    ("blank query", {"dataframe_records": [{"query": "ok"}, {"query": "   "}]}, 400, "query 1 is empty"),
    ("number as query", {"inputs": [42]}, 400, "query 0 is int, not a string"),
    ("null query", {"dataframe_split": {"columns": ["query"], "data": [[None]]}}, 400, "query 0 is null"),
    ("k zero", {"inputs": ["q"], "params": {"k": 0}}, 400, "k: must be at least 1, got 0"),
    ("k negative", {"inputs": ["q"], "params": {"k": -3}}, 400, "k: must be at least 1, got -3"),
    ("k a string", {"inputs": ["q"], "params": {"k": "5"}}, 400, "k: expected an integer"),
    ("k a fraction", {"inputs": ["q"], "params": {"k": 2.5}}, 400, "k: expected an integer"),
    ("k a bool", {"inputs": ["q"], "params": {"k": True}}, 400, "k: expected an integer"),
    ("k absurd", {"inputs": ["q"], "params": {"k": 10**12}}, 400, "over this server's max_k of 1000"),
    ("unknown param", {"inputs": ["q"], "params": {"top": 3}}, 400, "params: unknown ['top']"),
    ("too many queries", {"inputs": ["q"] * 257}, 400, "257 queries, over this server's 256"),
    ("body over 1 MiB", _big(1 << 20), 413, "over this server's limit of 1048576"),
    ("chunked body over 1 MiB", ("chunked", _big(1 << 20)), 413, "over this server's limit of 1048576"),
]


def test_each_bad_request_gets_its_4xx_then_a_good_answer(running) -> None:
    with httpx.Client(base_url=running.url, timeout=60) as client:
        for name, body, status, message in BAD_REQUESTS:
            if isinstance(body, tuple):  # no Content-Length: the limit holds while reading
                response = client.post("/invocations", content=_chunks(body[1]))
            elif isinstance(body, bytes):
                response = client.post("/invocations", content=body)
            else:
                response = client.post("/invocations", json=body)
            assert response.status_code == status, (name, response.text)
            assert message in response.json()["message"], (name, response.text)
            good = client.post("/invocations", json=GOOD)
            assert good.status_code == 200, (name, good.text)
            assert good.json()["predictions"][0]["ids"][0] == "d5a", name
        assert client.get("/invocations").status_code == 405
        assert client.post("/nothing-here", json=GOOD).status_code == 404


def test_every_input_format_gets_the_same_answer_and_large_k_and_long_queries_are_bounded(running) -> None:
    formats = [
        GOOD,
        {"dataframe_records": [{"query": FALCON}], "params": {"k": 3}},
        {"inputs": [FALCON], "params": {"k": 3}},
        {"inputs": {"query": [FALCON]}, "params": {"k": 3}},
        {"instances": [{"query": FALCON}], "params": {"k": 3}},
    ]
    with httpx.Client(base_url=running.url, timeout=60) as client:
        answers = [_ask(client, body) for body in formats]
        assert {status for status, _ in answers} == {200}
        rows = [body["predictions"] for _, body in answers]
        assert all(row == rows[0] for row in rows)
        (row,) = rows[0]
        assert row["query"] == FALCON and row["ids"][0] == "d5a" and row["texts"][0] == FALCON
        assert len(row["ids"]) == len(row["scores"]) == len(row["texts"]) == 3
        # No k: the version's default (register.k at registration: 4 here).
        assert len(_ask(client, {"inputs": [FALCON]})[1]["predictions"][0]["ids"]) == 4
        # k within max_k but above the index's 30 documents: clamped; PLAID's candidates, each once.
        status, body = _ask(client, {"inputs": [FALCON], "params": {"k": 1000}})
        (row,) = body["predictions"]
        assert status == 200 and row["ids"][0] == "d5a" and len(set(row["ids"])) == len(row["ids"]) <= 30
        assert row["scores"] == sorted(row["scores"], reverse=True)
        # A query past the model's 32 tokens is truncated as the model does: words past it change nothing.
        filler = " and also about many other animals"
        short, long = FALCON + filler * 8, FALCON + filler * 3000
        assert len(short.split()) > 40 and len(long.encode()) < 1 << 20  # both past 32 tokens
        (a,), (b,) = (
            _ask(client, {"inputs": [q], "params": {"k": 5}})[1]["predictions"] for q in (short, long)
        )
        assert (a["ids"], a["scores"]) == (b["ids"], b["scores"])
        # Several queries in one request: one row each, in order.
        status, body = _ask(client, {"inputs": ["The walrus eats clams.", FALCON], "params": {"k": 2}})
        assert [row["ids"][0] for row in body["predictions"]] == ["d9b", "d5a"]


def test_concurrent_requests_are_batched_and_each_gets_its_own_k(running) -> None:
    queries = [
        ("The walrus mostly eats clams.", "d9b", 1),
        (FALCON, "d5a", 3),
        ("The koala mostly eats gum leaves.", "d3b", 5),
    ]
    results: list[tuple[str, int, dict]] = []

    def ask(query: str, k: int) -> None:
        with httpx.Client(base_url=running.url, timeout=60) as client:
            for _ in range(5):
                status, body = _ask(client, {"inputs": [query], "params": {"k": k}})
                results.append((query, status, body))

    threads = [threading.Thread(target=ask, args=(q, k)) for q, _, k in queries for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert len(results) == 45 and {status for _, status, _ in results} == {200}
    expected = {q: (top, k) for q, top, k in queries}
    for query, _, body in results:
        (row,) = body["predictions"]
        assert (row["ids"][0], len(row["ids"]), len(row["texts"])) == (
            expected[query][0],
            expected[query][1],
            expected[query][1],
        )
    worker = running.scoring.worker
    assert worker.batched_queries >= 45 and worker.batches < worker.batched_queries  # some were batched


# ------------------------------------------------------------------------------------------ the command
def test_the_command_serves_and_sigterm_drains_requests_in_flight(registry, tmp_path) -> None:
    _champion(registry, registry.versions[0])
    port = free_port()
    scratch = tmp_path / "tmp"  # where the served version is downloaded (TMPDIR)
    scratch.mkdir()
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": registry.uri,
        "COLBERT_PIPELINE_MODEL_NAME": MODEL,
        "TMPDIR": str(scratch),
    }
    log = (tmp_path / "serve.log").open("w")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pipeline",
            "serve",
            "--port",
            str(port),
        ],  # no params.yaml in tmp_path: the defaults (a --params naming a missing file is refused)
        cwd=tmp_path,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and process.poll() is None:
            try:
                if httpx.get(f"{url}/ping", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.5)
        assert httpx.get(f"{url}/ping", timeout=5).status_code == 200, (tmp_path / "serve.log").read_text()[
            -3000:
        ]
        assert len(list(scratch.glob("colbert-serve-*"))) == 1  # the served version's files
        results: list[int | str] = []
        queries = [f"{FALCON} number {i}" for i in range(34)]  # over --max-batch: one batch per request

        def ask() -> None:
            try:
                response = httpx.post(f"{url}/invocations", json={"inputs": queries}, timeout=120)
                results.append(response.status_code)
            except Exception as error:
                results.append(repr(error))

        threads = [threading.Thread(target=ask) for _ in range(8)]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # every request received (some maybe answered already)
            health = httpx.get(f"{url}/health", timeout=10).json()
            if health["received"] == len(threads):
                break
            time.sleep(0.05)
        assert health["received"] == len(threads) and health["in_flight"] > 0, health
        process.send_signal(signal.SIGTERM)
        for thread in threads:
            thread.join(120)
        process.wait(60)
        assert results == [200] * 8, (results, (tmp_path / "serve.log").read_text()[-3000:])
        assert process.returncode in (0, -signal.SIGTERM)
        assert "requests drained" in (tmp_path / "serve.log").read_text()
        # uvicorn ends the process by re-raising SIGTERM, past any exit handler: shutdown removed the files.
        assert not list(scratch.glob("colbert-serve-*"))
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(30)
        log.close()


# ------------------------------------------------------------------------------------------ no server
def test_the_worker_batches_what_waits_and_cuts_each_answer_to_its_k() -> None:
    from pipeline.ops.scoring import ScoringRequest

    calls: list[tuple[list[str], int]] = []
    gate = threading.Event()

    class Fake:
        version, name, default_k, documents = "7", MODEL, 2, 30

        def predict(self, queries: list[str], k: int) -> list[dict]:
            gate.wait(10)
            calls.append((queries, k))
            return [{"query": q, "ids": [f"{q}{i}" for i in range(k)], "scores": [1.0] * k} for q in queries]

    follower = SimpleNamespace(current=Fake(), name=MODEL, alias="champion")
    worker = serving_server.InferenceWorker(follower, batching=True, max_batch=4)
    worker.start()
    try:
        first = worker.submit(ScoringRequest(["a"], 1))  # taken alone, waits at the gate
        time.sleep(0.2)
        rest = [worker.submit(ScoringRequest([q], k)) for q, k in (("b", 3), ("c", None), ("d", 1), ("e", 1))]
        gate.set()
        answers = [future.result(10) for future in [first, *rest]]
    finally:
        worker.stop()
    assert calls == [(["a"], 1), (["b", "c", "d", "e"], 3)]
    assert [len(a.rows[0]["ids"]) for a in answers] == [1, 3, 2, 1, 1]
    assert {a.version for a in answers} == {"7"}


def test_limits_are_settings_and_the_command_says_their_defaults(monkeypatch) -> None:
    from pipeline import cli

    limits = Limits()
    assert (limits.max_body_bytes, limits.max_k, limits.max_queries) == (1 << 20, 1000, 256)
    settings = serving_server.ServeSettings(model_name="m")
    assert (settings.host, settings.poll_seconds, settings.batching) == ("127.0.0.1", 10.0, True)
    monkeypatch.delenv("COLBERT_PIPELINE_BIND_HOST", raising=False)
    parser = cli.build_parser()
    args = parser.parse_args(["serve"])
    assert (args.host, args.alias, args.poll_seconds, args.batching) == ("127.0.0.1", "champion", 10.0, True)
    serve_help = parser._subparsers._group_actions[0].choices["serve"].format_help()
    for value in (limits.max_body_bytes, limits.max_k, limits.max_queries):
        assert f"default: {value}" in serve_help


def test_search_settings_are_fitted_to_one_query_and_to_a_batch() -> None:
    from pipeline.indexes.search_settings import SearchSettings
    from pipeline.ops.follower import LoadedVersion
    from pipeline.ops.search_fit import fit_search

    clock = [0.0]
    seconds = {("plaid", 1): 0.5, ("exact", 1): 0.1, ("plaid", 8): 0.8, ("exact", 8): 1.6}  # per call
    tuned = SearchSettings(n_ivf_probe=16, n_full_scores=512, rerank=16)
    index = SimpleNamespace(search_settings=tuned, _embeddings=object())

    def retrieve(queries: list, k: int, show_progress: bool) -> None:
        clock[0] += seconds[(index.search_settings.mode, len(queries))]

    retriever = SimpleNamespace(index=index, retrieve=retrieve)
    fit = fit_search(retriever, ["q1", "q2"], batch=8, timer=lambda: clock[0])
    assert (fit.single.mode, fit.batch) == ("exact", tuned)  # exact alone, PLAID for a batch
    assert fit.timings_ms == {
        "single_tuned": 500.0,
        "single_exact": 100.0,
        "batch_tuned": 100.0,
        "batch_exact": 200.0,
    }
    assert index.search_settings is tuned  # left as it was
    # What a loaded version searches with follows the size of each prediction.
    model = SimpleNamespace(unwrap_python_model=lambda: SimpleNamespace(retriever=retriever))
    loaded = LoadedVersion("m", "1", model, documents=10, default_k=2, folder=Path("."), search_fit=fit)
    loaded.prepare(1)
    assert index.search_settings.mode == "exact"
    loaded.prepare(5)
    assert index.search_settings is tuned
    # No choice to make: no stored embeddings to score exactly with, or already exact.
    assert (
        fit_search(SimpleNamespace(index=SimpleNamespace(search_settings=tuned, _embeddings=None)), ["q"], 8)
        is None
    )
    exact = SimpleNamespace(search_settings=SearchSettings(mode="exact"), _embeddings=object())
    assert fit_search(SimpleNamespace(index=exact), ["q"], 8) is None
