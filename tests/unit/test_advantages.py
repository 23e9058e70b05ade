"""Advantages: hand-computed trees written out token by token, and properties over random trees."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from arpo.core.advantages import (
    AdvantageMode,
    entropy_aware_advantages,
    group_advantages,
    leaf_advantages,
    node_advantages,
    packed_tree,
    tree_sequences,
)
from arpo.core.tree import Segment, TrajectoryTree

S = 1 / math.sqrt(3)


def seg(node_id: str, parent: str | None, mask: list[int]) -> Segment:
    return Segment(node_id, parent, tuple(range(len(mask))), tuple(mask))


def by_leaf(tree: TrajectoryTree, rewards: dict[str, float], mode: AdvantageMode) -> dict[str, tuple]:
    seqs = tree_sequences(tree, leaf_advantages(tree, rewards), mode)
    return {s.leaf_id: (s.loss_mask, pytest.approx(s.advantages, abs=1e-5)) for s in seqs}


def test_group_advantages_hand_values() -> None:
    got = group_advantages([1.0, 0.0, 0.0])
    torch.testing.assert_close(got, torch.tensor([2 * S, -S, -S], dtype=torch.float64), atol=1e-5, rtol=0)
    assert group_advantages([0.5, 0.5, 0.5]).abs().max() == 0.0  # no signal, no update
    assert group_advantages([3.0]).tolist() == [0.0]
    with pytest.raises(ValueError, match="non-empty"):
        group_advantages([])
    with pytest.raises(ValueError, match="finite"):
        group_advantages([1.0, float("nan")])


def test_tree_one_fork() -> None:
    """P -> a -> {a1, a2} after a's tool result; P -> b. Rewards a1=1, a2=0, b=0."""
    tree = TrajectoryTree(
        [
            seg("P", None, [0, 0]),
            seg("a", "P", [1, 1, 0]),
            seg("a1", "a", [1, 1]),
            seg("a2", "a", [1]),
            seg("b", "P", [1, 1, 1]),
        ]
    )
    rewards = {"a1": 1.0, "a2": 0.0, "b": 0.0}
    assert by_leaf(tree, rewards, AdvantageMode.SOFT) == {
        "a1": ([0, 0, 1, 1, 0, 1, 1], [0, 0, 2 * S, 2 * S, 0, 2 * S, 2 * S]),
        "a2": ([0, 0, 1, 1, 0, 1], [0, 0, -S, -S, 0, -S]),
        "b": ([0, 0, 1, 1, 1], [0, 0, -S, -S, -S]),
    }
    assert by_leaf(tree, rewards, AdvantageMode.HARD) == {
        "a1": ([0, 0, 1, 1, 0, 1, 1], [0, 0, S / 2, S / 2, 0, 2 * S, 2 * S]),
        "a2": ([0, 0, 0, 0, 0, 1], [0, 0, 0, 0, 0, -S]),
        "b": ([0, 0, 1, 1, 1], [0, 0, -S, -S, -S]),
    }


def test_tree_without_branching_hard_equals_soft() -> None:
    """Two independent trajectories (GRPO): P -> n1 -> n2 (reward 1); P -> m1 (reward 0)."""
    tree = TrajectoryTree(
        [seg("P", None, [0]), seg("n1", "P", [1, 0]), seg("n2", "n1", [1]), seg("m1", "P", [1])]
    )
    rewards = {"n2": 1.0, "m1": 0.0}
    h = 1 / math.sqrt(2)
    expected = {"n2": ([0, 1, 0, 1], [0, h, 0, h]), "m1": ([0, 1], [0, -h])}
    assert by_leaf(tree, rewards, AdvantageMode.SOFT) == expected
    assert by_leaf(tree, rewards, AdvantageMode.HARD) == expected


def test_tree_nested_forks() -> None:
    """P -> x -> {y -> {y1, y2}, z}. Rewards y1=1, y2=1, z=0: A = (s, s, -2s)."""
    tree = TrajectoryTree(
        [
            seg("P", None, [0]),
            seg("x", "P", [1, 0]),
            seg("y", "x", [1, 0]),
            seg("y1", "y", [1]),
            seg("y2", "y", [1]),
            seg("z", "x", [1]),
        ]
    )
    rewards = {"y1": 1.0, "y2": 1.0, "z": 0.0}
    nodes = node_advantages(tree, leaf_advantages(tree, rewards))
    assert nodes == pytest.approx({"P": 0.0, "x": 0.0, "y": S, "y1": S, "y2": S, "z": -2 * S}, abs=1e-5)
    assert by_leaf(tree, rewards, AdvantageMode.SOFT) == {
        "y1": ([0, 1, 0, 1, 0, 1], [0, S, 0, S, 0, S]),
        "y2": ([0, 1, 0, 1, 0, 1], [0, S, 0, S, 0, S]),
        "z": ([0, 1, 0, 1], [0, -2 * S, 0, -2 * S]),
    }
    assert by_leaf(tree, rewards, AdvantageMode.HARD) == {
        "y1": ([0, 1, 0, 1, 0, 1], [0, 0, 0, S, 0, S]),
        "y2": ([0, 0, 0, 0, 0, 1], [0, 0, 0, 0, 0, S]),
        "z": ([0, 0, 0, 1], [0, 0, 0, -2 * S]),
    }


@st.composite
def random_trees(draw: st.DrawFn, chain_only: bool = False) -> tuple[TrajectoryTree, dict[str, float]]:
    n = draw(st.integers(2, 14))
    segments = [seg("n0", None, draw(st.lists(st.just(0), max_size=3)))]
    children: dict[int, int] = {}
    for i in range(1, n):
        options = [0] + [j for j in range(1, i) if not chain_only or children.get(j, 0) == 0]
        parent = draw(st.sampled_from(options))
        children[parent] = children.get(parent, 0) + 1
        mask = draw(st.lists(st.integers(0, 1), max_size=4))
        segments.append(seg(f"n{i}", f"n{parent}", mask))
    tree = TrajectoryTree(segments)
    rewards = {leaf: draw(st.sampled_from([-1.0, 0.0, 0.5, 1.0, 1.1])) for leaf in tree.leaves}
    return tree, rewards


@settings(max_examples=150, deadline=None)
@given(random_trees())
def test_properties_on_random_trees(case: tuple[TrajectoryTree, dict[str, float]]) -> None:
    tree, rewards = case
    leaf_adv = leaf_advantages(tree, rewards)
    assert sum(leaf_adv.values()) == pytest.approx(0.0, abs=1e-9)
    nodes = node_advantages(tree, leaf_adv)
    for nid, leaves in tree.leaves_under.items():
        assert nodes[nid] == pytest.approx(sum(leaf_adv[x] for x in leaves) / len(leaves))
    soft = tree_sequences(tree, leaf_adv, AdvantageMode.SOFT)
    hard = tree_sequences(tree, leaf_adv, AdvantageMode.HARD)
    # Soft trains every path in full; hard trains each model token of the tree exactly once.
    assert sum(sum(s.loss_mask) for s in soft) == sum(
        tree.count_model_tokens(tree.path(x)) for x in tree.leaves
    )
    assert sum(sum(s.loss_mask) for s in hard) == tree.count_model_tokens()
    for s, h in zip(soft, hard, strict=True):
        assert s.token_ids == h.token_ids
        assert all(a == 0.0 for a, m in zip(h.advantages, h.loss_mask, strict=True) if not m)


@settings(max_examples=100, deadline=None)
@given(random_trees(chain_only=True))
def test_hard_equals_soft_without_branching(case: tuple[TrajectoryTree, dict[str, float]]) -> None:
    tree, rewards = case
    assert [x for x in tree.branch_points if x != tree.root_id] == []
    leaf_adv = leaf_advantages(tree, rewards)
    assert tree_sequences(tree, leaf_adv, AdvantageMode.HARD) == tree_sequences(
        tree, leaf_adv, AdvantageMode.SOFT
    )


@settings(max_examples=150, deadline=None)
@given(random_trees())
def test_a_packed_tree_trains_what_the_hard_sequences_train(
    case: tuple[TrajectoryTree, dict[str, float]],
) -> None:
    """Every trained token: same context (followed back through `previous`), token and advantage."""
    tree, rewards = case
    leaf_adv = leaf_advantages(tree, rewards)
    packed = packed_tree(tree, leaf_adv)
    assert len(packed.token_ids) == sum(len(tree.node(n).token_ids) for n in tree.preorder)

    def context(t: int) -> tuple[int, ...]:
        out = []
        while (t := packed.previous[t]) >= 0:
            out.append(packed.token_ids[t])
        return tuple(reversed(out))

    trained = sorted(
        (context(t), packed.token_ids[t], round(packed.advantages[t], 9))
        for t in range(len(packed.token_ids))
        if packed.loss_mask[t]
    )
    assert all(packed.positions[t] == len(context(t)) for t in range(len(packed.token_ids)))
    want = sorted(
        (tuple(s.token_ids[:i]), s.token_ids[i], round(s.advantages[i], 9))
        for s in tree_sequences(tree, leaf_adv, AdvantageMode.HARD)
        for i in range(len(s.token_ids))
        if s.loss_mask[i]
    )
    assert trained == want


def test_missing_reward_is_named() -> None:
    tree = TrajectoryTree([seg("P", None, [0]), seg("a", "P", [1]), seg("b", "P", [1])])
    with pytest.raises(ValueError, match=r"\['b'\]"):
        leaf_advantages(tree, {"a": 1.0})


def test_entropy_aware_advantages() -> None:
    adv = torch.tensor([[1.0, 1.0, 1.0, 5.0]])
    ents = torch.tensor([[1.0, 2.0, 3.0, 100.0]])
    mask = torch.tensor([[1, 1, 1, 0]])
    assert entropy_aware_advantages(adv, ents, mask, 0.0) is adv
    got = entropy_aware_advantages(adv, ents, mask, 0.5)
    z = math.sqrt(1.5)  # population z-score of 3 over {1, 2, 3}
    torch.testing.assert_close(got, torch.tensor([[1 - 0.5 * z, 1.0, 1 + 0.5 * z, 5.0]]), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="shapes differ"):
        entropy_aware_advantages(adv, ents[:, :2], mask, 0.5)
