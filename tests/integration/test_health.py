"""`/healthz` of the services without an HTTP API of their own (agent, learner): real server, real Redis."""

from __future__ import annotations

import asyncio
import threading
import time

import httpx
import pytest

from arpo.localredis import LocalRedis, free_port
from arpo.services.health import HealthServer, service_port


async def _get(server: HealthServer) -> httpx.Response:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    async with server.running("127.0.0.1", port), httpx.AsyncClient(base_url=url) as http:
        for _ in range(100):
            try:
                return await http.get("/healthz")
            except httpx.TransportError:
                await asyncio.sleep(0.05)
    raise AssertionError("the health server did not start")


def test_healthy_service_reports_its_state(redis_server: LocalRedis) -> None:
    server = HealthServer("agent", redis_server.url, lambda: {"run_id": "r1", "inflight": 3})
    response = asyncio.run(_get(server))
    assert response.status_code == 200
    assert response.json() == {"service": "agent", "status": "ok", "run_id": "r1", "inflight": 3}


def test_unreachable_redis_is_a_503_that_says_so() -> None:
    server = HealthServer("learner", f"redis://127.0.0.1:{free_port()}", lambda: {})
    response = asyncio.run(_get(server))
    assert response.status_code == 503
    assert response.json()["status"].startswith("redis unreachable")


def test_a_stuck_event_loop_is_a_503(redis_server: LocalRedis) -> None:
    server = HealthServer("agent", redis_server.url, lambda: {}, stale_s=0.5)
    responses: list[httpx.Response] = []

    async def stuck() -> None:
        port = free_port()
        async with server.running("127.0.0.1", port):
            await asyncio.sleep(0.3)
            url = f"http://127.0.0.1:{port}/healthz"
            probe = threading.Timer(1.0, lambda: responses.append(httpx.get(url, timeout=5)))
            probe.start()
            time.sleep(2.0)  # blocks the service's loop: the heartbeat stops; the probe asks meanwhile
            probe.join()

    asyncio.run(stuck())
    assert responses[0].status_code == 503
    assert "event loop unresponsive" in responses[0].json()["status"]


def test_no_port_no_server(redis_server: LocalRedis) -> None:
    async def check() -> None:
        async with HealthServer("agent", redis_server.url, lambda: {}).running("127.0.0.1", None):
            pass

    asyncio.run(check())


def test_the_health_check_reads_each_services_own_port(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ARPO_TOOLS_PORT", "9123")
    monkeypatch.setenv("ARPO_ROLLOUT_MODEL", "arpo:tiny")
    monkeypatch.setenv("ARPO_CONTROLLER_AUTH_DISABLED", "true")
    assert service_port("tools") == 9123
    assert service_port("rollout") == 8001
    assert service_port("controller") == 8000
    assert service_port("agent") is None
    with pytest.raises(ValueError, match="unknown service 'tool'"):
        service_port("tool")
