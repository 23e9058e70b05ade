"""The trajectory tree: validation, paths, leaves, sequences."""

from __future__ import annotations

import pytest

from arpo.core.tree import Segment, TrajectoryTree, tree_cost


def seg(node_id: str, parent: str | None, ids: tuple[int, ...], mask: tuple[int, ...]) -> Segment:
    return Segment(node_id, parent, ids, mask)


TREE = [
    seg("P", None, (1, 2), (0, 0)),
    seg("a", "P", (3, 4), (1, 0)),
    seg("a1", "a", (5,), (1,)),
    seg("a2", "a", (6, 7), (1, 1)),
    seg("b", "P", (8,), (1,)),
]


def test_structure() -> None:
    tree = TrajectoryTree(TREE)
    assert tree.root_id == "P" and len(tree) == 5
    assert tree.preorder == ("P", "a", "a1", "a2", "b")
    assert tree.leaves == ("a1", "a2", "b")
    assert tree.branch_points == ("P", "a")
    assert tree.path("a2") == ("P", "a", "a2")
    assert tree.children("a") == ("a1", "a2")
    assert tree.leaves_under["a"] == ("a1", "a2") and tree.leaves_under["P"] == ("a1", "a2", "b")
    assert tree.sequence("a2") == ([1, 2, 3, 4, 6, 7], [0, 0, 1, 0, 1, 1])
    assert tree.count_model_tokens() == 5
    with pytest.raises(ValueError, match="not a leaf"):
        tree.sequence("a")


def test_order_of_input_does_not_matter_for_validity() -> None:
    assert TrajectoryTree(reversed(TREE)).leaves == ("b", "a2", "a1")  # siblings keep given order


@pytest.mark.parametrize(
    ("segments", "message"),
    [
        ([seg("P", None, (), ()), seg("Q", None, (), ())], "exactly one root"),
        ([seg("P", None, (), ()), seg("a", "zzz", (), ())], "unknown parent 'zzz'"),
        ([seg("P", None, (), ()), seg("P", None, (), ())], "duplicate node id 'P'"),
        ([seg("P", None, (), ()), seg("a", "b", (), ()), seg("b", "a", (), ())], "not reachable"),
        ([], "exactly one root"),
    ],
)
def test_invalid_trees(segments: list[Segment], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TrajectoryTree(segments)


def test_segment_validation() -> None:
    with pytest.raises(ValueError, match="2 token_ids but 1 loss_mask"):
        Segment("x", None, (1, 2), (1,))
    with pytest.raises(ValueError, match="0 or 1"):
        Segment("x", None, (1,), (2,))


def test_tree_cost_counts_shared_prefixes_once() -> None:
    tree = TrajectoryTree(
        [
            Segment("r", None, (1, 2, 3, 4), (0, 0, 0, 0)),
            Segment("a", "r", (5, 6, 7), (1, 1, 0)),  # model tokens, then a tool result
            Segment("a1", "a", (8, 9), (1, 1)),
            Segment("a2", "a", (10,), (1,)),  # a fork after the tool result
            Segment("b", "r", (11, 12), (1, 1)),
        ]
    )
    cost = tree_cost(tree)
    assert (cost.leaves, cost.tree_tokens, cost.generated_tokens) == (3, 12, 7)
    assert cost.independent_tokens == (4 + 3 + 2) + (4 + 3 + 1) + (4 + 2)
    assert cost.ratio == 12 / 23
    flat = tree_cost(TrajectoryTree([Segment("r", None, (1,), (0,)), Segment("x", "r", (2,), (1,))]))
    assert flat.ratio == 1.0
