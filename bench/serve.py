"""``python -m bench.serve`` (``make bench-serve``): ``colbert-pipeline serve`` under load, on loopback.

A tiny champion is built once (cached in ``bench/.cache/serve/``; ``--rebuild`` builds it again): the
offline MiniLM ColBERT (untrained, seeded), SciFact's first ``--docs`` documents indexed by the index stage
itself (``colbert-pipeline index``, so the served index has the search settings the tuner picks), logged
and registered in a SQLite registry as ``bench-serve@champion``. Then two servers, batching off and on, run
as processes of their own (``colbert-pipeline serve``) and an async client (httpx) asks SciFact's test
queries at concurrency 1, 4 and 16, both servers in turn at each level (so the machine's drifting load
falls on both alike), each level bounded by ``--requests`` and ``--seconds``: requests/s, p50/p95/p99
latency, errors, and the mean batch the server formed. With batching on (the default), the
server's RSS is read before the first request and after ``--rss-requests`` requests in all (sampled on the
way). Last, in this process and with no server running, one query's time is split into encoding, search
and the rest of the pyfunc, alone and in a batch of 16: what bounds the latency; and the search settings
the server fits to each size (the index's tuned ones or exact MaxSim, :mod:`pipeline.ops.search_fit`).

The client shares the machine's cores with the server: on 2 cores it takes part of them, so the numbers
are the pair's. Writes ``bench/records/serve_load.json`` (``--record``); ``python -m bench.render`` shows it.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import CACHE, DATA, RECORDS, command_line, environment, setup_logging, write_record

MODEL = "bench-serve"
WORK = CACHE / "serve"
LEVELS = (1, 4, 16)
K = 10


# ------------------------------------------------------------------------------------------ the champion
def _scifact_subset(folder: Path, docs: int) -> Path:
    """SciFact cut to ``docs`` documents: those its test queries are judged on, then the corpus in order.

    The index stage tunes on the folder's test queries, whose judged documents must all be in the corpus.
    """
    source = DATA / "scifact"
    if not (source / "corpus.jsonl.gz").is_file():
        raise SystemExit(f"{source}: SciFact not found (../shared/data beside the checkout)")
    qrels = (source / "qrels" / "test.tsv").read_text().splitlines()
    judged = {line.split("\t")[1] for line in qrels[1:] if line.strip()}
    with gzip.open(source / "corpus.jsonl.gz", "rt", encoding="utf-8") as stream:
        lines = stream.readlines()
    first = [line for line in lines if json.loads(line)["_id"] in judged]
    rest = [line for line in lines if json.loads(line)["_id"] not in judged]
    if docs < len(first):
        raise SystemExit(f"--docs {docs}: SciFact's test queries are judged on {len(first)} documents")
    target = folder / "scifact"
    (target / "qrels").mkdir(parents=True, exist_ok=True)
    (target / "corpus.jsonl").write_text("".join(first + rest[: docs - len(first)]), encoding="utf-8")
    shutil.copy(source / "queries.jsonl", target / "queries.jsonl")
    shutil.copy(source / "qrels" / "test.tsv", target / "qrels" / "test.tsv")
    return target


def _env(work: Path) -> dict[str, str]:
    return {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'registry.db'}", "HF_HUB_OFFLINE": "1"}


def build_champion(work: Path, docs: int, rebuild: bool) -> dict[str, Any]:
    """The cached champion's description, building it first when absent (or ``rebuild``)."""
    marker = work / "champion.json"
    if marker.is_file() and not rebuild:
        described = json.loads(marker.read_text())
        if described.get("documents") == docs:
            return described
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    import torch

    from pipeline import models

    torch.manual_seed(0)
    models.ColBERT(device="cpu").save_pretrained(str(work / "models" / "colbert"))
    corpus = _scifact_subset(work, docs)
    (work / "params.yaml").write_text(f"index:\n  name: bench\n  corpus: {corpus}\n")
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "pipeline", "index", "--params", str(work / "params.yaml")],
        cwd=work,
        env=_env(work),
        check=True,
    )
    built_s = time.perf_counter() - started
    version = _register(work)
    search = json.loads((work / "indexes" / "bench" / "search.json").read_text())
    described = {
        "documents": docs,
        "corpus": f"{docs} SciFact documents (those its test queries are judged on, then the first others)",
        "model": "offline all-MiniLM-L6-v2 ColBERT, untrained (seed 0)",
        "version": version,
        "index_stage_s": round(built_s, 1),
        "search_settings": search.get("settings"),
    }
    marker.write_text(json.dumps(described, indent=2))
    return described


def _register(work: Path) -> str:
    import mlflow

    from pipeline.ops import serving

    mlflow.set_tracking_uri(_env(work)["MLFLOW_TRACKING_URI"])
    mlflow.set_experiment("bench-serve")
    with mlflow.start_run():
        info = serving.log_search_model(work / "models" / "colbert", work / "indexes" / "bench", k=K)
    version = str(mlflow.register_model(info.model_uri, MODEL).version)
    mlflow.MlflowClient().set_registered_model_alias(MODEL, "champion", version)
    return version


def load_queries(limit: int = 300) -> list[str]:
    """SciFact's test queries (those with judgements), in file order."""
    judged = {
        line.split("\t")[0] for line in (DATA / "scifact" / "qrels" / "test.tsv").read_text().splitlines()[1:]
    }
    rows = [json.loads(line) for line in (DATA / "scifact" / "queries.jsonl").read_text().splitlines()]
    return [row["text"] for row in rows if row["_id"] in judged][:limit]


# ------------------------------------------------------------------------------------------ the server
def _die_with_us() -> None:
    """In the server's process, before exec: it gets SIGTERM when this process ends (Linux)."""
    import ctypes

    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    """``colbert-pipeline serve`` as a child process on a free loopback port; stopped with SIGTERM."""

    def __init__(self, work: Path, batching: bool) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        command = [sys.executable, "-m", "pipeline", "serve", "--port", str(self.port), "--model", MODEL]
        command += ["--poll-seconds", "3600", "--params", str(work / "params.yaml")]
        command += ["--batching" if batching else "--no-batching"]
        self.log = open(work / f"serve-{'batching' if batching else 'single'}.log", "w")  # noqa: SIM115
        self.process = subprocess.Popen(
            command,
            cwd=work,
            env=_env(work),
            stdout=self.log,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_us if sys.platform == "linux" else None,
        )

    def wait_ready(self, timeout: float = 600.0) -> None:
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"the server exited ({self.process.returncode}); see {self.log.name}")
            try:
                if httpx.get(f"{self.url}/ping", timeout=5).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        raise SystemExit(f"the server did not load the champion within {timeout:.0f} s; see {self.log.name}")

    def rss_mib(self) -> float:
        import psutil

        return psutil.Process(self.process.pid).memory_info().rss / 2**20

    def health(self) -> dict[str, Any]:
        import httpx

        return httpx.get(f"{self.url}/health", timeout=30).json()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(30)
        self.log.close()


# ------------------------------------------------------------------------------------------ the client
def percentile(values: list[float], q: float) -> float | None:
    """Linear interpolation between closest ranks (as numpy's default); ``None`` for no values."""
    if not values:
        return None
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


async def _load(
    url: str, queries: list[str], concurrency: int, requests: int, seconds: float
) -> dict[str, Any]:
    """``concurrency`` clients asking one query each per request until ``requests`` or ``seconds``."""
    import httpx

    latencies: list[float] = []
    errors: list[str] = []
    issued = 0
    deadline = time.monotonic() + seconds

    async def client(http: httpx.AsyncClient) -> None:
        nonlocal issued
        while issued < requests and time.monotonic() < deadline:
            query = queries[issued % len(queries)]
            issued += 1
            body = {"dataframe_split": {"columns": ["query"], "data": [[query]]}, "params": {"k": K}}
            started = time.perf_counter()
            try:
                response = await http.post("/invocations", json=body)
                if response.status_code != 200 or not response.json()["predictions"][0]["ids"]:
                    errors.append(f"HTTP {response.status_code}: {response.text[:200]}")
                    continue
            except httpx.HTTPError as error:
                errors.append(f"{type(error).__name__}: {error}")
                continue
            latencies.append((time.perf_counter() - started) * 1000)

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as http:
        started = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return {
        "concurrency": concurrency,
        "requests": len(latencies) + len(errors),
        "errors": len(errors),
        "error_examples": errors[:3],
        "seconds": round(elapsed, 2),
        "rps": round(len(latencies) / elapsed, 2),
        **{f"p{q}_ms": _round(percentile(latencies, q)) for q in (50, 95, 99)},
        "mean_ms": _round(sum(latencies) / len(latencies) if latencies else None),
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def run_level(server: Server, queries: list[str], args: argparse.Namespace, concurrency: int) -> dict:
    """One concurrency level against ``server``: its numbers and the mean batch the server formed."""
    before = server.health()
    row = asyncio.run(_load(server.url, queries, concurrency, args.requests, args.seconds))
    after = server.health()
    batches = after["batches"] - before["batches"]
    row["mean_batch"] = round((after["batched_queries"] - before["batched_queries"]) / max(batches, 1), 2)
    row["batching"] = after["batching"]
    print(json.dumps(row), file=sys.stderr, flush=True)
    return row


def rss_run(server: Server, queries: list[str], args: argparse.Namespace, sent: int, before: float) -> dict:
    """Requests at concurrency 16 until ``--rss-requests`` in all (or ``--rss-seconds``); RSS sampled."""
    samples = [[sent, round(server.rss_mib(), 1)]]
    deadline = time.monotonic() + args.rss_seconds
    errors = 0
    while sent < args.rss_requests and time.monotonic() < deadline:
        chunk = min(1000, args.rss_requests - sent)
        row = asyncio.run(_load(server.url, queries, 16, chunk, max(1.0, deadline - time.monotonic())))
        sent += row["requests"]
        errors += row["errors"]
        samples.append([sent, round(server.rss_mib(), 1)])
    after = samples[-1][1]
    return {
        "batching": True,
        "requests": sent,
        "errors": errors,
        "before_mib": round(before, 1),
        "after_mib": after,
        "growth_mib": round(after - before, 1),
        "samples": samples,
        "reached_target": sent >= args.rss_requests,
    }


# ------------------------------------------------------------------------------------------ in process
def _timed_predict(loaded: Any, queries: list[str]) -> dict[str, float]:
    """One prediction through the whole pyfunc, its encoding and search timed inside it; seconds."""
    inner = loaded.model.unwrap_python_model()
    spent = {"encode": 0.0, "search": 0.0}

    def timed(name: str, function: Any) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                spent[name] += time.perf_counter() - started

        return wrapper

    inner.model.encode = timed("encode", inner.model.encode)
    inner.retriever.retrieve = timed("search", inner.retriever.retrieve)
    try:
        started = time.perf_counter()
        rows = loaded.predict(queries, K)  # encode, search, the answer's DataFrame and texts
        predicted = time.perf_counter()
        json.dumps({"predictions": rows, "model_version": loaded.version})
        done = time.perf_counter()
    finally:
        del inner.model.encode, inner.retriever.retrieve  # the class's own methods again
    return {**spent, "pyfunc": predicted - started, "json": done - predicted}


def breakdown(work: Path, version: str, queries: list[str], repeats: int) -> dict[str, Any]:
    """Where one query's time goes in the served model, alone and in a batch of 16 (ms per query).

    The machine is shared: of ``repeats`` calls, the fastest is reported whole (its parts add up), with
    the median call's total beside it.
    """
    from pipeline.ops.follower import load_version

    loaded = load_version(MODEL, version, _env(work)["MLFLOW_TRACKING_URI"], batch=16)  # as the server does
    inner = loaded.model.unwrap_python_model()
    result: dict[str, Any] = {
        "precision": str(inner.model.encode_precision),
        "search_fit": loaded.search_fit.describe() if loaded.search_fit else None,
        "repeats": repeats,
    }
    for label, size in (("single", 1), ("batch16", 16)):
        calls = [
            _timed_predict(loaded, [queries[(repeat * size + i) % len(queries)] for i in range(size)])
            for repeat in range(repeats)
        ]
        calls.sort(key=lambda call: call["pyfunc"])
        best = calls[0]
        row = {f"{name}_ms": round(seconds * 1000 / size, 2) for name, seconds in best.items()}
        row["other_ms"] = round(row["pyfunc_ms"] - row["encode_ms"] - row["search_ms"], 2)
        row["median_pyfunc_ms"] = round(calls[len(calls) // 2]["pyfunc"] * 1000 / size, 2)
        result[label] = row
    return result


# ------------------------------------------------------------------------------------------ main
def measure(work: Path, queries: list[str], args: argparse.Namespace) -> tuple[list[dict], dict]:
    """Two servers, batching off and on, asked in turn at each level (the machine's load drifts alike for
    both); then the RSS run against the batching one. Both are stopped at the end."""
    servers = {batching: Server(work, batching) for batching in (False, True)}
    try:
        for server in servers.values():
            server.wait_ready()
        before = servers[True].rss_mib()
        warm = {batching: asyncio.run(_load(s.url, queries, 1, 20, 120)) for batching, s in servers.items()}
        sent = warm[True]["requests"]
        rows = [
            run_level(servers[batching], queries, args, concurrency)
            for concurrency in args.concurrency
            for batching in (False, True)
        ]
        rss = {}
        if args.rss_requests:
            sent += sum(row["requests"] for row in rows if row["batching"])
            rss = rss_run(servers[True], queries, args, sent, before)
            print(json.dumps(rss), file=sys.stderr, flush=True)
        return rows, rss
    finally:
        for server in servers.values():
            server.stop()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=int, default=1000, help="SciFact documents indexed (default 1000)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=list(LEVELS))
    parser.add_argument("--requests", type=int, default=600, help="requests per level at most")
    parser.add_argument("--seconds", type=float, default=60.0, help="seconds per level at most")
    parser.add_argument("--rss-requests", type=int, default=10_000, help="requests before RSS is read again")
    parser.add_argument("--rss-seconds", type=float, default=600.0, help="seconds the RSS run may take")
    parser.add_argument("--repeats", type=int, default=30, help="in-process timings per breakdown row")
    parser.add_argument("--rebuild", action="store_true", help="build the cached champion again")
    parser.add_argument("--work", type=Path, default=WORK)
    parser.add_argument("--record", type=Path, default=RECORDS / "serve_load.json")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    setup_logging()
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not a line per request
    env = environment()
    champion = build_champion(args.work.resolve(), args.docs, args.rebuild)
    queries = load_queries()
    runs, rss = measure(args.work.resolve(), queries, args)
    split = breakdown(args.work.resolve(), champion["version"], queries, args.repeats)
    p95 = {row["batching"]: row["p95_ms"] for row in runs if row["concurrency"] == max(args.concurrency)}
    record = {
        "benchmark": "serve_load",
        "environment": env,
        "command": command_line("bench.serve", argv),
        "champion": champion,
        "settings": {"requests_per_level": args.requests, "seconds_per_level": args.seconds, "k": K},
        "runs": runs,
        "rss": rss,
        "breakdown": split,
        "batching": {
            "p95_ms_at_max_concurrency": {"off": p95.get(False), "on": p95.get(True)},
            "lowers_p95": None if None in p95.values() else p95[True] < p95[False],
        },
    }
    print(write_record(args.record, record))


if __name__ == "__main__":
    main()
