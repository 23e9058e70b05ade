"""The branch queue and the tree store in Redis (DESIGN.md §4.3, §6).

Queue: one stream of BranchRequests per run, one consumer group of agent workers. A worker acknowledges
an entry only after what it produced is written; entries of a dead worker are reclaimed with XAUTOCLAIM
after `idle_timeout`; a live worker renews its claims so they are not stolen while it generates; an
entry delivered more than `max_attempts` times goes to the dead-letter stream and its trajectory counts
as finished (the tree completes without it).

Tree store: per tree a meta hash (the budget counters and state), a node hash and a leaf hash. Every
state change that must not half-happen is one Lua script, so a worker killed at any instruction leaves
either all of it or none of it:

- `create`: the meta, the root node and the N root requests (once per tree, whoever calls it again);
- `admit`: a fork decision's granted requests, `started += granted`, and the marker that makes a
  redelivered decision a no-op;
- `finish`: a leaf's trajectory (or a dead letter) counted once; then, when nothing runs and budget is
  left, all `M - started` remaining trajectories start at once (refill); and when `finished == M`, the
  tree is marked complete and announced on the completed-trees stream the learner reads.

Nodes are written with HSETNX: a node id is derived from the request (`<request>.n<round>`), so a
redelivered request resumes after the nodes it already wrote and can never write a second copy. All
keys of a run share a hash tag (one Redis Cluster slot) and expire after `retention_s`.

Loss model. Redis is the only state. With AOF and `appendfsync always`, nothing acknowledged to a worker
is lost when Redis dies (tested: SIGKILL mid-run, restart, every tree completes). With `everysec` (Redis'
default), up to about a second of writes can be lost; the AOF is an ordered log, so what survives is an
earlier consistent state: lost acknowledgements mean redeliveries (idempotent), a lost leaf or fork
admission is redone by the redelivered request, and nothing is counted twice because counter and
marker live in the same script. Without persistence a Redis restart loses the run's rollouts in
flight (the learner's checkpoint is unaffected).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from arpo.proto import keys
from arpo.proto.tree import BranchKind, BranchRequest, Trajectory, Tree, TreeNode, TreeSeed

FIELD = "body"
"""The stream entry field holding the message JSON."""

_CREATE = """
-- KEYS: meta, nodes, stream; ARGV: retention, size, initial, root node id, root node json,
--        answers json, metric, policy version, prompt id, root request template
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'size', ARGV[2], 'started', ARGV[3], 'finished', 0, 'dead', 0,
           'state', 'running', 'root', ARGV[4], 'answers', ARGV[6], 'metric', ARGV[7], 'version', ARGV[8],
           'prompt', ARGV[9])
redis.call('HSET', KEYS[2], ARGV[4], ARGV[5])
for i = 0, tonumber(ARGV[3]) - 1 do
  redis.call('XADD', KEYS[3], '*', 'body', (string.gsub(ARGV[10], '#N#', tostring(i))))
end
for i = 1, 3 do redis.call('EXPIRE', KEYS[i], ARGV[1]) end
return 1
"""

_ADMIT = """
-- KEYS: meta, stream; ARGV: marker field, then the wanted fork request jsons. Returns granted.
local done = redis.call('HGET', KEYS[1], ARGV[1])
if done then return tonumber(done) end
local size = tonumber(redis.call('HGET', KEYS[1], 'size'))
local started = tonumber(redis.call('HGET', KEYS[1], 'started'))
local granted = math.min(#ARGV - 1, size - started)
for i = 2, granted + 1 do redis.call('XADD', KEYS[2], '*', 'body', ARGV[i]) end
redis.call('HINCRBY', KEYS[1], 'started', granted)
redis.call('HSET', KEYS[1], ARGV[1], granted)
return granted
"""

_FINISH = """
-- KEYS: meta, leaves, stream, completed; ARGV: retention, kind ('leaf' | 'dead'), leaf id or request id,
--        trajectory json (leaf), completed-entry json, refill request template.
-- Returns {counted (0/1), refilled, complete (0/1)}.
local counted = 0
if ARGV[2] == 'leaf' then
  counted = redis.call('HSETNX', KEYS[2], ARGV[3], ARGV[4])
  redis.call('EXPIRE', KEYS[2], ARGV[1])
else
  counted = redis.call('HSETNX', KEYS[1], 'dead:' .. ARGV[3], 1)
  if counted == 1 then redis.call('HINCRBY', KEYS[1], 'dead', 1) end
end
if counted == 0 then return {0, 0, 0} end
local finished = redis.call('HINCRBY', KEYS[1], 'finished', 1)
local size = tonumber(redis.call('HGET', KEYS[1], 'size'))
local started = tonumber(redis.call('HGET', KEYS[1], 'started'))
local refilled = 0
if finished == started and started < size then
  for i = started, size - 1 do
    redis.call('XADD', KEYS[3], '*', 'body', (string.gsub(ARGV[6], '#N#', tostring(i))))
  end
  refilled = size - started
  redis.call('HSET', KEYS[1], 'started', size)
end
if finished == size then
  redis.call('HSET', KEYS[1], 'state', 'complete')
  redis.call('XADD', KEYS[4], '*', 'body', ARGV[5])
  redis.call('EXPIRE', KEYS[4], ARGV[1])
  return {1, refilled, 1}
end
return {1, refilled, 0}
"""

_ACK = """
-- KEYS: stream; ARGV: group, consumer, entry id, 'ack' | 'renew'. Acts only while the entry is ours.
local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1)
if #p == 0 or p[1][2] ~= ARGV[2] then return 0 end
if ARGV[4] == 'ack' then return redis.call('XACK', KEYS[1], ARGV[1], ARGV[3]) end
redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[3], 'JUSTID')
return 1
"""


@dataclass(frozen=True)
class Entry:
    """One delivery of a stream entry: its id, raw body, and how often it has been delivered."""

    entry_id: str
    body: str | None
    deliveries: int


@dataclass(frozen=True)
class Finish:
    """What a finish did: counted (False: a redelivery, already counted), refilled, complete."""

    counted: bool
    refilled: int
    complete: bool


START_INDEX = "#N#"
"""Stands for the start index in a request template (`#` cannot occur in an id, so nothing else matches)."""


def root_template(source: TreeSeed | BranchRequest, kind: BranchKind) -> str:
    """A root (or refill) request of the tree, its id `<tree>.t<start index>` left for the Lua scripts to
    fill in: the n-th trajectory started is `<tree>.t<n>`, whoever starts it."""
    request = BranchRequest(
        run_id=source.run_id,
        step=source.step,
        prompt_id=source.prompt_id,
        tree_id=source.tree_id,
        parent_node_id=root_id(source.tree_id),
        kind=kind,
        policy_version=source.policy_version,
        request_id="placeholder",
    )
    body = request.model_dump_json()
    return body.replace('"request_id":"placeholder"', f'"request_id":"{source.tree_id}.t{START_INDEX}"')


def root_node(tree_id: str, prompt_ids: list[int], text: str) -> TreeNode:
    """A tree's root: the prompt, nothing in it trained."""
    zeros = [0] * len(prompt_ids)
    return TreeNode(
        node_id=root_id(tree_id),
        parent_id=None,
        token_ids=prompt_ids,
        loss_mask=zeros,
        logprobs=[0.0] * len(zeros),
        entropies=[0.0] * len(zeros),
        text=text,
    )


def root_id(tree_id: str) -> str:
    return f"{tree_id}.root"


class TreeStore:
    """Queue and tree operations of one run."""

    def __init__(self, redis: Redis, run_id: str, retention_s: int = 7 * 86_400) -> None:
        self.redis, self.run_id, self.retention_s = redis, run_id, retention_s
        self.stream = keys.branch_stream(run_id)
        self.group = keys.branch_group(run_id)
        self.dead_stream = keys.dead_letter_stream(run_id)
        self.completed = keys.completed_trees(run_id)
        self._create = redis.register_script(_CREATE)
        self._admit = redis.register_script(_ADMIT)
        self._finish = redis.register_script(_FINISH)
        self._ack = redis.register_script(_ACK)

    # -- queue ------------------------------------------------------------------------------------

    async def ensure_group(self) -> None:
        try:
            await self.redis.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except ResponseError as err:
            if "BUSYGROUP" not in str(err):
                raise

    async def read(self, consumer: str, count: int, block_ms: int | None) -> list[Entry]:
        """New entries for this consumer (first delivery); waits up to `block_ms` (None: no wait)."""
        got: Any = await self.redis.xreadgroup(
            self.group, consumer, {self.stream: ">"}, count=count, block=block_ms
        )
        return [Entry(_text(eid), _body(fields), 1) for _, entries in got or [] for eid, fields in entries]

    async def reclaim(self, consumer: str, count: int, idle_ms: int) -> list[Entry]:
        """Entries idle longer than `idle_ms` (their worker died or hangs), now this consumer's."""
        _, claimed, _ = await self.redis.xautoclaim(
            self.stream, self.group, consumer, min_idle_time=idle_ms, start_id="0-0", count=count
        )
        out = []
        for eid, fields in claimed:
            pending = await self.redis.xpending_range(self.stream, self.group, eid, eid, 1)
            deliveries = int(pending[0]["times_delivered"]) if pending else 1
            out.append(Entry(_text(eid), _body(fields), deliveries))
        return out

    async def renew(self, consumer: str, entry_id: str) -> bool:
        """Reset the entry's idle time while it is still ours; False when another worker took it."""
        return bool(await self._ack(keys=[self.stream], args=[self.group, consumer, entry_id, "renew"]))

    async def ack(self, consumer: str, entry_id: str) -> bool:
        """Acknowledge the entry if it is still ours (a worker whose claim was taken must not ack)."""
        return bool(await self._ack(keys=[self.stream], args=[self.group, consumer, entry_id, "ack"]))

    async def count(self, field: str, n: int = 1) -> None:
        """Add to the run's worker counters (summed over every worker, for metrics and tests)."""
        await self.redis.hincrby(keys.agent_stats(self.run_id), field, n)

    async def stats(self) -> dict[str, int]:
        raw = await self.redis.hgetall(keys.agent_stats(self.run_id))
        return {_text(k): int(v) for k, v in raw.items()}

    async def dead_letter(self, entry: Entry, reason: str) -> None:
        await self.redis.xadd(
            self.dead_stream, {FIELD: entry.body or "", "reason": reason, "entry": entry.entry_id}
        )
        await self.redis.expire(self.dead_stream, self.retention_s)

    # -- trees ------------------------------------------------------------------------------------

    def _keys(self, step: int, tree_id: str) -> tuple[str, str, str]:
        run = self.run_id
        return (
            keys.tree_meta(run, step, tree_id),
            keys.tree_nodes(run, step, tree_id),
            keys.tree_leaves(run, step, tree_id),
        )

    async def create(self, seed: TreeSeed) -> bool:
        """Write the tree and enqueue its N roots; False if the tree already existed (nothing changed)."""
        meta, nodes, _ = self._keys(seed.step, seed.tree_id)
        root = root_node(seed.tree_id, seed.prompt_token_ids, seed.prompt_text)
        args: list[str | int] = [
            self.retention_s,
            seed.budget,
            seed.initial,
            root.node_id,
            root.model_dump_json(),
        ]
        args += [json.dumps(seed.answers), seed.metric.value, seed.policy_version, seed.prompt_id]
        args.append(root_template(seed, BranchKind.ROOT))
        return bool(await self._create(keys=[meta, nodes, self.stream], args=args))

    async def meta(self, step: int, tree_id: str) -> dict[str, str]:
        return {
            _text(k): _text(v) for k, v in (await self.redis.hgetall(self._keys(step, tree_id)[0])).items()
        }

    async def nodes(self, step: int, tree_id: str) -> dict[str, TreeNode]:
        raw = await self.redis.hgetall(self._keys(step, tree_id)[1])
        return {_text(k): TreeNode.model_validate_json(v) for k, v in raw.items()}

    async def add_times(self, request: BranchRequest, generate_s: float, tool_s: float) -> None:
        """Add a trajectory's seconds spent generating and waiting on tools to its tree's totals."""
        meta = self._keys(request.step, request.tree_id)[0]
        pipe = self.redis.pipeline(transaction=True)
        pipe.hincrbyfloat(meta, "generate_s", generate_s)
        pipe.hincrbyfloat(meta, "tool_s", tool_s)
        await pipe.execute()

    async def write_node(self, step: int, tree_id: str, node: TreeNode) -> bool:
        """Write a node once; False if a node with its id exists (another delivery wrote it first)."""
        return bool(
            await self.redis.hsetnx(self._keys(step, tree_id)[1], node.node_id, node.model_dump_json())
        )

    async def admit(self, request: BranchRequest, decided_at: str, forks: Sequence[BranchRequest]) -> int:
        """Enqueue up to len(forks) fork requests within the budget; idempotent per `decided_at` node."""
        meta = self._keys(request.step, request.tree_id)[0]
        args = [f"fork:{decided_at}", *(f.model_dump_json() for f in forks)]
        return int(await self._admit(keys=[meta, self.stream], args=args))

    async def finish(self, request: BranchRequest, trajectory: Trajectory | None) -> Finish:
        """Count a finished trajectory (or, with None, a dead letter) once; refill and complete."""
        meta, _, leaves = self._keys(request.step, request.tree_id)
        completed = json.dumps({"run_id": request.run_id, "step": request.step, "tree_id": request.tree_id})
        if trajectory is None:
            kind, ident, body = "dead", request.request_id, ""
        else:
            kind, ident, body = "leaf", trajectory.leaf_node_id, trajectory.model_dump_json()
        refill = root_template(request, BranchKind.REFILL)
        args: list[str | int] = [self.retention_s, kind, ident, body, completed, refill]
        counted, refilled, complete = await self._finish(
            keys=[meta, leaves, self.stream, self.completed], args=args
        )
        return Finish(bool(counted), int(refilled), bool(complete))

    async def tree(self, step: int, tree_id: str) -> Tree:
        """A tree as the learner sees it: the nodes on finished trajectories' paths, and those."""
        leaves_key = self._keys(step, tree_id)[2]
        meta = await self.meta(step, tree_id)
        nodes = await self.nodes(step, tree_id)
        trajectories = [
            Trajectory.model_validate_json(v) for v in (await self.redis.hgetall(leaves_key)).values()
        ]
        trajectories.sort(key=lambda t: t.leaf_node_id)
        on_paths = {n for t in trajectories for n in t.node_ids} | {meta["root"]}
        kept = [nodes[n] for n in _parents_first(nodes, on_paths)]
        return Tree(
            run_id=self.run_id,
            step=step,
            prompt_id=meta["prompt"],
            tree_id=tree_id,
            budget=int(meta["size"]),
            nodes=kept,
            trajectories=trajectories,
            dead_letters=int(meta["dead"]),
        )

    async def completed_trees(self, step: int | None = None) -> list[Tree]:
        """The trees announced on the completed-trees stream (of `step`, or all), in completion order."""
        entries: Any = await self.redis.xrange(self.completed)
        seen: list[tuple[int, str]] = []
        for _, fields in entries:
            body = json.loads(fields[b"body"])
            key = (int(body["step"]), str(body["tree_id"]))
            if (step is None or key[0] == step) and key not in seen:
                seen.append(key)
        return [await self.tree(s, tree_id) for s, tree_id in seen]


def _parents_first(nodes: dict[str, TreeNode], keep: set[str]) -> list[str]:
    order: list[str] = []
    seen: set[str] = set()

    def visit(node_id: str) -> None:
        if node_id in seen:
            return
        parent = nodes[node_id].parent_id
        if parent is not None:
            visit(parent)
        seen.add(node_id)
        order.append(node_id)

    for node_id in sorted(keep):
        visit(node_id)
    return order


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _body(fields: dict[Any, Any]) -> str | None:
    for k, v in fields.items():
        if _text(k) == FIELD:
            return _text(v)
    return None
