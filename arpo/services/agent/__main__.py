"""`python -m arpo.services.agent`: an agent worker (settings: ARPO_AGENT_*).

With ARPO_AGENT_RUN_ID it serves that run until SIGTERM. Without, it follows the controller's registry:
it serves the oldest running run until that run ends, then the next one (tokenizer and config from
each run's spec). SIGTERM lets running trajectories finish (`grace_s`) and exits. With ARPO_AGENT_PORT it
serves GET /healthz (`arpo.services.health`).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from pathlib import Path

from redis.asyncio import Redis

from arpo.builtins import resolve_model
from arpo.config import ConfigError, RunConfig, load_config
from arpo.localredis import connect_or_start
from arpo.proto.runs import RunSpec, RunState
from arpo.services.agent.pool import RolloutPool
from arpo.services.agent.settings import AgentSettings
from arpo.services.agent.store import TreeStore
from arpo.services.agent.trajectory import Context
from arpo.services.agent.worker import Worker
from arpo.services.controller.registry import ENDED, RunNotFoundError, RunRegistry
from arpo.services.health import HealthServer
from arpo.services.rollout.engine import TokenizedEngine
from arpo.services.tools.client import ToolsClient

log = logging.getLogger("arpo.agent")


def _config(settings: AgentSettings, spec: RunSpec | None, run_id: str) -> RunConfig:
    if settings.config is not None:
        return load_config(Path(settings.config))
    if spec is not None:
        return spec.config
    log.warning("run %s has no spec in Redis and ARPO_AGENT_CONFIG is unset: default RunConfig", run_id)
    return RunConfig()


def _tokenizer(settings: AgentSettings, spec: RunSpec | None) -> TokenizedEngine:
    name = settings.tokenizer or (spec.model.name_or_path if spec else None)
    if name is None:
        raise ConfigError("ARPO_AGENT_TOKENIZER: unset, and the run has no spec to take the model from")
    from transformers import AutoTokenizer

    return TokenizedEngine(AutoTokenizer.from_pretrained(resolve_model(name)), name)


async def _next_run(registry: RunRegistry, poll_s: float, stopping: asyncio.Event) -> str | None:
    """The oldest running run that a learner holds (its lease is alive), waiting for one; None once
    SIGTERM arrived. A run whose learner died is skipped until a learner claims it again."""
    while not stopping.is_set():
        for status in reversed(await registry.runs(limit=1000)):
            if status.state in (RunState.RUNNING, RunState.STOPPING) and await registry.leased(status.run_id):
                return status.run_id
        await asyncio.sleep(poll_s)
    return None


async def _watch(registry: RunRegistry, run_id: str, worker: Worker, poll_s: float) -> None:
    """Stop `worker` when its run ends, is deleted, or has had no learner for 5 polls."""
    orphaned = 0
    while orphaned < 5:
        await asyncio.sleep(poll_s)
        try:
            if (await registry.get(run_id)).state in ENDED:
                break
        except RunNotFoundError:
            break
        orphaned = 0 if await registry.leased(run_id) else orphaned + 1
    log.info("run %s: ended or without a learner; looking for the next run", run_id)
    worker.stop()


async def serve(settings: AgentSettings) -> int:
    redis_url = settings.redis_url or connect_or_start().url
    redis = Redis.from_url(redis_url)
    registry = RunRegistry(redis)
    pool = RolloutPool.from_urls(settings.rollouts)
    stopping = asyncio.Event()
    current: list[Worker] = []
    serving: dict[str, str | None] = {"run_id": None}

    def report() -> dict[str, object]:
        inflight = current[0].inflight if current else 0
        return {"consumer": settings.consumer, "run_id": serving["run_id"], "inflight": inflight}

    def on_signal() -> None:
        stopping.set()
        for worker in current:
            worker.stop()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)
    health = HealthServer("agent", redis_url, report)
    try:
        async with health.running(settings.host, settings.port):
            await _serve_runs(settings, redis, registry, pool, stopping, current, serving)
    finally:
        await pool.close()
        await redis.aclose()
    return 0


async def _serve_runs(
    settings: AgentSettings,
    redis: Redis,
    registry: RunRegistry,
    pool: RolloutPool,
    stopping: asyncio.Event,
    current: list[Worker],
    serving: dict[str, str | None],
) -> None:
    """Serve ARPO_AGENT_RUN_ID, or the registry's running runs one after another, until SIGTERM."""
    while not stopping.is_set():
        run_id = settings.run_id or await _next_run(registry, settings.poll_s, stopping)
        if run_id is None:
            break
        try:
            spec: RunSpec | None = await registry.spec(run_id)
            await registry.seen(run_id, f"agent-{settings.consumer}")
        except RunNotFoundError:
            spec = None  # a run seeded by hand (ARPO_AGENT_RUN_ID), not a controller's
        config = _config(settings, spec, run_id)
        tools = ToolsClient(settings.tools_url, timeout_s=config.rollout.tool_timeout_s + 30)
        ctx = Context(TreeStore(redis, run_id), pool, tools, _tokenizer(settings, spec), config)
        worker = Worker(
            ctx,
            settings.consumer,
            max_inflight=settings.max_inflight,
            idle_timeout_s=settings.idle_timeout_s,
            max_attempts=settings.max_attempts,
            grace_s=settings.grace_s,
        )
        current[:] = [worker]
        serving["run_id"] = run_id
        watch = None if settings.run_id else _watch(registry, run_id, worker, settings.poll_s)
        watcher = None if watch is None else asyncio.create_task(watch)
        log.info("agent %s serving run %s", settings.consumer, run_id)
        try:
            await worker.run()
        finally:
            if watcher is not None:
                watcher.cancel()
            await tools.close()
        serving["run_id"] = None
        if settings.run_id is not None:
            break


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = AgentSettings.from_env()
        return asyncio.run(serve(settings))
    except (ValueError, ConfigError) as err:
        sys.stderr.write(f"arpo agent: {err}\n")
        return 2


if __name__ == "__main__":
    sys.exit(main())
