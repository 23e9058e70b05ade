"""A small hand-made trajectory tree and a run config for the learner tests."""

from __future__ import annotations

import torch

from arpo.config import RunConfig
from arpo.proto.tree import Trajectory, Tree, TreeNode


def node(node_id: str, parent: str | None, tokens: list[int], model: bool) -> TreeNode:
    n = len(tokens)
    return TreeNode(
        node_id=node_id,
        parent_id=parent,
        token_ids=tokens,
        loss_mask=[int(model)] * n,
        logprobs=[-1.0 if model else 0.0] * n,
        entropies=[0.0] * n,
    )


def make_tree(branching: bool) -> Tree:
    g = torch.Generator().manual_seed(3)

    def toks(k: int) -> list[int]:
        return torch.randint(5, 300, (k,), generator=g).tolist()

    nodes = [node("r", None, toks(6), False), node("a", "r", toks(5), True), node("a1", "a", toks(4), True)]
    leaves = {"a1": 1.0}
    if branching:
        nodes += [node("a2", "a", toks(3), True), node("b", "r", toks(7), True)]
        leaves |= {"a2": 0.0, "b": 0.5}
    else:
        nodes += [node("b", "r", toks(7), True), node("c", "r", toks(2), True)]
        leaves |= {"b": 0.0, "c": 0.5}
    core_paths = {n.node_id: n.parent_id for n in nodes}

    def path(leaf: str) -> list[str]:
        out = [leaf]
        while (parent := core_paths[out[-1]]) is not None:
            out.append(parent)
        return out[::-1]

    trajectories = [Trajectory(leaf_node_id=k, node_ids=path(k), reward=v) for k, v in leaves.items()]
    return Tree(
        run_id="r", step=0, prompt_id="p", tree_id="t", budget=3, nodes=nodes, trajectories=trajectories
    )


def config(lr: float = 1e-4) -> RunConfig:
    return RunConfig.model_validate({"optim": {"lr": lr, "weight_decay": 0.0}})
