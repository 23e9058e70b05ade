"""The learner's step loop with real agent workers on a real Redis (scripted engine and tools)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from redis.asyncio import Redis
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch.utils.tensorboard import SummaryWriter

from arpo.config import RunConfig
from arpo.core.rewards import AnswerMetric
from arpo.localredis import LocalRedis
from arpo.proto import keys
from arpo.proto.runs import DatasetRef, StepMetrics
from arpo.services.agent.store import TreeStore
from arpo.services.agent.trajectory import Context
from arpo.services.agent.worker import Worker
from arpo.services.learner.data import DatasetError, batch_at, load_prompts
from arpo.services.learner.loop import LoopState, StepLoop
from arpo.services.learner.torch_backend import TorchLearner
from arpo.services.rollout.hf import HFEngine
from tests.integration.agent_helpers import CharTokenizer, ScriptedGenerator, ScriptedTools

CONFIG = RunConfig.model_validate(
    {
        "branching": {"group_size": 2, "initial_rollouts": 2, "entropy_window": 4},
        "optim": {"lr": 1e-4, "batch_prompts": 2, "mini_batch_prompts": 1},
        "rollout": {"max_response_tokens": 256},
    }
)


def dataset(tmp_path: Path) -> DatasetRef:
    path = tmp_path / "train.jsonl"
    rows = [{"id": f"p{i}", "question": f"What is {i} + {4 - i}?", "answer": "4"} for i in range(3)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return DatasetRef(path_or_name=str(path), metric=AnswerMetric.MATH)


def test_prompts_load_and_order(tmp_path: Path) -> None:
    prompts = load_prompts(dataset(tmp_path), AnswerMetric.F1)
    assert [p.prompt_id for p in prompts] == ["p0", "p1", "p2"] and prompts[0].metric is AnswerMetric.MATH
    first = [p.prompt_id for p in batch_at(prompts, 0, 6, seed=1)]
    assert sorted(first[:3]) == sorted(first[3:]) == ["p0", "p1", "p2"]  # each pass is a permutation
    assert [p.prompt_id for p in batch_at(prompts, 2, 2, seed=1)] == first[2:4]  # resumable by position
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "q", "answer": 4}\n')
    with pytest.raises(DatasetError, match=r"bad\.jsonl:1: field 'answer' must be a string or a list"):
        load_prompts(DatasetRef(path_or_name=str(bad)), AnswerMetric.F1)


def test_two_steps_then_a_resumed_third(
    tmp_path: Path, tiny_model_dir: Path, redis_server: LocalRedis
) -> None:
    run_id = f"loop-{uuid.uuid4().hex[:8]}"
    prompts = load_prompts(dataset(tmp_path), AnswerMetric.F1)

    def loop(redis: Redis, tensorboard: SummaryWriter | None = None) -> StepLoop:
        model = HFEngine.from_pretrained(
            str(tiny_model_dir), dtype="float32", device="cpu", static=False
        ).model
        learner = TorchLearner(model, CONFIG)
        store = TreeStore(redis, run_id, retention_s=600)
        render = CharTokenizer().encode
        return StepLoop(
            store, learner, CONFIG, prompts, render, {}, tmp_path / "run", [1, 2, 3, 4], tensorboard
        )

    async def go() -> tuple[list[StepMetrics], list[StepMetrics], LoopState]:
        redis = Redis.from_url(redis_server.url)
        store = TreeStore(redis, run_id, retention_s=600)
        ctx = Context(store, ScriptedGenerator(), ScriptedTools(), CharTokenizer(), CONFIG)  # type: ignore[arg-type]
        worker = Worker(ctx, "w", max_inflight=8, block_ms=50)
        work = asyncio.create_task(worker.run())
        writer = SummaryWriter(str(tmp_path / "tb"))
        first = await loop(redis, writer).run(2)
        writer.close()
        again = loop(redis)  # a new learner process: resumes from the checkpoint
        resumed = again.resume()
        third = await again.run(3)
        worker.stop()
        await work
        await redis.aclose()
        return first, third, resumed

    first, third, resumed = asyncio.run(go())
    assert [m.step for m in first] == [0, 1] and [m.policy_version for m in first] == [0, 1]
    assert resumed == LoopState(step=2, policy_version=2, data_position=4)
    assert [m.step for m in third] == [2] and third[0].policy_version == 2
    for m in first + third:
        assert (m.trees, m.trajectories) == (2, 4) and m.reward_mean == pytest.approx(1.0)
        assert m.time_step_s is not None and m.grad_norm is not None
        assert m.time_generate_s is not None and m.time_tool_wait_s is not None
        assert m.time_generate_s >= 0 and m.time_tool_wait_s >= 0
    run = tmp_path / "run"
    assert sorted(p.name for p in (run / "weights").iterdir()) == ["v000001", "v000002", "v000003"]
    assert (run / "checkpoints" / "latest").read_text() == "step-3"
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    rewards = events.Scalars("arpo/reward_mean")
    assert [(e.step, e.value) for e in rewards] == [(0, pytest.approx(1.0)), (1, pytest.approx(1.0))]
    assert len(events.Scalars("arpo/time_train_s")) == 2

    async def cleanup() -> int:
        redis = Redis.from_url(redis_server.url)
        n = await redis.xlen(keys.run_metrics(run_id))
        async for key in redis.scan_iter(match=keys.run_keys_pattern(run_id)):
            await redis.delete(key)
        await redis.aclose()
        return n

    assert asyncio.run(cleanup()) == 3


def test_learner_entry_point_refuses_what_it_cannot_use(tmp_path: Path) -> None:
    def run(**env: str) -> subprocess.CompletedProcess[str]:
        full = {**os.environ, **{f"ARPO_LEARNER_{k.upper()}": v for k, v in env.items()}}
        return subprocess.run(
            [sys.executable, "-m", "arpo.services.learner"], env=full, capture_output=True, text=True
        )

    bad = run(run_id="bad id!")
    assert bad.returncode == 2 and "ARPO_LEARNER_RUN_ID" in bad.stderr
    missing = run(run_id="r1", spec=str(tmp_path / "nope.yaml"))
    assert missing.returncode == 2 and "ARPO_LEARNER_SPEC: cannot read" in missing.stderr
    spec = tmp_path / "spec.yaml"
    spec.write_text(f"model: {{name_or_path: x}}\ndataset: {{path_or_name: {tmp_path / 'none.jsonl'}}}\n")
    no_data = run(run_id="r1", spec=str(spec))
    assert no_data.returncode == 2 and "none.jsonl: not a file" in no_data.stderr
