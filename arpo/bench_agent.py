"""`arpo bench queue` and `arpo bench tree`: the agent side's costs (DESIGN.md §7).

queue: branch requests through one Redis stream and consumer group.

A producer enqueues `count` BranchRequests (XADD, pipelined `batch` at a time, each stamped with the
time it was sent) while `consumers` consumers read them (XREADGROUP) and acknowledge them (XACK), as the
agent workers do. Two runs: saturated (the producer as fast as it can: requests/s end to end; latency
then includes the backlog) and paced at `rate` requests/s (latency of the queue itself: enqueue ->
dequeue percentiles). Producer and consumers share one Python process, as a worker's loop would.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

from redis.asyncio import Redis

from arpo.core.tree import tree_cost
from arpo.localredis import connect_or_start
from arpo.proto import keys
from arpo.proto.tree import BranchKind, BranchRequest, Tree
from arpo.services.agent.store import TreeStore


def _request(run_id: str, i: int) -> str:
    return BranchRequest(
        run_id=run_id,
        step=0,
        prompt_id=f"p{i // 8}",
        tree_id=f"t{i // 8}",
        parent_node_id=f"t{i // 8}.root",
        kind=BranchKind.ROOT,
        policy_version=0,
        request_id=f"t{i // 8}.t{i % 8}",
    ).model_dump_json()


async def _produce(
    redis: Redis, stream: str, run_id: str, count: int, batch: int, rate: float | None
) -> None:
    bodies = [_request(run_id, i) for i in range(count)]
    began = time.perf_counter()
    for start in range(0, count, batch):
        if rate is not None:  # paced: batch k leaves at k * batch / rate
            await asyncio.sleep(max(0.0, began + start / rate - time.perf_counter()))
        pipe = redis.pipeline(transaction=False)
        for body in bodies[start : start + batch]:
            pipe.xadd(stream, {"body": body, "sent": time.perf_counter_ns()})
        await pipe.execute()


async def _consume(
    redis: Redis, stream: str, group: str, name: str, latencies: list[float], total: int
) -> None:
    while len(latencies) < total:
        got: Any = await redis.xreadgroup(group, name, {stream: ">"}, count=100, block=5)
        now = time.perf_counter_ns()
        ids = []
        for _, entries in got or []:
            for eid, fields in entries:
                latencies.append((now - int(fields[b"sent"])) / 1e6)
                ids.append(eid)
        if ids:
            await redis.xack(stream, group, *ids)


def bench_queue(
    count: int = 20_000, consumers: int = 4, batch: int = 50, rate: float = 2_000
) -> Iterator[dict[str, Any]]:
    server = connect_or_start()

    async def go(paced: float | None) -> dict[str, Any]:
        run_id = f"bench-{uuid.uuid4().hex[:8]}"
        stream, group = keys.branch_stream(run_id), keys.branch_group(run_id)
        redis = Redis.from_url(server.url)
        await redis.xgroup_create(stream, group, id="0", mkstream=True)
        latencies: list[float] = []
        start = time.perf_counter()
        readers = [
            asyncio.create_task(
                _consume(Redis.from_url(server.url), stream, group, f"c{i}", latencies, count)
            )
            for i in range(consumers)
        ]
        # Paced, requests go one at a time, as the agents enqueue them (a fork's XADD is its own call).
        await _produce(redis, stream, run_id, count, batch if paced is None else 1, paced)
        await asyncio.gather(*readers)
        seconds = time.perf_counter() - start
        await redis.delete(stream)
        await redis.aclose()
        ordered = sorted(latencies)
        return {
            "bench": "queue",
            "mode": "saturated" if paced is None else f"paced {paced:g}/s",
            "requests": count,
            "consumers": consumers,
            "batch": batch if paced is None else 1,
            "per_s": round(count / seconds),
            "p50_ms": round(ordered[len(ordered) // 2], 3),
            "p99_ms": round(ordered[int(len(ordered) * 0.99)], 3),
        }

    try:
        yield asyncio.run(go(None))
        yield asyncio.run(go(rate))
    finally:
        server.close()


def bench_trees(run_id: str, redis_url: str | None = None) -> Iterator[dict[str, Any]]:
    """`arpo bench tree --run RUN`: the cost of a run's completed trees, one record per step.

    Per leaf: tool calls and generated tokens; tokens a prefix-reusing engine computes for the trees
    against sampling the same trajectories independently. Run it on an ARPO run and a GRPO run with the
    same prompts and M to compare them.
    """
    server = connect_or_start() if redis_url is None else None
    url = redis_url or (server.url if server else "")

    async def go() -> list[dict[str, Any]]:
        redis = Redis.from_url(url)
        store = TreeStore(redis, run_id)
        by_step: dict[int, list[Tree]] = {}
        entries: Any = await redis.xrange(store.completed)
        for _, fields in entries:
            done = json.loads(fields[b"body"])
            by_step.setdefault(done["step"], []).append(await store.tree(done["step"], done["tree_id"]))
        await redis.aclose()
        return [_tree_record(run_id, step, trees) for step, trees in sorted(by_step.items())]

    try:
        yield from asyncio.run(go())
    finally:
        if server is not None:
            server.close()


def _tree_record(run_id: str, step: int, trees: list[Tree]) -> dict[str, Any]:
    costs = [tree_cost(t.to_core()) for t in trees]
    leaves = sum(c.leaves for c in costs)
    return {
        "bench": "tree",
        "run": run_id,
        "step": step,
        "trees": len(trees),
        "leaves": leaves,
        "tool_calls_per_leaf": round(sum(tr.tool_calls for t in trees for tr in t.trajectories) / leaves, 3),
        "generated_tokens_per_leaf": round(sum(c.generated_tokens for c in costs) / leaves, 1),
        "tree_vs_independent_tokens": round(
            sum(c.tree_tokens for c in costs) / sum(c.independent_tokens for c in costs), 4
        ),
    }


def _time_updates(learner: Any, seqs: list[Any], repeats: int) -> tuple[float, int]:
    """Median seconds of one update after a warm-up, and peak memory in bytes."""
    import resource

    import torch

    old = learner.logprobs(seqs)
    learner.update(seqs, old)  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        learner.update(seqs, old)
        if learner.device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    if learner.device.type == "cuda":
        return sorted(times)[len(times) // 2], torch.cuda.max_memory_allocated()
    return sorted(times)[len(times) // 2], resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _publish_record(learner: Any, shape: str, device: str, repeats: int) -> dict[str, Any]:
    """Median seconds of writing `learner`'s weights as a published version, and s/GB."""
    import tempfile
    from pathlib import Path

    from arpo.services.learner.publish import write_weights

    with tempfile.TemporaryDirectory() as tmp:
        times = []
        for version in range(1, repeats + 1):
            start = time.perf_counter()
            path = write_weights(learner.weights(), Path(tmp), version)
            times.append(time.perf_counter() - start)
        size = sum(f.stat().st_size for f in path.iterdir())
    seconds = sorted(times)[len(times) // 2]
    return {
        "bench": "learner-publish",
        "path": "safetensors to disk",
        "shape": shape,
        "device": device,
        "gb": round(size / 1e9, 3),
        "seconds": round(seconds, 3),
        "s_per_gb": round(seconds / (size / 1e9), 3),
    }


def bench_learner(shape: str, rows: int, seq_len: int, repeats: int, device: str) -> Iterator[dict[str, Any]]:
    """`arpo bench learner`: training tokens/s of each backend on a random model of `shape`, side by side,
    then the seconds per GB of publishing its weights (the safetensors write of a version).

    One optimizer step on `rows` sequences of `seq_len` tokens (the first quarter prompt, loss mask 0),
    after a warm-up step; the median of `repeats`. Peak memory: the process's max RSS on CPU (so a later
    backend's figure includes the earlier one's), the allocator's peak on CUDA. DeepSpeed (ZeRO-2, torch
    AdamW) runs when it is installed.
    """
    import copy
    import importlib.util

    import torch

    from arpo.config import RunConfig
    from arpo.services.learner.batches import TrainSequence
    from arpo.services.learner.torch_backend import TorchLearner
    from arpo.tiny import random_model, tiny_tokenizer

    dev = torch.device(device)
    tokenizer = tiny_tokenizer()
    base = random_model(tokenizer, shape, max_positions=max(seq_len, 256)).to(dev)
    gen = torch.Generator().manual_seed(0)
    prompt = seq_len // 4
    seqs = [
        TrainSequence(
            "t",
            f"l{i}",
            torch.randint(1, len(tokenizer), (seq_len,), generator=gen).tolist(),
            [0] * prompt + [1] * (seq_len - prompt),
            [0.0] * prompt + [1.0 if i % 2 else -1.0] * (seq_len - prompt),
            [0.0] * seq_len,
            [0.0] * seq_len,
        )
        for i in range(rows)
    ]

    def learners() -> Iterator[tuple[str, TorchLearner]]:
        yield "torch", TorchLearner(copy.deepcopy(base), RunConfig())
        if importlib.util.find_spec("deepspeed") is not None:
            from arpo.services.learner.deepspeed_backend import DeepSpeedLearner, DeepSpeedOptions

            yield "deepspeed-zero2", DeepSpeedLearner(copy.deepcopy(base), RunConfig(), DeepSpeedOptions())

    last: TorchLearner | None = None
    for backend, learner in learners():
        seconds, peak = _time_updates(learner, seqs, repeats)
        yield {
            "bench": "learner",
            "backend": backend,
            "shape": shape,
            "device": device,
            "rows": rows,
            "seq_len": seq_len,
            "micro_batch_tokens": learner.token_budget,
            "tokens_per_s": round(rows * seq_len / seconds, 1),
            "peak_memory_mb": round(peak / 2**20),
            "threads": torch.get_num_threads(),
        }
        last = learner
    assert last is not None
    yield _publish_record(last, shape, device, repeats)
