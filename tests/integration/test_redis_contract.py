"""Messages travel through a real Redis under the keys module's names."""

from __future__ import annotations

import redis

from arpo.proto import keys
from arpo.proto.tree import BranchKind, BranchRequest, TreeNode


def request(run_id: str, n: int) -> BranchRequest:
    return BranchRequest(
        run_id=run_id,
        step=0,
        prompt_id=f"q{n}",
        tree_id=f"t{n}",
        parent_node_id="root",
        kind=BranchKind.ROOT,
        policy_version=0,
        request_id=f"{run_id}.0.q{n}.root",
    )


def test_branch_requests_through_a_consumer_group(redis_client: redis.Redis, run_id: str) -> None:
    stream, group = keys.branch_stream(run_id), keys.branch_group(run_id)
    redis_client.xgroup_create(stream, group, id="0", mkstream=True)
    sent = [request(run_id, n) for n in range(3)]
    for r in sent:
        redis_client.xadd(stream, {"body": r.model_dump_json()})
    got = redis_client.xreadgroup(group, "worker-a", {stream: ">"}, count=10)
    entries = got[0][1]
    assert [BranchRequest.model_validate_json(fields["body"]) for _, fields in entries] == sent
    # worker-a dies without acking one entry; worker-b reclaims it after the idle time.
    redis_client.xack(stream, group, entries[0][0], entries[1][0])
    _, claimed, _ = redis_client.xautoclaim(stream, group, "worker-b", min_idle_time=0, start_id="0")
    assert [BranchRequest.model_validate_json(f["body"]) for _, f in claimed] == [sent[2]]


def test_tree_nodes_in_a_hash(redis_client: redis.Redis, run_id: str) -> None:
    key = keys.tree_nodes(run_id, 0, "t0")
    node = TreeNode(
        node_id="n1",
        parent_id="root",
        token_ids=[1, 2],
        loss_mask=[1, 0],
        logprobs=[-0.5, 0.0],
        entropies=[1.5, 0.0],
    )
    assert redis_client.hsetnx(key, node.node_id, node.model_dump_json()) == 1
    assert redis_client.hsetnx(key, node.node_id, node.model_dump_json()) == 0  # idempotent rewrite
    assert TreeNode.model_validate_json(redis_client.hget(key, "n1")) == node  # type: ignore[arg-type]
