"""Training one run, as the learner service and the embedded run both do it.

`train_run` loads the policy, builds the configured backend and the step loop, resumes from the run's
last checkpoint, and trains until `optim.total_steps` or a stop. When the run is in the registry (the
controller's), every step is reported there, a stop requested through the controller finishes the
current step and ends the loop, and the run ends FINISHED (or FAILED with the error).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from arpo.builtins import resolve_model
from arpo.config import ConfigError
from arpo.evaluate import Agent, Validator
from arpo.proto.runs import RunSpec, RunState, StepMetrics, ValidationMetrics
from arpo.services.agent.pool import RolloutPool
from arpo.services.agent.store import TreeStore
from arpo.services.controller.registry import LEASE_S, RunNotFoundError, RunRegistry
from arpo.services.learner.data import load_prompts
from arpo.services.learner.loop import StepLoop
from arpo.services.learner.settings import LearnerSettings
from arpo.services.learner.torch_backend import TorchLearner
from arpo.services.rollout.client import RolloutClient
from arpo.services.rollout.engine import TokenizedEngine
from arpo.services.tools.client import ToolsClient

log = logging.getLogger("arpo.learner")
PROBE_TOKENS = 64


def load_policy(spec: RunSpec, device: str | None) -> tuple[Any, TokenizedEngine]:
    """The run's model (any Hugging Face causal LM by name or path) and its tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from arpo.services.rollout.hf import resolve_dtype

    ref = spec.model
    path = resolve_model(ref.name_or_path)
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    tokenizer = AutoTokenizer.from_pretrained(
        path, revision=ref.revision, trust_remote_code=ref.trust_remote_code
    )
    model: Any = AutoModelForCausalLM.from_pretrained(
        path,
        revision=ref.revision,
        dtype=resolve_dtype(ref.dtype, dev),
        trust_remote_code=ref.trust_remote_code,
    )
    return model.to(dev), TokenizedEngine(tokenizer, ref.name_or_path)


def make_learner(model: Any, spec: RunSpec, settings: LearnerSettings) -> TorchLearner:
    """The configured backend around `model`."""
    if settings.backend == "torch":
        return TorchLearner(model, spec.config)
    import torch

    from arpo.services.learner.deepspeed_backend import DeepSpeedLearner, DeepSpeedOptions

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ConfigError(
            "ARPO_LEARNER_BACKEND=deepspeed: the step loop runs in one process; data-parallel ranks are "
            "supported by the update (DeepSpeedLearner) but not yet by the loop: launch one process"
        )
    options = DeepSpeedOptions(
        zero_stage=settings.zero_stage,
        bf16=next(model.parameters()).dtype == torch.bfloat16,
        gradient_checkpointing=settings.gradient_checkpointing,
    )
    return DeepSpeedLearner(model, spec.config, options)


def build_loop(
    redis: Redis,
    run_id: str,
    spec: RunSpec,
    settings: LearnerSettings,
    servers: dict[str, RolloutClient],
    tools: ToolsClient | None = None,
) -> StepLoop:
    """Prompts, policy, backend, TensorBoard writer and validation (given the tool service) of a run,
    wired into its step loop."""
    prompts = load_prompts(spec.dataset, spec.config.reward.default_metric)
    model, tokens = load_policy(spec, settings.device)

    def render(question: str) -> list[int]:
        return tokens.chat_prompt([{"role": "user", "content": question}])

    validator = None
    if spec.validation is not None and tools is None:
        log.warning("run %s: validation needs the tool service (ARPO_LEARNER_TOOLS_URL); skipped", run_id)
    elif spec.validation is not None and tools is not None:
        held_out = spec.dataset.model_copy(update={"split": spec.validation.split})
        validator = Validator(
            spec.validation,
            load_prompts(held_out, spec.config.reward.default_metric),
            Agent(render, RolloutPool(servers), tools, tokens),
            spec.config,
        )

    directory = Path(settings.directory) / run_id
    writer = None
    if settings.tensorboard:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(directory / "tensorboard"))
    return StepLoop(
        TreeStore(redis, run_id),
        make_learner(model, spec, settings),
        spec.config,
        prompts,
        render,
        servers,
        directory,
        render(prompts[0].question)[:PROBE_TOKENS],
        writer,
        validator,
    )


async def _keep_lease(registry: RunRegistry, run_id: str, service: str, loops: list[StepLoop]) -> None:
    """Renew the run's lease; if another learner took it (this one stalled past the TTL), stop."""
    while True:
        await asyncio.sleep(LEASE_S / 3)
        if not await registry.renew(run_id, service):
            log.error("run %s: lost the lease to another learner; stopping after this step", run_id)
            for loop in loops:
                loop.stop()
            return


async def train_run(
    redis: Redis,
    run_id: str,
    spec: RunSpec,
    settings: LearnerSettings,
    servers: dict[str, RolloutClient],
    service: str = "learner",
    on_loop: Callable[[StepLoop], None] | None = None,
    on_step: Callable[[StepMetrics], Awaitable[None]] | None = None,
    tools: ToolsClient | None = None,
    on_validation: Callable[[ValidationMetrics], Awaitable[None]] | None = None,
) -> list[StepMetrics]:
    """Train `run_id` to the end (or a stop); `on_loop` gets the loop before it starts (e.g. to wire
    signals to `loop.stop`), `on_step` each step's metrics, `on_validation` each validation's (which
    needs `tools`)."""
    registry = RunRegistry(redis)
    try:
        await registry.seen(run_id, service)
        registered = True
    except RunNotFoundError:
        registered = False  # a learner pointed at a run by hand (ARPO_LEARNER_SPEC), not a controller's
    current: list[StepLoop] = []
    lease = None
    if registered:
        if not await registry.renew(run_id, service) and await registry.claim(service, run_id) is None:
            raise ConfigError(
                f"run {run_id!r} cannot be trained here: it has ended or another learner holds it"
            )
        lease = asyncio.create_task(_keep_lease(registry, run_id, service, current))
    try:
        loop = build_loop(redis, run_id, spec, settings, servers, tools)
        current.append(loop)
        if registered and (await registry.get(run_id)).state is RunState.STOPPING:
            loop.stop()  # claimed after its learner died mid-stop: end it where its checkpoint is
        if on_loop is not None:
            on_loop(loop)
        state = loop.resume()
        log.info("run %s: at step %d (policy version %d)", run_id, state.step, state.policy_version)

        async def step_done(metrics: StepMetrics) -> None:
            log.info("step %d: reward %.3f, loss %s", metrics.step, metrics.reward_mean, metrics.policy_loss)
            if registered:
                status = await registry.report(run_id, metrics, service)
                if status.state is RunState.STOPPING:
                    loop.stop()
            if on_step is not None:
                await on_step(metrics)

        try:
            done = await loop.run(
                spec.config.optim.total_steps, settings.step_timeout_s, step_done, on_validation
            )
        finally:
            if loop.tensorboard is not None:
                loop.tensorboard.close()
    except BaseException as err:
        if registered:
            await registry.finish(run_id, RunState.FAILED, f"{type(err).__name__}: {err}")
        raise
    finally:
        if lease is not None:
            lease.cancel()
            await registry.release(run_id, service)
    if registered:
        reason = f"stopped after step {loop.state.step}" if loop.stopping else f"{loop.state.step} steps done"
        await registry.finish(run_id, RunState.FINISHED, reason)
    return done
