"""The controller's REST API: launch, watch, stop and delete runs (DESIGN.md §2).

All state is in Redis (`RunRegistry`), so the controller can restart at any time. A bearer token guards
every mutating request, and reads unless `public_reads`; it is compared in constant time. Bodies are
validated by the messages' own models (422 naming the field), unknown runs are 404, and operations a
run's state does not allow are 409.
"""

from __future__ import annotations

import asyncio
import hmac
import json
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Path, Query, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from redis.asyncio import Redis

from arpo.proto.runs import RunSpec, RunState, RunStatus, StepMetrics, ValidationMetrics
from arpo.proto.tree import Tree
from arpo.services.agent.store import TreeStore
from arpo.services.controller.dashboard import RunId, mount_dashboard
from arpo.services.controller.registry import RunConflictError, RunNotFoundError, RunRegistry
from arpo.services.controller.settings import ControllerSettings


def _authorizer(settings: ControllerSettings) -> Callable[[Request], None]:
    expected = (settings.token or "").encode()

    def authorize(request: Request) -> None:
        if settings.auth_disabled or (settings.public_reads and request.method == "GET"):
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.encode(), expected):
            raise HTTPException(401, "a valid bearer token is required", {"WWW-Authenticate": "Bearer"})

    return authorize


async def _event_stream(registry: RunRegistry, run_id: str, after: str, follow: bool) -> AsyncIterator[str]:
    last = after
    while True:
        batch = await registry.events(run_id, last, block_ms=1000 if follow else None)
        for e in batch:
            last = e["id"]
            yield f"id: {e['id']}\nevent: {e['kind']}\ndata: {json.dumps(e['body'])}\n\n"
        if not follow:
            return
        if not batch:
            if (await registry.get(run_id)).state in (RunState.FINISHED, RunState.FAILED):
                return
            yield ": keep-alive\n\n"
        await asyncio.sleep(0)


def _error_responses(app: FastAPI) -> None:
    """The registry's errors as answers: an unknown run is a 404, a state conflict a 409."""

    @app.exception_handler(RunNotFoundError)
    async def not_found(_: Request, err: RunNotFoundError) -> JSONResponse:
        return JSONResponse({"detail": f"no run {err.args[0]!r}"}, status_code=404)

    @app.exception_handler(RunConflictError)
    async def conflict(_: Request, err: RunConflictError) -> JSONResponse:
        return JSONResponse({"detail": str(err)}, status_code=409)


def create_app(redis: Redis, settings: ControllerSettings) -> FastAPI:
    app = FastAPI(title="arpo controller", version="1", description=__doc__)
    registry = RunRegistry(redis)

    auth = [Depends(_authorizer(settings))]

    _error_responses(app)

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        await redis.ping()
        return {"ok": True, "auth": not settings.auth_disabled}

    @app.post("/v1/runs", status_code=201, dependencies=auth)
    async def create_run(spec: RunSpec) -> RunStatus:
        """Register a run; a learner claims it."""
        return await registry.create(spec)

    @app.get("/v1/runs", dependencies=auth)
    async def list_runs(
        state: RunState | None = None, limit: Annotated[int, Query(ge=1, le=1000)] = 100
    ) -> list[RunStatus]:
        """Runs, newest first."""
        return await registry.runs(limit, state)

    @app.get("/v1/runs/{run_id}", dependencies=auth)
    async def get_run(run_id: RunId) -> RunStatus:
        return await registry.get(run_id)

    @app.get("/v1/runs/{run_id}/spec", dependencies=auth)
    async def get_spec(run_id: RunId) -> RunSpec:
        return await registry.spec(run_id)

    @app.get("/v1/runs/{run_id}/metrics", dependencies=auth)
    async def get_metrics(run_id: RunId, since_step: Annotated[int, Query(ge=0)] = 0) -> list[StepMetrics]:
        """Per-step metrics from `since_step` on."""
        return await registry.metrics(run_id, since_step)

    @app.get("/v1/runs/{run_id}/validation", dependencies=auth)
    async def get_validation(run_id: RunId) -> list[ValidationMetrics]:
        """Each validation of the policy on the held-out questions (RunSpec.validation), oldest first."""
        return await registry.validation(run_id)

    @app.get("/v1/runs/{run_id}/trees/{step}", dependencies=auth)
    async def get_trees(run_id: RunId, step: Annotated[int, Path(ge=0)]) -> list[Tree]:
        """The completed trajectory trees of a step, per-token entropies included."""
        await registry.get(run_id)
        return await TreeStore(redis, run_id).completed_trees(step)

    @app.get("/v1/runs/{run_id}/events", dependencies=auth, response_class=StreamingResponse)
    async def events(
        run_id: RunId,
        after: Annotated[str, Query(pattern=r"^\d+-\d+$")] = "0-0",
        follow: bool = True,
    ) -> StreamingResponse:
        """Server-sent events (state, metrics, log) after stream id `after`; `follow=false` returns
        what is there and closes, otherwise the stream ends when the run ends."""
        await registry.get(run_id)

        stream = _event_stream(registry, run_id, after, follow)
        return StreamingResponse(stream, media_type="text/event-stream")

    @app.post("/v1/runs/{run_id}/stop", dependencies=auth)
    async def stop_run(run_id: RunId) -> RunStatus:
        """Graceful: the learner finishes the step, checkpoints and stops (409 if the run has ended)."""
        return await registry.stop(run_id)

    mount_dashboard(app, redis, registry, auth)

    @app.delete("/v1/runs/{run_id}", status_code=204, dependencies=auth)
    async def delete_run(run_id: RunId) -> Response:
        """Remove an ended run's keys (409 while it is pending, running or stopping)."""
        await registry.delete(run_id)
        return Response(status_code=204)

    return app
