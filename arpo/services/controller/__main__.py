"""`python -m arpo.services.controller`: the REST API for runs (settings: ARPO_CONTROLLER_*)."""

from __future__ import annotations

import logging
import sys

import uvicorn
from redis.asyncio import Redis

from arpo.localredis import connect_or_start
from arpo.services.controller.app import create_app
from arpo.services.controller.settings import ControllerSettings


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = ControllerSettings.from_env()
    except ValueError as err:
        sys.stderr.write(f"arpo controller: {err}\n")
        return 2
    url = settings.redis_url or connect_or_start().url
    uvicorn.run(create_app(Redis.from_url(url), settings), host=settings.host, port=settings.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
