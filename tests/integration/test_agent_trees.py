"""ARPO trees grown by a real worker on a real Redis, with the real tool service in process.

The engine is scripted (`agent_helpers`): every trajectory calls python once, then answers; the entropy
of the answer segment is set per test, which makes each fork decision, the budget and the tree shape
exact. One worker with one trajectory in flight, so the order of events is fixed too.
"""

from __future__ import annotations

import asyncio
import math
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from arpo.bench_agent import bench_trees
from arpo.config import RunConfig
from arpo.localredis import LocalRedis
from arpo.proto import keys
from arpo.proto.tree import BranchKind, BranchRequest, Tree, TreeSeed
from arpo.services.agent.pool import RolloutPool
from arpo.services.agent.store import TreeStore
from arpo.services.agent.trajectory import Context
from arpo.services.agent.worker import Worker
from arpo.services.rollout.app import create_app as create_rollout_app
from arpo.services.rollout.client import RolloutClient
from arpo.services.rollout.hf import HFEngine
from arpo.services.rollout.settings import RolloutSettings
from arpo.services.tools.app import create_app
from arpo.services.tools.client import ToolsClient
from arpo.services.tools.sandbox import Sandbox
from arpo.services.tools.search import LocalIndex, Searcher, build_index
from arpo.services.tools.settings import ToolsSettings
from tests.integration.agent_helpers import ANSWER, CALL, CharTokenizer, ScriptedGenerator, two_plus_two

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("index")
    (tmp / "c.jsonl").write_text('{"id": "a", "title": "Four", "text": "two and two make four"}\n')
    build_index(tmp / "c.jsonl", tmp / "index")
    return tmp / "index"


@pytest.fixture
async def tools(index_dir: Path) -> AsyncIterator[ToolsClient]:
    settings = ToolsSettings(max_concurrency=2)
    searcher = Searcher({"local": LocalIndex(index_dir)}, "local", 200)
    app = create_app(Sandbox(settings), searcher, settings)
    async with app.router.lifespan_context(app), ToolsClient.in_process(app, timeout_s=30) as client:
        yield client


@pytest.fixture
async def store(redis_server: LocalRedis) -> AsyncIterator[TreeStore]:
    run_id = f"test-{uuid.uuid4().hex[:10]}"
    redis = Redis.from_url(redis_server.url)
    yield TreeStore(redis, run_id, retention_s=600)
    async for key in redis.scan_iter(match=keys.run_keys_pattern(run_id)):
        await redis.delete(key)
    await redis.aclose()


def config(m: int, n: int, **branching: object) -> RunConfig:
    return RunConfig.model_validate(
        {
            "branching": {
                "group_size": m,
                "initial_rollouts": n,
                "mode": "threshold",
                "entropy_window": 4,
                **branching,
            },
            "rollout": {"max_tool_calls": 2, "max_response_tokens": 512},
        }
    )


def seed(store: TreeStore, tree_id: str, m: int, n: int) -> TreeSeed:
    return two_plus_two(store.run_id, tree_id, m, n)


async def grow(
    store: TreeStore,
    tools: object,
    cfg: RunConfig,
    seeds: list[TreeSeed],
    generator: object,
    tokenizer: object = None,
    **kw: object,
) -> Worker:
    ctx = Context(store, generator, tools, tokenizer or CharTokenizer(), cfg)  # type: ignore[arg-type]
    worker = Worker(ctx, "w1", **kw)  # type: ignore[arg-type]
    for s in seeds:
        assert await store.create(s)
    task = asyncio.create_task(worker.run())
    for _ in range(600):
        if await store.redis.xlen(store.completed) == len(seeds):
            break
        await asyncio.sleep(0.05)
    worker.stop()
    await task
    return worker


def shape(tree: Tree) -> dict[str, str | None]:
    return {n.node_id: n.parent_id for n in tree.nodes}


async def test_normalized_entropy_divides_delta_h_by_ln_vocab(
    store: TreeStore, tools: ToolsClient, redis_server: LocalRedis
) -> None:
    # The scenario below, normalized: ΔH = 1.0 / ln(0x110000) ≈ 0.072, so 0.5 + 0.2 * 0.072 < 0.6: no fork.
    cfg = config(4, 2, alpha=0.5, beta=0.2, threshold=0.6, normalize_entropy=True)
    await grow(store, tools, cfg, [seed(store, "t", 4, 2)], ScriptedGenerator(), max_inflight=1)
    nodes = {n.node_id: n for n in (await store.tree(0, "t")).nodes}
    assert nodes["t.t0.n1"].delta_h == pytest.approx(1.0 / math.log(0x110000))
    assert nodes["t.t0.n1"].forked == 0 and not any(".f0" in node_id for node_id in nodes)


async def test_arpo_forks_after_tool_results_within_the_budget(
    store: TreeStore, tools: ToolsClient, redis_server: LocalRedis
) -> None:
    redis_url = redis_server.url
    # Threshold mode, answer entropy 2.0 vs first-segment 1.0: alpha + beta * 1.0 = 0.7 > 0.6 -> fork.
    cfg = config(4, 2, alpha=0.5, beta=0.2, threshold=0.6)
    await grow(store, tools, cfg, [seed(store, "t", 4, 2)], ScriptedGenerator(), max_inflight=1)
    tree = await store.tree(0, "t")
    assert shape(tree) == {
        "t.root": None,
        "t.t0.n0": "t.root",
        "t.t0.n1": "t.t0.n0",
        "t.t0.n1.f0.n0": "t.t0.n0",  # the fork: another answer after the same tool result
        "t.t1.n0": "t.root",
        "t.t1.n1": "t.t1.n0",
        "t.t1.n1.f0.n0": "t.t1.n0",
    }
    assert len(tree.trajectories) == 4 and tree.dead_letters == 0
    nodes = {n.node_id: n for n in tree.nodes}
    assert nodes["t.t0.n1"].forked == 1 and nodes["t.t0.n1"].delta_h == pytest.approx(1.0)
    assert nodes["t.t0.n1.f0.n0"].forked == 0  # the budget was spent: its decision was granted nothing
    call = nodes["t.t0.n0"]
    assert call.tool_result is not None and call.tool_result.output == "4\n"  # the real sandbox ran it
    assert "<result>\n4\n</result>" in call.text and call.loss_mask[-1] == 0 and call.loss_mask[0] == 1
    for t in tree.trajectories:
        assert t.reward == pytest.approx(1.0) and t.answer == "4" and t.tool_calls == 1
    meta = await store.meta(0, "t")
    assert meta["started"] == meta["finished"] == "4" and meta["state"] == "complete"
    assert float(meta["generate_s"]) > 0 and float(meta["tool_s"]) > 0  # the real sandbox took time
    (record,) = await asyncio.to_thread(lambda: list(bench_trees(store.run_id, redis_url)))
    prompt, with_result, answer = len("Q[t]: what is 2 + 2? "), len(call.token_ids), len(ANSWER)
    assert record["tool_calls_per_leaf"] == 1.0
    assert record["generated_tokens_per_leaf"] == (2 * len(CALL) + 4 * answer) / 4
    computed = prompt + 2 * with_result + 4 * answer  # the prompt and each tool-call segment once
    assert record["tree_vs_independent_tokens"] == round(computed / (4 * (prompt + with_result + answer)), 4)


async def test_grpo_is_n_equals_m(store: TreeStore, tools: ToolsClient) -> None:
    cfg = config(3, 3, alpha=1.0, beta=1.0, threshold=0.0)  # would always fork, but no budget is left
    await grow(store, tools, cfg, [seed(store, "g", 3, 3)], ScriptedGenerator(), max_inflight=1)
    tree = await store.tree(0, "g")
    assert sorted(t.leaf_node_id for t in tree.trajectories) == ["g.t0.n1", "g.t1.n1", "g.t2.n1"]
    assert all(n.forked == 0 for n in tree.nodes)


async def test_refill_starts_all_remaining_at_once(store: TreeStore, tools: ToolsClient) -> None:
    cfg = config(5, 2, alpha=0.0, beta=0.0, threshold=0.5)  # never forks
    stream_before = await store.redis.xlen(store.stream) if await store.redis.exists(store.stream) else 0
    await grow(store, tools, cfg, [seed(store, "r", 5, 2)], ScriptedGenerator(), max_inflight=1)
    tree = await store.tree(0, "r")
    assert len(tree.trajectories) == 5
    entries = await store.redis.xrange(store.stream)
    kinds = [BranchRequest.model_validate_json(f[b"body"]).kind for _, f in entries][stream_before:]
    assert kinds == [BranchKind.ROOT] * 2 + [BranchKind.REFILL] * 3


async def test_tool_limit_and_errors_are_results(store: TreeStore, tools: ToolsClient) -> None:
    # Three calls (one fails in the sandbox) with a limit of 2: the third gets the limit message.
    generator = ScriptedGenerator(
        segments=[
            "<python>1/0</python>",
            "<python>print(1)</python>",
            "<python>print(2)</python>",
            "<answer>\\boxed{4}</answer>",
        ],
        entropies=[1.0, 1.0, 1.0, 1.0],
    )
    cfg = config(1, 1)
    await grow(store, tools, cfg, [seed(store, "l", 1, 1)], generator, max_inflight=1)
    tree = await store.tree(0, "l")
    results = [n.tool_result for n in tree.nodes if n.tool_result is not None]
    assert [r.ok for r in results] == [False, True, False]
    assert results[0].error == "ZeroDivisionError: division by zero"
    assert "tool call limit reached (2 calls)" in (results[2].error or "")
    texts = [n.text for n in tree.nodes if n.tool_result is not None]
    assert "ZeroDivisionError" in texts[0] and "Error: tool call limit reached" in texts[2]
    assert tree.trajectories[0].tool_calls == 3


async def test_malformed_and_poison_messages_go_to_dead_letters(store: TreeStore, tools: ToolsClient) -> None:
    await store.ensure_group()
    await store.redis.xadd(store.stream, {"body": "{not json"})
    await store.redis.xadd(store.stream, {"other": "field"})
    generator = ScriptedGenerator(fail_trees={"Q[bad]"})
    cfg = config(2, 2)
    worker = await grow(
        store,
        tools,
        cfg,
        [seed(store, "ok", 2, 2), seed(store, "bad", 2, 2)],
        generator,
        max_inflight=4,
        idle_timeout_s=0.3,
        max_attempts=2,
        block_ms=50,
    )
    dead = await store.redis.xrange(store.dead_stream)
    reasons = [f[b"reason"].decode() for _, f in dead]
    assert sum(r.startswith("malformed") for r in reasons) == 2
    assert sum(r.startswith("failed 2 deliveries") for r in reasons) == 2
    bad = await store.tree(0, "bad")
    assert (
        bad.dead_letters == 2
        and bad.trajectories == []
        and (await store.meta(0, "bad"))["state"] == "complete"
    )
    assert len((await store.tree(0, "ok")).trajectories) == 2
    assert worker.counters.dead_letters == 4 and worker.counters.failed >= 4


async def test_a_tree_from_the_tiny_model_through_the_rollout_service(
    store: TreeStore, tools: ToolsClient, engine: HFEngine
) -> None:
    """The real path: the HF engine behind the rollout app, a RolloutPool, its tokenizer for results."""
    app = create_rollout_app(engine, RolloutSettings(model="tiny"))
    async with RolloutClient.in_process(app, timeout_s=60) as client:
        pool = RolloutPool({"local": client})
        cfg = RunConfig.model_validate(
            {
                "branching": {"group_size": 3, "initial_rollouts": 2, "entropy_window": 4},
                "rollout": {"max_response_tokens": 24},
            }
        )
        prompt_ids = engine.encode("What is 2 + 2?")
        tree_seed = seed(store, "hf", 3, 2).model_copy(update={"prompt_token_ids": prompt_ids})
        await grow(store, tools, cfg, [tree_seed], pool, max_inflight=4, tokenizer=engine)
    tree = await store.tree(0, "hf")
    assert len(tree.trajectories) == 3
    generated = [n for n in tree.nodes if n.parent_id is not None]
    assert all(len(n.entropies) == len(n.token_ids) and sum(n.loss_mask) > 0 for n in generated)
    assert all(sum(n.entropies) > 0 and all(lp <= 0 for lp in n.logprobs) for n in generated)
    assert all(t.reward is not None for t in tree.trajectories)


async def test_long_generations_renew_their_claim(store: TreeStore, tools: ToolsClient) -> None:
    """Generation takes 3x the idle timeout: a second worker must not steal the running requests."""
    cfg = config(2, 2)
    generator = ScriptedGenerator(delay_s=0.9)
    ctx = Context(store, generator, tools, CharTokenizer(), cfg)  # type: ignore[arg-type]
    workers = [Worker(ctx, name, max_inflight=2, idle_timeout_s=0.3, block_ms=50) for name in ("a", "b")]
    assert await store.create(seed(store, "slow", 2, 2))
    tasks = [asyncio.create_task(w.run()) for w in workers]
    for _ in range(200):
        if await store.redis.xlen(store.completed) == 1:
            break
        await asyncio.sleep(0.05)
    for w in workers:
        w.stop()
    await asyncio.gather(*tasks)
    assert sum(w.counters.reclaimed for w in workers) == 0 and sum(w.counters.lost for w in workers) == 0
    assert len((await store.tree(0, "slow")).trajectories) == 2


async def test_stop_lets_running_trajectories_finish(store: TreeStore, tools: ToolsClient) -> None:
    cfg = config(3, 3)
    ctx = Context(store, ScriptedGenerator(delay_s=0.3), tools, CharTokenizer(), cfg)  # type: ignore[arg-type]
    worker = Worker(ctx, "w", max_inflight=3, grace_s=10)
    assert await store.create(seed(store, "stop", 3, 3))
    task = asyncio.create_task(worker.run())
    while worker.counters.started < 3:
        await asyncio.sleep(0.02)
    worker.stop()  # what SIGTERM does
    await task
    assert worker.counters.acked == 3 and (await store.meta(0, "stop"))["state"] == "complete"
    pending = await store.redis.xpending(store.stream, store.group)
    assert pending["pending"] == 0


def test_entry_point_refuses_bad_settings() -> None:
    env = {**os.environ, "ARPO_AGENT_RUN_ID": "bad id!", "ARPO_AGENT_MAX_INFLIGHT": "0"}
    done = subprocess.run(
        [sys.executable, "-m", "arpo.services.agent"], env=env, capture_output=True, text=True
    )
    assert done.returncode == 2
    assert "ARPO_AGENT_RUN_ID" in done.stderr and "ARPO_AGENT_MAX_INFLIGHT" in done.stderr
