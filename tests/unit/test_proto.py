"""Messages reject what they must (extra fields, ragged arrays, bad masks, NaN) and round-trip JSON."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from arpo.core.tags import ToolName
from arpo.proto import keys
from arpo.proto.rollout import Completion, FinishReason, GenerateRequest, GenerateResponse
from arpo.proto.runs import DatasetRef, ModelRef, RunSpec
from arpo.proto.tools import ToolCall, ToolResult
from arpo.proto.tree import BranchKind, BranchRequest, Trajectory, Tree, TreeNode


def completion(**kw: object) -> Completion:
    data: dict[str, object] = {
        "token_ids": [5, 6],
        "logprobs": [-0.1, -2.0],
        "entropies": [1.0, 0.5],
        "text": "ab",
        "finish_reason": "eos",
    }
    data.update(kw)
    return Completion.model_validate(data)


def node(node_id: str, parent: str | None, n: int = 2, **kw: object) -> TreeNode:
    data: dict[str, object] = {
        "node_id": node_id,
        "parent_id": parent,
        "token_ids": list(range(n)),
        "loss_mask": [1] * n,
        "logprobs": [-0.5] * n,
        "entropies": [1.0] * n,
    }
    data.update(kw)
    return TreeNode.model_validate(data)


def test_parallel_arrays_must_match() -> None:
    with pytest.raises(ValidationError, match="token_ids=2, logprobs=1, entropies=2"):
        completion(logprobs=[-0.1])
    with pytest.raises(ValidationError, match="equal lengths"):
        node("a", None, loss_mask=[1])


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("logprobs", [-0.1, float("nan")], "finite"),
        ("entropies", [1.0, float("inf")], "finite"),
        ("logprobs", [0.5, -1.0], "logprobs must be <= 0"),
        ("entropies", [-1.0, 1.0], "entropies must be >= 0"),
        ("token_ids", [-1, 2], "greater than or equal to 0"),
        ("finish_reason", "stop", "stop_string must be set"),
        ("surprise", 1, "Extra inputs are not permitted"),
    ],
)
def test_completion_rejects(field: str, value: object, message: str) -> None:
    with pytest.raises(ValidationError, match=message) as err:
        completion(**{field: value})
    assert field in str(err.value) or "stop_string" in message or "must be" in message


def test_mask_values_are_zero_or_one() -> None:
    with pytest.raises(ValidationError, match=r"loss_mask\.1"):
        node("a", None, loss_mask=[1, 2])


def test_round_trip() -> None:
    resp = GenerateResponse(completions=[completion()], policy_version=3, prompt_tokens=4)
    assert GenerateResponse.model_validate_json(resp.model_dump_json()) == resp
    req = GenerateRequest(prompt_token_ids=[1, 2, 3])
    assert req.sampling.stop == ["</python>", "</search>"]
    with pytest.raises(ValidationError, match="prompt_token_ids"):
        GenerateRequest(prompt_token_ids=[])


def test_tool_result_consistency() -> None:
    ToolResult(ok=True, output="4")
    ToolResult(ok=False, output="", error="TimeoutError after 10s", timed_out=True)
    with pytest.raises(ValidationError, match="error must be set exactly when ok is false"):
        ToolResult(ok=False, output="")
    with pytest.raises(ValidationError, match="error must be set"):
        ToolResult(ok=True, output="", error="boom")
    with pytest.raises(ValidationError, match="timed-out"):
        ToolResult(ok=True, output="", timed_out=True)
    with pytest.raises(ValidationError, match="tool"):
        ToolCall.model_validate({"tool": "shell", "content": "ls"})


def branch(**kw: object) -> BranchRequest:
    data: dict[str, object] = {
        "run_id": "r1",
        "step": 0,
        "prompt_id": "q7",
        "tree_id": "t-q7",
        "parent_node_id": "root",
        "kind": "root",
        "policy_version": 0,
        "request_id": "r1.0.q7.root.0",
    }
    data.update(kw)
    return BranchRequest.model_validate(data)


def test_branch_request() -> None:
    assert branch().kind == BranchKind.ROOT
    with pytest.raises(ValidationError, match="h0"):
        branch(kind="fork")
    assert branch(kind="fork", h0=1.2).h0 == 1.2
    with pytest.raises(ValidationError, match="run_id"):
        branch(run_id="bad:id")
    with pytest.raises(ValidationError, match="step"):
        branch(step=-1)


def make_tree(**kw: object) -> Tree:
    nodes = [
        node("root", None, loss_mask=[0, 0], logprobs=[0.0, 0.0], entropies=[0.0, 0.0]),
        node(
            "a",
            "root",
            tool_call=ToolCall(tool=ToolName.PYTHON, content="print(1)"),
            tool_result=ToolResult(ok=True, output="1"),
            finish_reason=FinishReason.STOP,
        ),
        node("a1", "a"),
        node("a2", "a"),
    ]
    data: dict[str, object] = {
        "run_id": "r1",
        "step": 2,
        "prompt_id": "q7",
        "tree_id": "t-q7",
        "budget": 4,
        "nodes": nodes,
        "trajectories": [
            Trajectory(leaf_node_id="a1", node_ids=["root", "a", "a1"], reward=1.0),
            Trajectory(leaf_node_id="a2", node_ids=["root", "a", "a2"], reward=0.0),
        ],
    }
    data.update(kw)
    return Tree.model_validate(data)


def test_tree_structure_is_validated() -> None:
    tree = make_tree()
    assert tree.to_core().leaves == ("a1", "a2")
    assert Tree.model_validate_json(tree.model_dump_json()) == tree
    with pytest.raises(ValidationError, match="each leaf once"):
        make_tree(trajectories=tree.trajectories[:1])
    with pytest.raises(ValidationError, match="exceed the budget"):
        make_tree(budget=1)
    bad_path = Trajectory(leaf_node_id="a2", node_ids=["root", "a2"])
    with pytest.raises(ValidationError, match="not the root→leaf path"):
        make_tree(trajectories=[tree.trajectories[0], bad_path])
    with pytest.raises(ValidationError, match="unknown parent"):
        make_tree(nodes=[*tree.nodes, node("x", "ghost")])
    with pytest.raises(ValidationError, match="set together"):
        node("a", "root", tool_call=ToolCall(tool=ToolName.SEARCH, content="q"))


def test_run_spec_embeds_run_config_validation() -> None:
    spec = RunSpec(
        model=ModelRef(name_or_path="Qwen/Qwen2.5-3B-Instruct"), dataset=DatasetRef(path_or_name="x.jsonl")
    )
    assert spec.config.branching.group_size == 16
    with pytest.raises(ValidationError, match=r"config.branching\n.*branching.initial_rollouts: must be <="):
        RunSpec.model_validate(
            {
                "model": {"name_or_path": "m"},
                "dataset": {"path_or_name": "d"},
                "config": {"branching": {"initial_rollouts": 99}},
            }
        )


def test_keys() -> None:
    assert keys.branch_stream("r1") == "arpo:{r1}:branch"
    assert keys.tree_nodes("r1", 3, "t-q7") == "arpo:{r1}:tree:3:t-q7:nodes"
    all_keys = [
        keys.run_spec("r1"),
        keys.run_status("r1"),
        keys.run_metrics("r1"),
        keys.run_events("r1"),
        keys.branch_stream("r1"),
        keys.dead_letter_stream("r1"),
        keys.tree_meta("r1", 0, "t"),
        keys.tree_nodes("r1", 0, "t"),
        keys.completed_trees("r1"),
        keys.weights_version("r1"),
        keys.learner_lease("r1"),
    ]
    assert len(set(all_keys)) == len(all_keys)
    assert all(k.startswith("arpo:{r1}:") for k in all_keys)  # one hash slot per run
    with pytest.raises(ValueError, match="run_id"):
        keys.branch_stream("a:b")
    with pytest.raises(ValueError, match="tree_id"):
        keys.tree_meta("r1", 0, "t}x")
    with pytest.raises(ValueError, match="step"):
        keys.tree_meta("r1", -1, "t")
