"""`python -m arpo.services.agent`: an agent worker for one run (settings: ARPO_AGENT_*)."""

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
from arpo.proto import keys
from arpo.proto.runs import RunSpec
from arpo.services.agent.pool import RolloutPool
from arpo.services.agent.settings import AgentSettings
from arpo.services.agent.store import TreeStore
from arpo.services.agent.trajectory import Context
from arpo.services.agent.worker import Worker
from arpo.services.rollout.engine import TokenizedEngine
from arpo.services.tools.client import ToolsClient

log = logging.getLogger("arpo.agent")


async def _run_spec(redis: Redis, run_id: str) -> RunSpec | None:
    raw = await redis.get(keys.run_spec(run_id))
    return None if raw is None else RunSpec.model_validate_json(raw)


async def serve(settings: AgentSettings) -> int:
    redis = Redis.from_url(settings.redis_url or connect_or_start().url)
    spec = await _run_spec(redis, settings.run_id)
    if settings.config is not None:
        config = load_config(Path(settings.config))
    elif spec is not None:
        config = spec.config
    else:
        config = RunConfig()
        log.warning(
            "run %s has no spec in Redis and ARPO_AGENT_CONFIG is unset: default RunConfig", settings.run_id
        )
    tokenizer_name = settings.tokenizer or (spec.model.name_or_path if spec else None)
    if tokenizer_name is None:
        raise ConfigError("ARPO_AGENT_TOKENIZER: unset, and the run has no spec to take the model from")
    pool = RolloutPool.from_urls(settings.rollouts)
    tools = ToolsClient(settings.tools_url, timeout_s=config.rollout.tool_timeout_s + 30)
    from transformers import AutoTokenizer

    tokenizer = TokenizedEngine(AutoTokenizer.from_pretrained(resolve_model(tokenizer_name)), tokenizer_name)
    ctx = Context(TreeStore(redis, settings.run_id), pool, tools, tokenizer, config)
    worker = Worker(
        ctx,
        settings.consumer,
        max_inflight=settings.max_inflight,
        idle_timeout_s=settings.idle_timeout_s,
        max_attempts=settings.max_attempts,
        grace_s=settings.grace_s,
    )
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, worker.stop)
    log.info("agent %s serving run %s", settings.consumer, settings.run_id)
    try:
        await worker.run()
    finally:
        await pool.close()
        await tools.close()
        await redis.aclose()
    return 0


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
