"""The learner's step loop (synchronous mode, the paper's: DESIGN.md §4.6).

One step: seed a tree per prompt of the batch (the agent workers grow them), wait until every tree of
the step is complete, train on them (`step.train_on_trees`), publish the new policy version to the
rollout servers, checkpoint, and append the step's metrics to the run's metrics stream. A restarted
learner resumes from the last checkpoint: the step, the policy version and the data position come back,
and a step whose trees were already seeded is not seeded twice (tree creation is idempotent).

Timing: the rollout phase's wall-clock time is split into `time_generate_s` and `time_tool_wait_s` in
the proportion of the trajectories' summed seconds spent generating and waiting on tools (trajectories
run concurrently, so their own sums exceed the wall-clock time).
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from arpo.config import RunConfig
from arpo.evaluate import Validator
from arpo.proto import keys
from arpo.proto.runs import StepMetrics, ValidationMetrics
from arpo.proto.tree import Tree, TreeSeed
from arpo.services.agent.store import TreeStore
from arpo.services.learner import checkpoint
from arpo.services.learner.data import Prompt, batch_at
from arpo.services.learner.publish import publish
from arpo.services.learner.step import train_on_trees
from arpo.services.learner.torch_backend import TorchLearner
from arpo.services.rollout.client import RolloutClient


@dataclass
class LoopState:
    step: int = 0
    policy_version: int = 0
    data_position: int = 0


class StepLoop:
    def __init__(
        self,
        store: TreeStore,
        learner: TorchLearner,
        config: RunConfig,
        prompts: list[Prompt],
        render: Callable[[str], list[int]],
        servers: dict[str, RolloutClient],
        directory: Path,
        probe_ids: list[int],
        tensorboard: Any | None = None,
        validator: Validator | None = None,
    ) -> None:
        """`tensorboard`: a SummaryWriter (or anything with add_scalar and flush) for each step's metrics;
        `validator`: the run's periodic validation, run between steps (while no tree is growing)."""
        self.store, self.learner, self.config, self.prompts = store, learner, config, prompts
        self.render, self.servers, self.directory, self.probe_ids = render, servers, directory, probe_ids
        self.tensorboard, self.validator = tensorboard, validator
        self.state = LoopState()
        self.rng = random.Random(config.seed)
        self._stopping = False

    def stop(self) -> None:
        """Finish the running step (checkpoint included), then return from `run`."""
        self._stopping = True

    def resume(self) -> LoopState:
        resumed = checkpoint.load(self.directory / "checkpoints", self.learner)
        if resumed is not None:
            self.state = LoopState(resumed.step, resumed.policy_version, resumed.data_position)
        return self.state

    def seeds(self) -> list[TreeSeed]:
        b, s = self.config.branching, self.state
        batch = batch_at(self.prompts, s.data_position, self.config.optim.batch_prompts, self.config.seed)
        return [
            TreeSeed(
                run_id=self.store.run_id,
                step=s.step,
                prompt_id=p.prompt_id,
                tree_id=f"s{s.step}-{s.data_position + i}",
                prompt_token_ids=self.render(p.question),
                prompt_text=p.question,
                answers=p.answers,
                metric=p.metric,
                budget=b.group_size,
                initial=b.initial_rollouts,
                policy_version=s.policy_version,
            )
            for i, p in enumerate(batch)
        ]

    async def wait_for(self, seeds: list[TreeSeed], timeout_s: float) -> list[Tree]:
        """Block until every seeded tree is complete (read from the completed-trees stream)."""
        wanted = {s.tree_id for s in seeds}
        step = seeds[0].step
        done: set[str] = set()
        last = "0-0"
        deadline = time.monotonic() + timeout_s
        while done != wanted:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"step {step}: {len(wanted - done)} of {len(wanted)} trees still incomplete"
                )
            got: Any = await self.store.redis.xread({self.store.completed: last}, block=500, count=1000)
            for _, entries in got or []:
                for entry_id, fields in entries:
                    last = entry_id
                    body = json.loads(fields[b"body"])
                    if body["step"] == step and body["tree_id"] in wanted:
                        done.add(body["tree_id"])
        return [await self.store.tree(step, tree_id) for tree_id in sorted(wanted)]

    async def _generate_share(self, seeds: list[TreeSeed]) -> float:
        """Of the trajectories' summed seconds, the share spent generating (the rest waited on tools)."""
        generate = tool = 0.0
        for seed in seeds:
            meta = await self.store.meta(seed.step, seed.tree_id)
            generate += float(meta.get("generate_s", 0.0))
            tool += float(meta.get("tool_s", 0.0))
        return generate / (generate + tool) if generate + tool > 0 else 1.0

    async def run_step(self, timeout_s: float = 3600.0) -> StepMetrics:
        started = time.perf_counter()
        seeds = self.seeds()
        for seed in seeds:
            await self.store.create(seed)
        trees = await self.wait_for(seeds, timeout_s)
        generated = time.perf_counter()
        generate_share = await self._generate_share(seeds)
        s = self.state
        metrics = await asyncio.to_thread(
            train_on_trees, self.learner, trees, self.config, s.step, s.policy_version, self.rng
        )
        trained = time.perf_counter()
        version = s.policy_version + 1
        await publish(self.learner, version, self.directory / "weights", self.servers, self.probe_ids)
        published = time.perf_counter()
        self.state = LoopState(s.step + 1, version, s.data_position + len(seeds))
        await asyncio.to_thread(
            checkpoint.save,
            self.directory / "checkpoints",
            self.state.step,
            version,
            self.state.data_position,
            self.learner,
        )
        metrics = metrics.model_copy(
            update={
                "time_generate_s": (generated - started) * generate_share,
                "time_tool_wait_s": (generated - started) * (1.0 - generate_share),
                "time_train_s": trained - generated,
                "time_publish_s": published - trained,
                "time_step_s": time.perf_counter() - started,
            }
        )
        await self.store.redis.xadd(keys.run_metrics(self.store.run_id), {"body": metrics.model_dump_json()})
        self._scalars("arpo", metrics, metrics.step)
        return metrics

    def _scalars(self, prefix: str, metrics: StepMetrics | ValidationMetrics, step: int) -> None:
        if self.tensorboard is None:
            return
        for name, value in metrics.model_dump(exclude={"step"}).items():
            if isinstance(value, int | float):
                self.tensorboard.add_scalar(f"{prefix}/{name}", value, step)
        self.tensorboard.flush()

    async def validate(self, last_step: int) -> ValidationMetrics | None:
        """Validate the current policy if the run's validation is due at this step (recorded in the run's
        validation stream and TensorBoard); None if not due or not configured."""
        s = self.state
        if self.validator is None or not self.validator.due(s.step, last_step):
            return None
        metrics = await self.validator(s.step, s.policy_version)
        await self.store.redis.xadd(
            keys.run_validation(self.store.run_id), {"body": metrics.model_dump_json()}
        )
        self._scalars("validation", metrics, s.step)
        return metrics

    async def run(
        self,
        steps: int,
        step_timeout_s: float = 3600.0,
        on_step: Callable[[StepMetrics], Awaitable[None]] | None = None,
        on_validation: Callable[[ValidationMetrics], Awaitable[None]] | None = None,
    ) -> list[StepMetrics]:
        """Resume, then run until `steps` steps are done in total (or `stop()`); `on_step` is awaited
        after each step (it may call `stop()`), `on_validation` after each validation."""

        async def validate() -> None:
            if (v := await self.validate(steps)) is not None and on_validation is not None:
                await on_validation(v)

        self.resume()
        if self.state.step == 0:
            await validate()
        done = []
        while self.state.step < steps and not self._stopping:
            done.append(await self.run_step(step_timeout_s))
            if on_step is not None:
                await on_step(done[-1])
            await validate()
        return done

    @property
    def stopping(self) -> bool:
        return self._stopping
