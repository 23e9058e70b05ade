"""`python -m arpo.services.learner`: the learner (settings: ARPO_LEARNER_*).

With ARPO_LEARNER_RUN_ID it trains that run (its spec from ARPO_LEARNER_SPEC or Redis) and exits;
without, it claims pending runs from the controller's registry, one after another (ARPO_LEARNER_MAX_RUNS
ends it after that many: a Kubernetes Job trains one run). Each run resumes from its last checkpoint
(`service.train_run`). SIGTERM finishes the current step (its checkpoint included) and exits. With
ARPO_LEARNER_PORT it serves GET /healthz (`arpo.services.health`).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from pathlib import Path

import yaml
from pydantic import ValidationError
from redis.asyncio import Redis

from arpo.config import ConfigError
from arpo.localredis import connect_or_start
from arpo.proto import keys
from arpo.proto.runs import RunSpec
from arpo.services.controller.registry import RunRegistry
from arpo.services.health import HealthServer
from arpo.services.learner.data import DatasetError
from arpo.services.learner.loop import StepLoop
from arpo.services.learner.service import train_run
from arpo.services.learner.settings import LearnerSettings
from arpo.services.rollout.client import RolloutClient
from arpo.services.tools.client import ToolsClient

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
    raw = await redis.get(keys.run_spec(settings.run_id or ""))
    if raw is None:
        raise ConfigError(f"ARPO_LEARNER_SPEC: unset, and run {settings.run_id!r} has no spec in Redis")
    return RunSpec.model_validate_json(raw)


async def serve(settings: LearnerSettings) -> int:
    """Train ARPO_LEARNER_RUN_ID, or claim pending runs from the registry one after another."""
    redis_url = settings.redis_url or connect_or_start().url
    redis = Redis.from_url(redis_url)
    registry = RunRegistry(redis)
    servers = {url: RolloutClient(url) for url in settings.rollouts}
    tools = ToolsClient(settings.tools_url) if settings.tools_url else None
    stopping = asyncio.Event()
    current: list[StepLoop] = []

    def on_sigterm() -> None:
        stopping.set()
        for loop in current:
            loop.stop()

    def report() -> dict[str, object]:
        step = current[0].state.step if current else None
        return {"name": settings.name, "run_id": current[0].store.run_id if current else None, "step": step}

    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, on_sigterm)
    health = HealthServer("learner", redis_url, report)
    try:
        async with health.running(settings.host, settings.port):
            await _train_runs(settings, redis, registry, servers, tools, stopping, current)
    finally:
        for client in servers.values():
            await client.close()
        if tools is not None:
            await tools.close()
        await redis.aclose()
    return 0


async def _train_runs(
    settings: LearnerSettings,
    redis: Redis,
    registry: RunRegistry,
    servers: dict[str, RolloutClient],
    tools: ToolsClient | None,
    stopping: asyncio.Event,
    current: list[StepLoop],
) -> None:
    """Train ARPO_LEARNER_RUN_ID, or claim pending runs one after another until SIGTERM or `max_runs`."""
    trained = 0
    while not stopping.is_set() and trained != settings.max_runs:
        if settings.run_id is not None:
            run_id, spec = settings.run_id, await load_spec(settings, redis)
        else:
            claimed = await registry.claim(settings.name)
            if claimed is None:
                await asyncio.sleep(settings.poll_s)
                continue
            run_id, spec = claimed.run_id, await registry.spec(claimed.run_id)
            log.info("claimed run %s", run_id)
        try:
            await train_run(
                redis, run_id, spec, settings, servers, settings.name, current.append, tools=tools
            )
        except Exception:
            if settings.run_id is not None:
                raise
            # Recorded in the registry (failed, with the error); this learner takes the next run.
            log.exception("run %s failed", run_id)
        current.clear()
        trained += 1
        if settings.run_id is not None:
            break


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return asyncio.run(serve(LearnerSettings.from_env()))
    except (ValueError, ConfigError, DatasetError) as err:
        sys.stderr.write(f"arpo learner: {err}\n")
        return 2


if __name__ == "__main__":
    sys.exit(main())
