"""The rollout HTTP API: `create_app(engine, settings)`.

- `POST /v1/generate`   GenerateBatch -> GenerateBatchResponse
- `POST /v1/weights`    WeightsUpdate -> WeightsStatus (the learner's publish path)
- `GET  /healthz`       model, engine, policy version
- `GET  /metrics`       Prometheus text

Concurrent generate calls are grouped by a batcher into one engine batch (up to `max_batch_rows`
samples). The engine runs on a single worker thread, so a weight update queued behind a batch waits for
it: in-flight requests finish on the version they started with and no response mixes versions.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass

from fastapi import FastAPI, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from arpo.proto.rollout import (
    GenerateBatch,
    GenerateBatchResponse,
    GenerateRequest,
    GenerateResponse,
    WeightsStatus,
    WeightsUpdate,
)
from arpo.services.http import invalid
from arpo.services.rollout.engine import Engine, WeightsError, update_weights
from arpo.services.rollout.openai_api import openai_router
from arpo.services.rollout.settings import RolloutSettings
from arpo.services.rollout.validation import check_batch


class Metrics:
    """The service's Prometheus metrics, in a registry of its own (several apps may share a process)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.tokens = Counter("arpo_rollout_generated_tokens", "Tokens generated", registry=r)
        self.requests = Counter("arpo_rollout_requests", "Generate requests served", registry=r)
        self.weight_updates = Counter("arpo_rollout_weight_updates", "Weight updates", ["result"], registry=r)
        self.batch_rows = Gauge("arpo_rollout_batch_rows", "Samples in the latest engine batch", registry=r)
        self.queue_depth = Gauge("arpo_rollout_queue_depth", "Requests waiting for a batch", registry=r)
        self.version = Gauge("arpo_rollout_policy_version", "Policy version served", registry=r)
        self.latency = Histogram(
            "arpo_rollout_batch_seconds",
            "Wall time of one engine batch",
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
            registry=r,
        )


@dataclass
class _Pending:
    requests: list[GenerateRequest]
    future: asyncio.Future[list[GenerateResponse]]

    @property
    def rows(self) -> int:
        return sum(r.sampling.n for r in self.requests)


class Batcher:
    """Groups concurrent generate calls into engine batches, run one at a time on the engine thread."""

    def __init__(self, engine: Engine, settings: RolloutSettings, metrics: Metrics, pool: ThreadPoolExecutor):
        self.engine, self.settings, self.metrics, self.pool = engine, settings, metrics, pool
        self.pending: deque[_Pending] = deque()
        self.ready = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    async def submit(self, requests: list[GenerateRequest]) -> list[GenerateResponse]:
        # Started on first use, not in a lifespan hook: in-process ASGI transports do not run lifespans.
        if self.task is None or self.task.done():
            self.task = asyncio.create_task(self.run())
        future: asyncio.Future[list[GenerateResponse]] = asyncio.get_running_loop().create_future()
        self.pending.append(_Pending(requests, future))
        self.metrics.queue_depth.set(len(self.pending))
        self.ready.set()
        return await future

    async def run(self) -> None:
        while True:
            await self.ready.wait()
            await asyncio.sleep(self.settings.batch_wait_ms / 1000)  # let concurrent callers join
            batch = [self.pending.popleft()]
            rows = batch[0].rows
            while self.pending and rows + self.pending[0].rows <= self.settings.max_batch_rows:
                batch.append(self.pending.popleft())
                rows += batch[-1].rows
            if not self.pending:
                self.ready.clear()
            self.metrics.queue_depth.set(len(self.pending))
            await self._serve(batch, rows)

    async def _serve(self, batch: list[_Pending], rows: int) -> None:
        flat = [r for p in batch for r in p.requests]
        start = time.perf_counter()
        try:
            responses = await asyncio.get_running_loop().run_in_executor(
                self.pool, self.engine.generate, flat
            )
        except Exception as err:  # an engine failure fails its requests, never the server
            for p in batch:
                if not p.future.done():
                    p.future.set_exception(err)
            return
        self.metrics.latency.observe(time.perf_counter() - start)
        self.metrics.batch_rows.set(rows)
        self.metrics.requests.inc(len(flat))
        self.metrics.tokens.inc(sum(len(c.token_ids) for r in responses for c in r.completions))
        offset = 0
        for p in batch:
            if not p.future.done():
                p.future.set_result(responses[offset : offset + len(p.requests)])
            offset += len(p.requests)


def create_app(engine: Engine, settings: RolloutSettings) -> FastAPI:
    """The rollout app around a loaded engine."""
    metrics = Metrics()
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="engine")
    batcher = Batcher(engine, settings, metrics, pool)
    metrics.version.set(engine.policy_version)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        if batcher.task is not None:
            batcher.task.cancel()
        pool.shutdown(wait=True)

    app = FastAPI(title="arpo rollout", version="1", lifespan=lifespan)

    @app.post("/v1/generate")
    async def generate(batch: GenerateBatch) -> GenerateBatchResponse:
        check_batch(engine, settings, batch.requests)
        return GenerateBatchResponse(responses=await batcher.submit(batch.requests))

    @app.post("/v1/weights")
    async def weights(update: WeightsUpdate) -> WeightsStatus:
        try:
            status = await asyncio.get_running_loop().run_in_executor(pool, update_weights, engine, update)
        except WeightsError as err:
            code = 409 if err.field == "policy_version" else 422
            metrics.weight_updates.labels("error").inc()
            raise invalid([err.field], err.message, code) from None
        metrics.weight_updates.labels("accepted" if status.accepted else "refused").inc()
        metrics.version.set(engine.policy_version)
        return status

    app.include_router(openai_router(engine, settings, batcher.submit))

    @app.get("/healthz")
    async def healthz() -> dict[str, str | int]:
        return {
            "status": "ok",
            "model": engine.model_name,
            "engine": str(settings.engine),
            "policy_version": engine.policy_version,
        }

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app
