"""Shared fixtures. Redis is real: REDIS_URL, else 127.0.0.1:6379, else a private server we start."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import redis

from arpo.localredis import LocalRedis, connect_or_start


@pytest.fixture(scope="session")
def redis_server() -> Iterator[LocalRedis]:
    server = connect_or_start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def redis_client(redis_server: LocalRedis) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_server.url, decode_responses=True)
    yield client
    client.close()


@pytest.fixture
def run_id(redis_client: redis.Redis) -> Iterator[str]:
    """A fresh run id whose keys are deleted after the test (the server may be shared)."""
    from arpo.proto import keys

    rid = f"test-{uuid.uuid4().hex[:12]}"
    yield rid
    for key in redis_client.scan_iter(match=keys.run_keys_pattern(rid)):
        redis_client.delete(key)
