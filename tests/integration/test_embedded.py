"""`arpo run` embedded: every service in one process on the built-in tiny model and task."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from redis.asyncio import Redis

from arpo.embedded import Embedded, EmbeddedOptions
from arpo.localredis import LocalRedis
from arpo.proto.runs import RunSpec, RunState, StepMetrics, ValidationSpec
from arpo.services.controller.app import create_app
from arpo.services.controller.registry import RunRegistry
from arpo.services.controller.settings import ControllerSettings

ROOT = Path(__file__).parents[2]
SPEC = RunSpec.model_validate(
    {
        "name": "embedded-test",
        "model": {"name_or_path": "arpo:tiny", "dtype": "float32"},
        "dataset": {"path_or_name": "arpo:arith", "metric": "exact_match"},
        "config": {
            "rollout": {"max_response_tokens": 24, "max_tool_calls": 1},
            "branching": {"group_size": 4, "initial_rollouts": 2, "entropy_window": 4},
            "optim": {"lr": 1e-4, "batch_prompts": 2, "mini_batch_prompts": 1, "total_steps": 2},
        },
    }
)
VALIDATED = SPEC.model_copy(
    update={"validation": ValidationSpec(split="train", questions=3, every_steps=2, temperature=0.0)}
)


@pytest.fixture(autouse=True)
def redis_url(redis_server: LocalRedis, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("REDIS_URL", redis_server.url)
    return redis_server.url


async def cleanup(url: str, run_id: str) -> None:
    redis = Redis.from_url(url)
    await RunRegistry(redis).delete(run_id)
    await redis.aclose()


def test_an_embedded_run_trains_publishes_checkpoints_and_reports(tmp_path: Path, redis_url: str) -> None:
    run = Embedded(VALIDATED, EmbeddedOptions(directory=tmp_path))
    done = asyncio.run(run.run())
    assert [m.step for m in done] == [0, 1] and run.run_id is not None
    assert all(m.trees == 2 and m.trajectories == 8 and m.time_train_s is not None for m in done)
    out = tmp_path / run.run_id
    assert sorted(p.name for p in (out / "weights").iterdir()) == ["v000001", "v000002"]
    assert (out / "checkpoints" / "latest").read_text() == "step-2"
    assert list((out / "tensorboard").iterdir())
    assert run.plot == out / "curves.png" and run.plot.read_bytes().startswith(b"\x89PNG")

    async def read() -> None:
        redis = Redis.from_url(redis_url)
        app = create_app(redis, ControllerSettings(auth_disabled=True))
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://c") as api:
            status = (await api.get(f"/v1/runs/{run.run_id}")).json()
            assert (status["state"], status["step"], status["reason"]) == ("finished", 2, "2 steps done")
            trees = (await api.get(f"/v1/runs/{run.run_id}/trees/0")).json()
            assert len(trees) == 2 and all(len(t["trajectories"]) == 4 for t in trees)
            node = trees[0]["nodes"][1]
            assert len(node["entropies"]) == len(node["token_ids"]) > 0
            assert len((await api.get(f"/v1/runs/{run.run_id}/metrics")).json()) == 2
            validation = (await api.get(f"/v1/runs/{run.run_id}/validation")).json()
            # the initial policy, then every 2 steps (the last step is 2): versions 0 and 2
            assert [(v["step"], v["policy_version"], v["questions"]) for v in validation] == [
                (0, 0, 3),
                (2, 2, 3),
            ]
            assert all(0 <= v["accuracy"] <= 1 and v["failed"] == 0 for v in validation)
        await redis.aclose()

    asyncio.run(read())
    asyncio.run(cleanup(redis_url, run.run_id))


def test_a_stop_finishes_the_step_and_a_resume_continues(tmp_path: Path, redis_url: str) -> None:
    run = Embedded(SPEC, EmbeddedOptions(directory=tmp_path))

    async def stop_after_first(m: StepMetrics) -> None:
        run.stop()

    first = asyncio.run(run.run(on_step=stop_after_first))
    assert [m.step for m in first] == [0] and run.run_id is not None

    async def state() -> tuple[RunState, str | None]:
        redis = Redis.from_url(redis_url)
        status = await RunRegistry(redis).get(str(run.run_id))
        await redis.aclose()
        return status.state, status.reason

    assert asyncio.run(state()) == (RunState.FINISHED, "stopped after step 1")
    again = Embedded(SPEC, EmbeddedOptions(directory=tmp_path, run_id=run.run_id))
    with pytest.raises(ValueError, match="is finished"):  # an ended run is not restarted
        asyncio.run(again.run())
    asyncio.run(cleanup(redis_url, run.run_id))


def test_the_cli_refuses_a_bad_spec_naming_the_field(tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        "model: {name_or_path: arpo:tiny}\ndataset: {path_or_name: arpo:arith}\n"
        "config: {branching: {group_size: 2, initial_rollouts: 4}}\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "arpo", "run", str(spec)], capture_output=True, text=True, cwd=ROOT
    )
    assert done.returncode == 2 and "initial_rollouts" in done.stderr
    unreachable = subprocess.run(
        [sys.executable, "-m", "arpo", "status", "--remote", "http://127.0.0.1:9"],
        capture_output=True,
        text=True,
    )
    assert unreachable.returncode == 3 and "unreachable" in unreachable.stderr
