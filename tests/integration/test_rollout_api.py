"""The rollout HTTP API: in-process through the client, and over a real socket with uvicorn."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from arpo.localredis import free_port
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


def test_official_openai_client(served: str) -> None:
    import openai

    client = openai.OpenAI(base_url=f"{served}/v1", api_key="unused", max_retries=0, timeout=60)
    r = client.completions.create(
        model="tiny", prompt="<think>", max_tokens=6, n=2, logprobs=3, seed=1, temperature=0.8
    )
    assert len(r.choices) == 2 and r.usage is not None
    lp = r.choices[0].logprobs
    assert lp is not None and lp.tokens is not None and lp.token_logprobs is not None
    assert len(lp.tokens) == len(lp.token_logprobs) <= 6
    assert lp.top_logprobs is not None and all(1 <= len(alts) <= 3 for alts in lp.top_logprobs)
    # The chosen token is never more likely than the best alternative.
    assert all(
        chosen <= max(alts.values()) + 1e-6
        for chosen, alts in zip(lp.token_logprobs, lp.top_logprobs, strict=True)
    )
    assert r.usage.completion_tokens == sum(len(c.logprobs.tokens) for c in r.choices if c.logprobs)
    again = client.completions.create(
        model="tiny", prompt="<think>", max_tokens=6, n=2, logprobs=3, seed=1, temperature=0.8
    )
    assert [c.text for c in again.choices] == [c.text for c in r.choices]

    greedy = client.completions.create(model="tiny", prompt="<answer>", max_tokens=20, temperature=0)
    text = greedy.choices[0].text
    stop = text[4:6]
    assert len(stop) == 2
    cut = client.completions.create(
        model="tiny", prompt="<answer>", max_tokens=20, temperature=0, stop=[stop]
    )
    assert cut.choices[0].finish_reason == "stop" and cut.choices[0].text == text[: text.find(stop)]

    chat = client.chat.completions.create(
        model="tiny",
        messages=[{"role": "user", "content": "What is 12 * 34?"}],
        max_tokens=5,
        logprobs=True,
        top_logprobs=2,
    )
    choice = chat.choices[0]
    assert isinstance(choice.message.content, str) and choice.message.role == "assistant"
    assert choice.logprobs is not None and choice.logprobs.content is not None
    assert len(choice.logprobs.content) == chat.usage.completion_tokens  # type: ignore[union-attr]
    assert all(len(t.top_logprobs) == 2 for t in choice.logprobs.content)

    with pytest.raises(openai.UnprocessableEntityError) as err:
        client.completions.create(model="tiny", prompt="x", stream=True)
    assert "streaming responses are not supported" in err.value.response.text
    with pytest.raises(openai.UnprocessableEntityError) as err:
        client.completions.create(model="tiny", prompt="")
    assert "prompt" in err.value.response.text


OPENAI_CASES = [
    ("/v1/completions", {"prompt": "x", "max_tokens": 0}, "max_tokens"),
    ("/v1/completions", {"prompt": "x", "temperature": 3}, "temperature"),
    ("/v1/completions", {"prompt": "x", "logprobs": 50}, "logprobs"),
    ("/v1/completions", {"prompt": "x", "echo": True}, "echo"),
    ("/v1/completions", {"prompt": [1, 10**6]}, "outside the vocabulary"),
    ("/v1/completions", {"prompt": "x", "stop": ["a", "b", "c", "d", "e"]}, "at most 4"),
    ("/v1/chat/completions", {"messages": []}, "messages"),
    ("/v1/chat/completions", {"messages": [{"role": "robot", "content": "x"}]}, "role"),
    (
        "/v1/chat/completions",
        {"messages": [{"role": "user", "content": "x"}], "top_logprobs": 2},
        "logprobs=true",
    ),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x" * 9000}]}, "no room"),
]


@pytest.mark.parametrize(("path", "payload", "field"), OPENAI_CASES)
def test_openai_bad_input_is_422(engine: HFEngine, path: str, payload: dict[str, Any], field: str) -> None:
    response = post(engine, payload, path)
    assert response.status_code == 422, response.text
    assert field in response.text
