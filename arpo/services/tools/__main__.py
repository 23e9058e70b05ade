"""`python -m arpo.services.tools`: the sandboxed Python and search service (settings: ARPO_TOOLS_*)."""

from __future__ import annotations

import logging
import os
import sys

import uvicorn
from fastapi import FastAPI
from redis.asyncio import Redis

from arpo.services.tools.app import create_app
from arpo.services.tools.sandbox import Sandbox, SandboxError
from arpo.services.tools.search import Searcher, SearchError, configured_backends
from arpo.services.tools.settings import ToolsSettings


def build_app(settings: ToolsSettings) -> FastAPI:
    """The service wired from its settings; SandboxError / SearchError say what is missing."""
    sandbox = Sandbox(settings)
    redis_url = settings.redis_url or os.environ.get("REDIS_URL")
    cache = Redis.from_url(redis_url) if redis_url else None
    searcher = Searcher(
        configured_backends(settings),
        settings.search_backend,
        settings.snippet_chars,
        cache=cache,
        cache_ttl_s=settings.cache_ttl_s,
    )
    return create_app(sandbox, searcher, settings)


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = ToolsSettings.from_env()
        app = build_app(settings)
    except (ValueError, SandboxError, SearchError) as err:
        sys.stderr.write(f"arpo tools: {err}\n")
        return 2
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="info")
    return 0


if __name__ == "__main__":
    sys.exit(main())
