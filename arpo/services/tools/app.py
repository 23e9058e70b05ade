"""The tool HTTP API: `create_app(sandbox, searcher, settings)`.

- `POST /v1/python`  PythonRequest -> ToolResult
- `POST /v1/search`  SearchRequest -> SearchResponse
- `POST /v1/batch`   ToolBatch -> ToolBatchResponse (calls run concurrently, results in call order)
- `GET  /healthz`    isolation level, interpreter, search backends and index size
- `GET  /metrics`    Prometheus text

Python calls run in worker threads, at most `max_concurrency` at once (one per sandbox slot); up to
`max_queue` more may wait. Beyond that the service answers 429 with Retry-After instead of queueing
without bound. A call's failure (error, timeout, limit) is a 200 with `ok: false`: only a request that
is itself malformed gets a 4xx.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import anyio
from fastapi import FastAPI, HTTPException, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from arpo.core.tags import ToolName
from arpo.proto.tools import (
    PythonRequest,
    SearchRequest,
    SearchResponse,
    ToolBatch,
    ToolBatchResponse,
    ToolCall,
    ToolResult,
)
from arpo.services.http import invalid
from arpo.services.tools.sandbox import Sandbox
from arpo.services.tools.search import LocalIndex, Searcher
from arpo.services.tools.settings import ToolsSettings

T = TypeVar("T")
RETRY_AFTER_S = 1


class Metrics:
    """The service's Prometheus metrics, in a registry of its own."""

    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.calls = Counter("arpo_tools_calls", "Tool calls answered", ["tool", "outcome"], registry=r)
        self.rejected = Counter("arpo_tools_rejected", "Calls refused with 429 (saturated)", registry=r)
        self.cache = Counter("arpo_tools_search_cache", "Search cache lookups", ["result"], registry=r)
        self.in_flight = Gauge("arpo_tools_in_flight", "Calls admitted and not yet answered", registry=r)
        self.latency = Histogram(
            "arpo_tools_call_seconds",
            "Wall time of one tool call",
            ["tool"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=r,
        )

    def record(self, tool: str, result: ToolResult, seconds: float) -> None:
        outcome = "ok" if result.ok else ("timeout" if result.timed_out else "error")
        self.calls.labels(tool, outcome).inc()
        self.latency.labels(tool).observe(seconds)


class Admission:
    """Counts admitted calls; refuses (429) beyond the running slots plus the queue."""

    def __init__(self, capacity: int, metrics: Metrics) -> None:
        self.capacity, self.admitted = capacity, 0
        self._metrics = metrics

    def admit(self, calls: int) -> None:
        if self.admitted + calls > self.capacity:
            self._metrics.rejected.inc()
            raise HTTPException(
                429,
                detail=f"saturated: {self.admitted} calls admitted, capacity {self.capacity}",
                headers={"Retry-After": str(RETRY_AFTER_S)},
            )
        self.admitted += calls
        self._metrics.in_flight.set(self.admitted)

    def release(self, calls: int) -> None:
        self.admitted -= calls
        self._metrics.in_flight.set(self.admitted)


class Tools:
    """The calls behind the routes: checks, the sandbox in worker threads, search, metrics."""

    def __init__(self, sandbox: Sandbox, searcher: Searcher, settings: ToolsSettings, metrics: Metrics):
        self.sandbox, self.searcher, self.settings, self.metrics = sandbox, searcher, settings, metrics
        self.limiter = anyio.CapacityLimiter(settings.max_concurrency)
        self.admission = Admission(settings.max_concurrency + settings.max_queue, metrics)

    def check_python(self, code: str, timeout_s: float | None, loc: list[str | int]) -> None:
        if len(code) > self.settings.max_code_chars:
            raise invalid(
                [*loc, "code"], f"{len(code)} characters exceed max_code_chars {self.settings.max_code_chars}"
            )
        if timeout_s is not None and timeout_s > self.settings.max_timeout_s:
            raise invalid(
                [*loc, "timeout_s"], f"{timeout_s}s exceeds max_timeout_s {self.settings.max_timeout_s}"
            )

    def check_backend(self, backend: str | None, loc: list[str | int]) -> None:
        if backend is not None and backend not in self.searcher.backends:
            have = ", ".join(sorted(self.searcher.backends))
            raise invalid([*loc, "backend"], f"unknown search backend {backend!r} (configured: {have})")

    async def python(self, code: str, timeout_s: float | None) -> ToolResult:
        started = time.perf_counter()
        result = await anyio.to_thread.run_sync(self.sandbox.run, code, timeout_s, limiter=self.limiter)
        self.metrics.record("python", result, time.perf_counter() - started)
        return result

    async def search(self, query: str, k: int, backend: str | None) -> SearchResponse:
        started = time.perf_counter()
        response = await self.searcher.search(query, k, backend)
        self.metrics.record("search", response.result, time.perf_counter() - started)
        return response

    async def call(self, call: ToolCall) -> ToolResult:
        """One call of a batch: a model's call, so an empty one is an error result, not a 422."""
        if not call.content.strip():
            return ToolResult(ok=False, output="", error=f"empty {call.tool.value} call")
        if call.tool is ToolName.PYTHON:
            return await self.python(call.content, call.timeout_s)
        return (await self.search(call.content, self.settings.search_k, None)).result

    async def admitted(self, calls: int, work: Callable[[], Awaitable[T]]) -> T:
        self.admission.admit(calls)
        try:
            return await work()
        finally:
            self.admission.release(calls)


def create_app(sandbox: Sandbox, searcher: Searcher, settings: ToolsSettings) -> FastAPI:
    metrics = Metrics()
    searcher.on_cache = lambda hit: metrics.cache.labels("hit" if hit else "miss").inc()
    tools = Tools(sandbox, searcher, settings, metrics)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await anyio.to_thread.run_sync(sandbox.warm_up)
        yield
        await searcher.close()
        await anyio.to_thread.run_sync(sandbox.close)

    app = FastAPI(title="arpo tools", version="1", lifespan=lifespan)
    app.state.tools = tools

    @app.post("/v1/python")
    async def python(request: PythonRequest) -> ToolResult:
        tools.check_python(request.code, request.timeout_s, [])
        return await tools.admitted(1, lambda: tools.python(request.code, request.timeout_s))

    @app.post("/v1/search")
    async def search(request: SearchRequest) -> SearchResponse:
        tools.check_backend(request.backend, [])
        return await tools.admitted(1, lambda: tools.search(request.query, request.k, request.backend))

    @app.post("/v1/batch")
    async def batch(request: ToolBatch) -> ToolBatchResponse:
        for i, call in enumerate(request.calls):
            if call.tool is ToolName.PYTHON:
                tools.check_python(call.content, call.timeout_s, ["calls", i])

        async def run_all() -> ToolBatchResponse:
            results = await asyncio.gather(*(tools.call(c) for c in request.calls))
            return ToolBatchResponse(results=list(results))

        # A batch larger than the whole capacity is admitted when the service is idle (its calls still
        # run at most max_concurrency at a time).
        return await tools.admitted(min(len(request.calls), tools.admission.capacity), run_all)

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        local = searcher.backends.get("local")
        return {
            "status": "ok",
            "isolation": sandbox.isolation.value,
            "python": sandbox.plan.python,
            "warm": settings.warm,
            "slots": settings.max_concurrency,
            "search_backends": sorted(searcher.backends),
            "search_default": searcher.default,
            "index_loaded": isinstance(local, LocalIndex),
            "index_documents": local.documents if isinstance(local, LocalIndex) else 0,
        }

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app
