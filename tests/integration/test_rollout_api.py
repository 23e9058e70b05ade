"""The rollout HTTP API: in-process through the client, and over a real socket with uvicorn."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from arpo.proto.rollout import GenerateRequest, SamplingParams
from arpo.services.rollout.app import create_app
from arpo.services.rollout.client import RolloutClient, RolloutError
from arpo.services.rollout.hf import HFEngine
from arpo.services.rollout.settings import RolloutSettings


def settings(**kw: Any) -> RolloutSettings:
    return RolloutSettings(model="tiny", **kw)


def body(**sampling: Any) -> dict[str, Any]:
    return {"requests": [{"prompt_token_ids": [5, 6, 7], "sampling": {"max_tokens": 4, **sampling}}]}


def post(engine: HFEngine, payload: Any, path: str = "/v1/generate", **kw: Any) -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=create_app(engine, settings(**kw)))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            return await http.post(path, json=payload)

    return asyncio.run(go())


def test_generate_in_process(engine: HFEngine) -> None:
    async def go() -> None:
        async with RolloutClient.in_process(create_app(engine, settings())) as client:
            requests = [
                GenerateRequest(prompt_token_ids=[1, 2, 3], sampling=SamplingParams(n=2, max_tokens=5))
            ]
            (response,) = await client.generate(requests)
            assert len(response.completions) == 2 and response.policy_version == 0
            assert (await client.health())["policy_version"] == 0

    asyncio.run(go())


BIG = 10**6
CASES = [
    ({"requests": [{"prompt_token_ids": []}]}, "prompt_token_ids"),
    ({"requests": [{"prompt_token_ids": list(range(5)) * 500}]}, "model context"),
    (body(max_tokens=0), "max_tokens"),
    (body(temperature=-1), "temperature"),
    (body(top_p=0), "top_p"),
    (body(top_p=1.5), "top_p"),
    (body(n=0), "n"),
    ({"requests": [{"prompt_token_ids": [1, BIG]}]}, "outside the vocabulary"),
    ({"requests": [{"prompt_token_ids": [1, -2]}]}, "prompt_token_ids"),
    ({"requests": []}, "requests"),
    ({"requests": [{"prompt_token_ids": [1]}], "extra": 1}, "extra"),
    ({"requests": [{"prompt_token_ids": [1], "sampling": {"n": 200}}]}, "max_batch_rows"),
    ("not json", "body"),
]


@pytest.mark.parametrize(("payload", "field"), CASES)
def test_bad_input_is_422_naming_the_field(engine: HFEngine, payload: Any, field: str) -> None:
    response = post(engine, payload, max_batch_rows=64)
    assert response.status_code == 422, response.text
    assert field in response.text


def test_weights_endpoint_errors(engine: HFEngine, tmp_path: Path) -> None:
    missing = post(engine, {"path": str(tmp_path / "none"), "policy_version": 1}, "/v1/weights")
    assert missing.status_code == 422 and "path" in missing.text
    engine.set_version(2)
    stale = post(engine, {"path": str(tmp_path), "policy_version": 2}, "/v1/weights")
    assert stale.status_code == 409 and "policy_version" in stale.text
    empty = post(engine, {"path": str(tmp_path), "policy_version": 3}, "/v1/weights")
    assert empty.status_code == 422 and "no .safetensors" in empty.text
    assert engine.policy_version == 2


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def served(engine: HFEngine) -> Iterator[str]:
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(engine, settings()), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


def test_over_http_concurrent_requests_are_batched(served: str) -> None:
    async def go() -> None:
        async with RolloutClient(served, timeout_s=60) as client:
            single = [
                GenerateRequest(prompt_token_ids=[1, 2, 3 + i], sampling=SamplingParams(max_tokens=6))
                for i in range(8)
            ]
            results = await asyncio.gather(*(client.generate([r]) for r in single))
            assert all(len(r[0].completions) == 1 for r in results)
            with pytest.raises(RolloutError) as err:
                await client.generate([GenerateRequest(prompt_token_ids=[10**6])])
            assert err.value.status_code == 422

    asyncio.run(go())
    metrics = dict(
        line.rsplit(" ", 1)
        for line in httpx.get(f"{served}/metrics").text.splitlines()
        if not line.startswith("#")
    )
    assert float(metrics["arpo_rollout_requests_total"]) == 8
    assert float(metrics["arpo_rollout_batch_seconds_count"]) < 8  # concurrent calls shared engine batches
    assert float(metrics["arpo_rollout_generated_tokens_total"]) > 0
    assert httpx.get(f"{served}/healthz").json()["status"] == "ok"


def test_client_retries_then_raises_on_connection_errors() -> None:
    async def go() -> None:
        async with RolloutClient(
            f"http://127.0.0.1:{free_port()}", timeout_s=2, retries=2, backoff_s=0.01
        ) as c:
            with pytest.raises(httpx.ConnectError):
                await c.health()

    asyncio.run(go())
