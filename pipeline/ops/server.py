"""``colbert-pipeline serve``: a registry alias's version over MLflow's scoring protocol, following the alias.

A small ASGI app (Starlette) on uvicorn, the server ``mlflow models serve`` itself runs on:

- ``POST /invocations``: the bodies MLflow's scoring server accepts (:mod:`pipeline.ops.scoring`); the answer
  is ``{"predictions": [{"query", "ids", "scores", "texts"}, ...], "model_version": "3", "model": NAME}``
  (and the header ``X-Model-Version``). A bad request gets a 4xx and ``{"error_code", "message"}``;
- ``GET /ping``: 200 once a version is loaded, 503 before (what a load balancer or compose checks);
- ``GET /health``: the same status, with the version served, its load time and the registry's state.

**Following the alias**: :class:`~pipeline.ops.follower.AliasFollower` polls the registry every
``poll_seconds`` and switches to a moved alias's version once it has loaded and answered a query beside the
old one; no request fails or waits for a load. **One inference thread** runs every prediction: on 2 cores
torch already uses every core for one batch, and concurrent predictions would only contend.
**Batching** (``batching=True``, the default; ``--no-batching``): when that thread comes free it takes every
waiting request (up to ``max_batch`` queries) and encodes and searches them as one batch. It adds no wait
(at concurrency 1 a batch is one query, asked alone) and, measured at concurrency 16 on the bench's tiny
champion (``bench/records/serve_load.json``, ``python -m bench.serve``), lowers p95 latency (2.7 s to 1.5 s
on a loaded 2-core machine).
**Search settings fit how the server asks**: a version is searched with its index's tuned settings or exact
MaxSim, whichever its warm-up measured faster for one query and for a batch (:mod:`pipeline.ops.search_fit`).
**Shutdown**: on SIGTERM uvicorn stops accepting, waits up to ``drain_seconds`` for the requests in flight
(the inference thread keeps answering them), then the thread and the poller stop.

Used as (it serves until stopped, so it is not a doctest; ``colbert-pipeline serve`` does this, and
tests/ops/test_serve.py runs it as a process)::

    serve(ServeSettings(model_name="colbert-pipeline", port=5001))
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import logging
import queue
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.ops.follower import AliasFollower, LoadedVersion
from pipeline.ops.scoring import BadRequest, Limits, ScoringRequest, parse_request, too_large

logger = logging.getLogger(__name__)

DEFAULT_PORT = 5001


@dataclass(frozen=True)
class ServeSettings:
    """How ``colbert-pipeline serve`` runs (its command-line options)."""

    model_name: str
    alias: str = "champion"
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    tracking_uri: str | None = None
    #: Seconds between two questions to the registry about the alias.
    poll_seconds: float = 10.0
    limits: Limits = field(default_factory=Limits)
    batching: bool = True
    #: Queries encoded together at most (several requests' when batching).
    max_batch: int = 32
    #: Requests waiting for the inference thread at most; beyond, 503 at once (back pressure).
    max_pending: int = 256
    #: Seconds a request may wait for its answer before a 503.
    request_timeout: float = 60.0
    #: Seconds SIGTERM waits for the requests in flight.
    drain_seconds: int = 30
    #: Where versions are downloaded (default: the system's temporary folder).
    scratch: Path | None = None
    access_log: bool = False


@dataclass(frozen=True)
class Answer:
    """What the inference thread hands back for one request: its rows and the version that produced them."""

    rows: list[dict[str, Any]]
    version: str
    model: str


class NotReady(RuntimeError):
    """No version is loaded yet (503)."""


@dataclass(eq=False)
class _Job:
    queries: list[str]
    k: int | None
    future: concurrent.futures.Future = field(default_factory=concurrent.futures.Future)


class InferenceWorker:
    """The one thread that asks the model: requests in a queue, batched when ``batching`` (module docs)."""

    def __init__(self, follower: AliasFollower, batching: bool = True, max_batch: int = 32) -> None:
        self.follower = follower
        self.batching = batching
        self.max_batch = max_batch
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self.batches = 0
        self.batched_queries = 0

    def submit(self, request: ScoringRequest) -> concurrent.futures.Future:
        job = _Job(queries=request.queries, k=request.k)
        self._queue.put(job)
        return job.future

    def pending(self) -> int:
        return self._queue.qsize()

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="inference", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Answer what is queued, then end the thread."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout)
            self._thread = None

    def _run(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            jobs, stopping = self._gather(job)
            self._answer([j for j in jobs if j.future.set_running_or_notify_cancel()])
            if stopping:
                return

    def _gather(self, first: _Job) -> tuple[list[_Job], bool]:
        """``first`` and, when batching, the requests waiting behind it (up to ``max_batch`` queries)."""
        jobs, size = [first], len(first.queries)
        while self.batching and size < self.max_batch:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                break
            if job is None:
                return jobs, True
            jobs.append(job)
            size += len(job.queries)
        return jobs, False

    def _answer(self, jobs: list[_Job]) -> None:
        """One prediction for ``jobs``' queries with the version serving now; each job gets its rows."""
        if not jobs:
            return
        served: LoadedVersion | None = self.follower.current  # read once: one version answers the batch
        try:
            if served is None:
                raise NotReady(f"no version of models:/{self.follower.name}@{self.follower.alias} loaded yet")
            # clamped to the index's size: no search asks for more hits than there are documents
            k = min(max(job.k or served.default_k for job in jobs), served.documents)
            rows = served.predict([q for job in jobs for q in job.queries], k)
            version, model, default_k = served.version, served.name, served.default_k
        except BaseException as error:
            for job in jobs:
                job.future.set_exception(error)
            return
        finally:
            del served  # a released version must not stay alive in this thread's frame
        self.batches += 1
        self.batched_queries += len(rows)
        start = 0
        for job in jobs:
            mine = rows[start : start + len(job.queries)]
            start += len(job.queries)
            if (job.k or default_k) < k:
                mine = [_cut(row, job.k or default_k) for row in mine]
            job.future.set_result(Answer(rows=mine, version=version, model=model))


def _cut(row: dict[str, Any], k: int) -> dict[str, Any]:
    """A row asked with a larger ``k`` (batched with others), cut to the request's own ``k``."""
    return {key: value[:k] if isinstance(value, list) else value for key, value in row.items()}


# ------------------------------------------------------------------------------------------ the app
def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Any:
    from starlette.responses import Response

    text = json.dumps(body, ensure_ascii=False, allow_nan=False)
    return Response(text, status_code=status, media_type="application/json", headers=headers)


def _error(status: int, message: str, code: str = "BAD_REQUEST") -> Any:
    return _json({"error_code": code, "message": message}, status)


async def _read_body(request: Any, limits: Limits) -> bytes:
    """The body, refused with 413 as soon as it is known to be over the limit (before reading it all)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limits.max_body_bytes:
        raise too_large(int(declared), limits)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limits.max_body_bytes:
            raise too_large(size, limits)
        chunks.append(chunk)
    return b"".join(chunks)


class ScoringApp:
    """The ASGI routes over one :class:`AliasFollower` and one :class:`InferenceWorker`."""

    def __init__(self, settings: ServeSettings, follower: AliasFollower | None = None) -> None:
        self.settings = settings
        self.follower = follower or AliasFollower(
            settings.model_name,
            settings.alias,
            tracking_uri=settings.tracking_uri,
            poll_seconds=settings.poll_seconds,
            scratch=settings.scratch,
            # the batch a version's search settings are fitted to: the largest this server forms
            batch=min(settings.max_batch, 16) if settings.batching else 1,
        )
        self.worker = InferenceWorker(self.follower, settings.batching, settings.max_batch)
        #: Scoring requests received, and those not answered yet (changed on the event loop only).
        self.received = 0
        self.in_flight = 0
        self.app = self._build()

    def _build(self) -> Any:
        from starlette.applications import Starlette
        from starlette.routing import Route

        return Starlette(
            routes=[
                Route("/ping", self.ping, methods=["GET"]),
                Route("/health", self.health, methods=["GET"]),
                Route("/invocations", self.invocations, methods=["POST"]),
            ],
            lifespan=self.lifespan,
        )

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Any) -> AsyncIterator[None]:
        """Start polling and the inference thread with the server; stop them after it drained."""
        self.worker.start()
        self.follower.start()
        try:
            yield
        finally:
            self.follower.stop()
            self.worker.stop()
            self.follower.release()
            logger.info("stopped: requests drained, inference thread and poller ended, model files removed")

    async def ping(self, request: Any) -> Any:
        from starlette.responses import Response

        ready = self.follower.current is not None
        return Response("\n" if ready else "no model version loaded yet\n", status_code=200 if ready else 503)

    async def health(self, request: Any) -> Any:
        current = self.follower.current
        body = {
            "status": "ok" if current else "loading",
            "alias": f"models:/{self.settings.model_name}@{self.settings.alias}",
            **(current.describe() if current else {"model_version": None}),
            "registry_reachable": self.follower.registry_reachable,
            "last_poll": self.follower.last_poll,
            "poll_seconds": self.follower.poll_seconds,
            "batching": self.worker.batching,
            "pending": self.worker.pending(),
            "batches": self.worker.batches,
            "batched_queries": self.worker.batched_queries,
            "received": self.received,
            "in_flight": self.in_flight,
        }
        return _json(body, 200 if current else 503)

    async def invocations(self, request: Any) -> Any:
        self.received += 1
        self.in_flight += 1
        try:
            return await self._invocations(request)
        finally:
            self.in_flight -= 1

    async def _invocations(self, request: Any) -> Any:
        settings = self.settings
        try:
            parsed = parse_request(await _read_body(request, settings.limits), settings.limits)
        except BadRequest as bad:
            code = "REQUEST_TOO_LARGE" if bad.status == 413 else "BAD_REQUEST"
            return _error(bad.status, bad.message, code)
        if self.worker.pending() >= settings.max_pending:
            return _error(503, f"{settings.max_pending} requests are waiting already; retry", "BUSY")
        future = self.worker.submit(parsed)
        try:
            answer: Answer = await asyncio.wait_for(asyncio.wrap_future(future), settings.request_timeout)
        except NotReady as error:
            return _error(503, str(error), "NOT_READY")
        except TimeoutError:
            return _error(503, f"no answer within {settings.request_timeout:.0f} s", "TIMEOUT")
        except Exception as error:  # the model failed on a valid request: the server's fault, logged
            logger.exception("prediction failed")
            return _error(500, f"{type(error).__name__}: {error}", "INTERNAL_ERROR")
        body = {"predictions": answer.rows, "model_version": answer.version, "model": answer.model}
        return _json(body, headers={"X-Model-Version": answer.version})


def uvicorn_server(scoring: ScoringApp) -> Any:
    """The ``uvicorn.Server`` for ``scoring`` (not started): ``run()`` it, or ``serve()`` it in a thread."""
    import uvicorn

    settings = scoring.settings
    config = uvicorn.Config(
        scoring.app,
        host=settings.host,
        port=settings.port,
        lifespan="on",
        access_log=settings.access_log,
        timeout_graceful_shutdown=settings.drain_seconds,
        log_config=None,  # the CLI's logging configuration, not uvicorn's own
    )
    return uvicorn.Server(config)


def serve(settings: ServeSettings) -> None:
    """Serve until SIGTERM/SIGINT (then drain, see module docs)."""
    logger.info(
        "serving models:/%s@%s on http://%s:%d (polling every %.0f s, batching %s)",
        settings.model_name,
        settings.alias,
        settings.host,
        settings.port,
        settings.poll_seconds,
        "on" if settings.batching else "off",
    )
    uvicorn_server(ScoringApp(settings)).run()
