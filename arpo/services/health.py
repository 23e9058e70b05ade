"""Health of the services without an HTTP API of their own (agent, learner), and every container's check.

`HealthServer` serves `GET /healthz` from a thread with its own event loop (signals stay with the
service): 200 with what the service reports while its event loop is responsive (a heartbeat task ticks
every second) and Redis answers PING; 503 naming the problem otherwise. Kubernetes probes and the
compose health checks call it; rollout, tools and controller serve `/healthz` from their own apps.

`python -m arpo.services.health [SERVICE]` is every image's HEALTHCHECK: it GETs
`http://127.0.0.1:<port>/healthz` of SERVICE (default: `$ARPO_SERVICE`), the port read from the
service's own settings (its `ARPO_<SERVICE>_PORT`), and exits 0 on a 200, 1 otherwise.
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from redis import Redis
from redis.exceptions import RedisError

Report = Callable[[], dict[str, Any]]


class HealthServer:
    """`/healthz` of one service process; `stale_s` without a heartbeat means its event loop is stuck."""

    def __init__(self, service: str, redis_url: str, report: Report, stale_s: float = 30.0) -> None:
        self.service, self.redis_url, self.report, self.stale_s = service, redis_url, report, stale_s
        self.beat = time.monotonic()

    def problem(self, redis: Redis) -> str | None:
        age = time.monotonic() - self.beat
        if age > self.stale_s:
            return f"event loop unresponsive for {age:.0f}s"
        try:
            redis.ping()
        except RedisError as err:
            return f"redis unreachable: {err}"
        return None

    def app(self) -> FastAPI:
        app = FastAPI(title=f"arpo {self.service} health", openapi_url=None, docs_url=None, redoc_url=None)
        redis = Redis.from_url(self.redis_url, socket_timeout=2, socket_connect_timeout=2)

        @app.get("/healthz")
        def healthz() -> JSONResponse:
            problem = self.problem(redis)
            body = {"service": self.service, "status": problem or "ok", **self.report()}
            return JSONResponse(body, status_code=503 if problem else 200)

        return app

    async def _tick(self) -> None:
        while True:
            self.beat = time.monotonic()
            await asyncio.sleep(1.0)

    @asynccontextmanager
    async def running(self, host: str, port: int | None) -> AsyncIterator[None]:
        """Serve `/healthz` on host:port while the block runs (nothing when port is None)."""
        if port is None:
            yield
            return
        config = uvicorn.Config(self.app(), host=host, port=port, log_level="warning", lifespan="off")
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, name=f"{self.service}-health", daemon=True)
        thread.start()
        ticker = asyncio.create_task(self._tick())
        try:
            yield
        finally:
            ticker.cancel()
            server.should_exit = True
            await asyncio.to_thread(thread.join, 5.0)


def service_port(service: str) -> int | None:
    """The port `service` listens on, from its settings (the same environment variables it reads)."""
    from arpo.services.agent.settings import AgentSettings
    from arpo.services.controller.settings import ControllerSettings
    from arpo.services.learner.settings import LearnerSettings
    from arpo.services.rollout.settings import RolloutSettings
    from arpo.services.tools.settings import ToolsSettings

    classes: dict[str, Any] = {
        "rollout": RolloutSettings,
        "tools": ToolsSettings,
        "agent": AgentSettings,
        "learner": LearnerSettings,
        "controller": ControllerSettings,
    }
    if service not in classes:
        raise ValueError(f"unknown service {service!r}; one of {', '.join(classes)}")
    port: int | None = classes[service].from_env().port
    return port


def main(argv: list[str]) -> int:
    service = argv[0] if argv else os.environ.get("ARPO_SERVICE", "")
    try:
        port = service_port(service)
    except ValueError as err:
        sys.stderr.write(f"arpo health: {err}\n")
        return 1
    if port is None:
        sys.stderr.write(f"arpo health: ARPO_{service.upper()}_PORT is unset: {service} serves no /healthz\n")
        return 1
    try:
        response = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5.0)
    except httpx.HTTPError as err:
        sys.stderr.write(f"arpo health: {service} on port {port}: {err}\n")
        return 1
    sys.stdout.write(f"{response.status_code} {response.text}\n")
    return 0 if response.status_code == 200 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
