"""`python -m arpo.services.learner`: the learner of one run (settings: ARPO_LEARNER_*).

Loads the run's spec (a file, or the run's spec in Redis), the policy and its tokenizer by name or path,
the prompts, and runs the step loop until `optim.total_steps`, resuming from the last checkpoint. SIGTERM
finishes the current step (its checkpoint included) and exits.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError
from redis.asyncio import Redis

from arpo.config import ConfigError
from arpo.localredis import connect_or_start
from arpo.proto import keys
from arpo.proto.runs import RunSpec
from arpo.services.agent.store import TreeStore
from arpo.services.learner.data import DatasetError, load_prompts
from arpo.services.learner.loop import StepLoop
from arpo.services.learner.settings import LearnerSettings
from arpo.services.learner.torch_backend import TorchLearner
from arpo.services.rollout.client import RolloutClient
from arpo.services.rollout.engine import TokenizedEngine

log = logging.getLogger("arpo.learner")
PROBE_TOKENS = 64


async def load_spec(settings: LearnerSettings, redis: Redis) -> RunSpec:
    """The run's spec from ARPO_LEARNER_SPEC, else from Redis; ConfigError names what is wrong."""
    if settings.spec is not None:
        path = Path(settings.spec)
        try:
            return RunSpec.model_validate(yaml.safe_load(path.read_text()))
        except OSError as err:
            raise ConfigError(f"ARPO_LEARNER_SPEC: cannot read {path}: {err.strerror}") from None
        except ValidationError as err:
            raise ConfigError(
                f"ARPO_LEARNER_SPEC: {path}: {err.errors()[0]['loc']}: {err.errors()[0]['msg']}"
            ) from None
    raw = await redis.get(keys.run_spec(settings.run_id))
    if raw is None:
        raise ConfigError(f"ARPO_LEARNER_SPEC: unset, and run {settings.run_id!r} has no spec in Redis")
    return RunSpec.model_validate_json(raw)


def load_policy(spec: RunSpec, device: str | None) -> tuple[Any, TokenizedEngine]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from arpo.services.rollout.hf import resolve_dtype

    ref = spec.model
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    tokenizer = AutoTokenizer.from_pretrained(
        ref.name_or_path, revision=ref.revision, trust_remote_code=ref.trust_remote_code
    )
    model: Any = AutoModelForCausalLM.from_pretrained(
        ref.name_or_path,
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


async def serve(settings: LearnerSettings) -> int:
    redis = Redis.from_url(settings.redis_url or connect_or_start().url)
    spec = await load_spec(settings, redis)
    prompts = load_prompts(spec.dataset, spec.config.reward.default_metric)
    model, tokens = load_policy(spec, settings.device)

    def render(question: str) -> list[int]:
        return tokens.chat_prompt([{"role": "user", "content": question}])

    servers = {url: RolloutClient(url) for url in settings.rollouts}
    directory = Path(settings.directory) / settings.run_id
    probe_ids = render(prompts[0].question)[:PROBE_TOKENS]
    learner = make_learner(model, spec, settings)
    writer = None
    if settings.tensorboard:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(directory / "tensorboard"))
    loop = StepLoop(
        TreeStore(redis, settings.run_id),
        learner,
        spec.config,
        prompts,
        render,
        servers,
        directory,
        probe_ids,
        writer,
    )
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, loop.stop)
    state = loop.resume()
    log.info(
        "learner for run %s at step %d (policy version %d)", settings.run_id, state.step, state.policy_version
    )
    try:
        for metrics in await loop.run(spec.config.optim.total_steps, settings.step_timeout_s):
            log.info("step %d: reward %.3f, loss %s", metrics.step, metrics.reward_mean, metrics.policy_loss)
    finally:
        for client in servers.values():
            await client.close()
        if writer is not None:
            writer.close()
        await redis.aclose()
    return 0


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return asyncio.run(serve(LearnerSettings.from_env()))
    except (ValueError, ConfigError, DatasetError) as err:
        sys.stderr.write(f"arpo learner: {err}\n")
        return 2


if __name__ == "__main__":
    sys.exit(main())
