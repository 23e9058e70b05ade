"""The controller's REST API on a real Redis: life cycle, auth, validation, restarts, and a fuzz run."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from redis.asyncio import Redis
from schemathesis.checks import not_a_server_error

from arpo.localredis import LocalRedis, free_port
from arpo.proto import keys
from arpo.proto.runs import RunSpec, RunState, StepMetrics
from arpo.services.controller.app import create_app
from arpo.services.controller.registry import RunRegistry
from arpo.services.controller.settings import ControllerSettings

ROOT = Path(__file__).parents[2]
TOKEN = "s3cret-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


SPEC: dict[str, Any] = {
    "name": "ctl-test",
    "model": {"name_or_path": "arpo:tiny"},
    "dataset": {"path_or_name": "arpo:arith"},
    "config": {"optim": {"batch_prompts": 2, "mini_batch_prompts": 2}},
}


def metrics(step: int) -> StepMetrics:
    return StepMetrics(
        step=step,
        policy_version=step,
        trees=2,
        trajectories=8,
        reward_mean=0.25 * step,
        accuracy=0.0,
        format_ok_rate=1.0,
        tool_calls_per_trajectory=1.0,
        branches_per_tree=0.5,
    )


async def remove_runs(redis: Redis, keep: set[str]) -> None:
    """End and delete every run not in `keep` (the Redis may be shared with other tests)."""
    registry = RunRegistry(redis)
    for run in await registry.runs(limit=100_000):
        if run.run_id not in keep:
            if run.state not in (RunState.FINISHED, RunState.FAILED):
                await registry.finish(run.run_id, RunState.FAILED, "test cleanup")
            await registry.delete(run.run_id)


async def run_ids(redis: Redis) -> set[str]:
    return {r.run_id for r in await RunRegistry(redis).runs(limit=100_000)}


@pytest.fixture
async def redis(redis_server: LocalRedis) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_server.url)
    before = await run_ids(client)
    yield client
    await remove_runs(client, before)
    await client.aclose()


def client_for(redis: Redis, **settings: Any) -> httpx.AsyncClient:
    app = create_app(redis, ControllerSettings(token=TOKEN, **settings))
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://controller")


@pytest.mark.anyio
async def test_a_run_from_submission_to_deletion(redis: Redis) -> None:
    async with client_for(redis) as api:
        created = await api.post("/v1/runs", json=SPEC, headers=AUTH)
        assert created.status_code == 201, created.text
        run_id = created.json()["run_id"]
        assert run_id.startswith("ctl-test-") and created.json()["state"] == "pending"
        registry = RunRegistry(redis)
        claimed = await registry.claim("learner-a", run_id)
        assert claimed is not None and claimed.state.value == "running"
        assert await registry.claim("learner-b", run_id) is None  # claimed by exactly one learner
        assert await registry.leased(run_id) and await registry.renew(run_id, "learner-a")
        assert not await registry.renew(run_id, "learner-b")
        for step in (0, 1):  # what the learner does after each step
            await redis.xadd(keys.run_metrics(run_id), {"body": metrics(step).model_dump_json()})
            await registry.report(run_id, metrics(step), "learner-a")
        status = (await api.get(f"/v1/runs/{run_id}", headers=AUTH)).json()
        assert (status["state"], status["step"], status["policy_version"]) == ("running", 2, 2)
        assert status["metrics"]["reward_mean"] == 0.25 and status["services_seen"] == ["learner-a"]
        series = (await api.get(f"/v1/runs/{run_id}/metrics?since_step=1", headers=AUTH)).json()
        assert [m["step"] for m in series] == [1]
        deleting = await api.delete(f"/v1/runs/{run_id}", headers=AUTH)
        assert deleting.status_code == 409 and "stop it first" in deleting.json()["detail"]
        stopping = await api.post(f"/v1/runs/{run_id}/stop", headers=AUTH)
        assert stopping.json()["state"] == "stopping"
        await registry.finish(run_id, RunState.FINISHED, "stopped")
        again = await api.post(f"/v1/runs/{run_id}/stop", headers=AUTH)
        assert again.status_code == 409 and "already finished" in again.json()["detail"]
        events = await api.get(f"/v1/runs/{run_id}/events?follow=false", headers=AUTH)
        kinds = [line[7:] for line in events.text.splitlines() if line.startswith("event: ")]
        assert kinds == ["state", "state", "metrics", "metrics", "state", "state"]
        followed = await api.get(f"/v1/runs/{run_id}/events", headers=AUTH)  # ends: the run has ended
        assert followed.text.count("event: ") == 6
        assert (await api.delete(f"/v1/runs/{run_id}", headers=AUTH)).status_code == 204
        assert (await api.get(f"/v1/runs/{run_id}", headers=AUTH)).status_code == 404
        assert [k async for k in redis.scan_iter(match=keys.run_keys_pattern(run_id))] == []


@pytest.mark.anyio
async def test_a_run_whose_learner_died_is_claimed_again(redis: Redis) -> None:
    registry = RunRegistry(redis)
    status = await registry.create(RunSpec.model_validate(SPEC))
    assert (await registry.claim("learner-a", status.run_id, lease_s=0.2)) is not None
    assert await registry.claim("learner-b", status.run_id) is None
    await asyncio.sleep(0.4)  # learner-a stops renewing: its lease expires
    assert not await registry.leased(status.run_id)
    again = await registry.claim("learner-b", status.run_id)
    assert again is not None and again.state is RunState.RUNNING
    assert again.services_seen == ["learner-a", "learner-b"]
    assert not await registry.renew(status.run_id, "learner-a")  # the old owner learns it lost it
    stopping = await registry.stop(status.run_id)
    await registry.release(status.run_id, "learner-b")  # learner-b dies while the run is stopping
    last = await registry.claim("learner-c", status.run_id)
    assert last is not None and last.state is RunState.STOPPING
    assert stopping.state is RunState.STOPPING


@pytest.mark.anyio
async def test_bad_input_is_4xx_naming_the_field(redis: Redis) -> None:
    async with client_for(redis) as api:
        bad = {**SPEC, "config": {"branching": {"group_size": 4, "initial_rollouts": 8}}}
        response = await api.post("/v1/runs", json=bad, headers=AUTH)
        assert response.status_code == 422 and "initial_rollouts" in response.text
        response = await api.post("/v1/runs", json={**SPEC, "config": {"optim": {"lr": -1}}}, headers=AUTH)
        assert response.status_code == 422 and "lr" in response.text
        assert (await api.get("/v1/runs/no-such-run", headers=AUTH)).status_code == 404
        assert (await api.get("/v1/runs/bad:id", headers=AUTH)).status_code == 422
        assert (await api.post("/v1/runs/no-such-run/stop", headers=AUTH)).status_code == 404


@pytest.mark.anyio
async def test_the_token_guards_every_request_unless_reads_are_public(redis: Redis) -> None:
    async with client_for(redis) as api:
        assert (await api.post("/v1/runs", json=SPEC)).status_code == 401
        wrong = {"Authorization": "Bearer " + "x" * len(TOKEN)}
        assert (await api.post("/v1/runs", json=SPEC, headers=wrong)).status_code == 401
        assert (await api.get("/v1/runs")).status_code == 401
        assert (await api.get("/healthz")).status_code == 200
    async with client_for(redis, public_reads=True) as api:
        assert (await api.get("/v1/runs")).status_code == 200
        assert (await api.post("/v1/runs", json=SPEC)).status_code == 401
    with pytest.raises(ValueError, match="ARPO_CONTROLLER_TOKEN"):
        ControllerSettings()
    assert ControllerSettings(auth_disabled=True).token is None


@pytest.mark.anyio
async def test_runs_survive_a_controller_restart(redis: Redis) -> None:
    async with client_for(redis) as api:
        run_id = (await api.post("/v1/runs", json=SPEC, headers=AUTH)).json()["run_id"]
    async with client_for(redis) as api:  # a new controller process, same Redis
        listed = (await api.get("/v1/runs?state=pending", headers=AUTH)).json()
        assert run_id in [r["run_id"] for r in listed]
        stopped = (await api.post(f"/v1/runs/{run_id}/stop", headers=AUTH)).json()
        assert stopped["state"] == "finished" and stopped["reason"] == "stopped before it started"


@pytest.fixture
def controller(redis_server: LocalRedis) -> Iterator[str]:
    """The controller as its container runs it (`python -m arpo.services.controller`); the runs the test
    created are removed afterwards."""

    async def ids() -> set[str]:
        redis = Redis.from_url(redis_server.url)
        try:
            return await run_ids(redis)
        finally:
            await redis.aclose()

    async def cleanup(keep: set[str]) -> None:
        redis = Redis.from_url(redis_server.url)
        try:
            await remove_runs(redis, keep)
        finally:
            await redis.aclose()

    before = asyncio.run(ids())
    port = free_port()
    env = os.environ | {
        "ARPO_CONTROLLER_TOKEN": TOKEN,
        "ARPO_CONTROLLER_PORT": str(port),
        "ARPO_CONTROLLER_REDIS_URL": redis_server.url,
    }
    proc = subprocess.Popen([sys.executable, "-m", "arpo.services.controller"], env=env, cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/healthz").status_code == 200:
                break
        except httpx.TransportError:
            time.sleep(0.2)
    try:
        yield url
    finally:
        proc.terminate()
        proc.wait(10)
        asyncio.run(cleanup(before))


def test_fuzzing_the_api_finds_no_server_error(controller: str) -> None:
    """Schemathesis cases from the controller's own OpenAPI document, every operation, with the token."""
    schema = schemathesis.openapi.from_url(f"{controller}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 8
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
        def fuzz(case: Any) -> None:
            case.call_and_validate(headers=AUTH, checks=[not_a_server_error])

        fuzz()
