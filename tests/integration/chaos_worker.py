"""A worker process for the chaos test: the real Worker and store, the scripted engine and tools.

python -m tests.integration.chaos_worker REDIS_URL RUN_ID CONSUMER
"""

from __future__ import annotations

import asyncio
import logging
import sys

from redis.asyncio import Redis

from arpo.config import RunConfig
from arpo.services.agent.store import TreeStore
from arpo.services.agent.trajectory import Context
from arpo.services.agent.worker import Worker
from tests.integration.agent_helpers import CharTokenizer, ScriptedGenerator, ScriptedTools

CONFIG = RunConfig.model_validate(
    {
        "branching": {
            "group_size": 8,
            "initial_rollouts": 4,
            "mode": "threshold",
            "alpha": 0.5,
            "beta": 0.2,
            "threshold": 0.6,
            "entropy_window": 4,
        },
        "rollout": {"max_tool_calls": 2, "max_response_tokens": 512},
    }
)


async def main(url: str, run_id: str, consumer: str) -> None:
    store = TreeStore(Redis.from_url(url), run_id, retention_s=3600)
    ctx = Context(store, ScriptedGenerator(delay_s=0.02), ScriptedTools(), CharTokenizer(), CONFIG)
    await Worker(ctx, consumer, max_inflight=16, idle_timeout_s=1.0, max_attempts=20, block_ms=100).run()


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(main(*sys.argv[1:4]))
