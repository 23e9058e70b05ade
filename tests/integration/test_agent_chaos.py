"""Chaos: worker processes are SIGKILLed at random while 2,000 branch requests flow; Redis restarts.

Every tree must complete with exactly M leaves, no trajectory twice, none lost, and redelivery must have
happened. The second test also kills Redis itself mid-run (a server this test starts, AOF with
appendfsync always) and restarts it on the same port and data directory.
"""

from __future__ import annotations

import asyncio
import random
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from redis.asyncio import Redis

from arpo.localredis import LocalRedis, free_port, server_binary
from arpo.proto import keys
from arpo.proto.tree import TreeSeed
from arpo.services.agent.store import TreeStore
from tests.integration.agent_helpers import two_plus_two

ROOT = Path(__file__).parents[2]
M, N = 8, 4


def seeds(run_id: str, trees: int) -> list[TreeSeed]:
    return [two_plus_two(run_id, f"t{i}", M, N) for i in range(trees)]


class Workers:
    """Worker processes that can be killed and replaced."""

    def __init__(self, url: str, run_id: str) -> None:
        self.url, self.run_id, self.procs, self.spawned = url, run_id, [], 0

    def spawn(self) -> None:
        self.spawned += 1
        args = [
            sys.executable,
            "-m",
            "tests.integration.chaos_worker",
            self.url,
            self.run_id,
            f"w{self.spawned}",
        ]
        self.procs.append(subprocess.Popen(args, cwd=ROOT, stderr=subprocess.DEVNULL))

    def kill_one(self, rng: random.Random) -> None:
        victim = self.procs.pop(rng.randrange(len(self.procs)))
        victim.send_signal(signal.SIGKILL)
        victim.wait()

    def close(self) -> None:
        for p in self.procs:
            p.kill()
            p.wait()


async def run_chaos(url: str, run_id: str, trees: int, restart_redis: object = None) -> TreeStore:
    store = TreeStore(Redis.from_url(url), run_id, retention_s=3600)
    for s in seeds(run_id, trees):
        await store.create(s)
    workers, rng = Workers(url, run_id), random.Random(7)
    for _ in range(3):
        workers.spawn()
    deadline = time.monotonic() + 300
    kills = 0
    try:
        while time.monotonic() < deadline:
            await asyncio.sleep(1.5)
            try:
                done = await store.redis.xlen(store.completed)
            except redis.exceptions.ConnectionError:
                continue
            if done == trees:
                await asyncio.sleep(3)  # the survivors reclaim and acknowledge what the killed left pending
                break
            workers.kill_one(rng)
            workers.spawn()
            kills += 1
            if kills == 3 and callable(restart_redis):
                restart_redis()
                store = TreeStore(Redis.from_url(url), run_id, retention_s=3600)
    finally:
        workers.close()
    assert kills >= 2, "the run finished before the chaos began: make it bigger"
    return store


async def check_trees(store: TreeStore, trees: int) -> None:
    assert await store.redis.xlen(store.completed) == trees  # each tree announced exactly once
    for i in range(trees):
        tree = await store.tree(0, f"t{i}")
        leaves = [t.leaf_node_id for t in tree.trajectories]
        requests = {leaf.rsplit(".n", 1)[0] for leaf in leaves}
        assert len(leaves) == M and len(requests) == M, (i, leaves)  # exactly M, none twice
        assert tree.dead_letters == 0
        meta = await store.meta(0, f"t{i}")
        assert meta["started"] == meta["finished"] == str(M) and meta["state"] == "complete"
    stats = await store.stats()
    assert stats.get("reclaimed", 0) > 0  # killed workers' requests were redelivered
    pending = await store.redis.xpending(store.stream, store.group)
    assert pending["pending"] == 0  # every delivery acknowledged in the end, redeliveries included


@pytest.fixture
def run_id(redis_server: LocalRedis) -> Iterator[str]:
    rid = f"chaos-{uuid.uuid4().hex[:8]}"
    yield rid
    client = redis.Redis.from_url(redis_server.url)
    for key in client.scan_iter(match=keys.run_keys_pattern(rid)):
        client.delete(key)


def test_sigkilled_workers_lose_and_duplicate_nothing(redis_server: LocalRedis, run_id: str) -> None:
    trees = 250  # x M = 2,000 branch requests

    async def go() -> None:
        store = await run_chaos(redis_server.url, run_id, trees)
        await check_trees(store, trees)

    asyncio.run(go())


def test_redis_restart_with_aof_mid_run(tmp_path: Path) -> None:
    port, data = free_port(), tmp_path / "redis"
    data.mkdir()
    args = [
        str(server_binary()),
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--dir",
        str(data),
        "--save",
        "",
    ]
    args += ["--appendonly", "yes", "--appendfsync", "always"]
    url = f"redis://127.0.0.1:{port}/0"
    server = {"proc": subprocess.Popen(args, stdout=subprocess.DEVNULL)}

    def wait_up() -> None:
        for _ in range(200):
            try:
                if redis.Redis.from_url(url).ping():
                    return
            except redis.exceptions.ConnectionError:
                time.sleep(0.05)
        raise AssertionError("redis did not come back")

    def restart() -> None:
        server["proc"].send_signal(signal.SIGKILL)  # no shutdown save: only the AOF survives
        server["proc"].wait()
        server["proc"] = subprocess.Popen(args, stdout=subprocess.DEVNULL)
        wait_up()

    wait_up()
    trees = 60
    try:
        store = asyncio.run(run_chaos(url, "aof-run", trees, restart_redis=restart))

        async def check() -> None:
            await check_trees(TreeStore(Redis.from_url(url), "aof-run"), trees)

        asyncio.run(check())
    finally:
        server["proc"].kill()
        server["proc"].wait()
    del store
