"""A prompt's trajectory tree (DESIGN.md §4.3, §4.5).

Nodes are segments: the root holds the prompt (loss mask 0); every other node holds what one trajectory
appended in one round: model tokens (loss mask 1), and, if the round ended in a tool call, the tool
result (loss mask 0). A fork after a tool result adds siblings under the node that ends with that
result, so shared prefixes are stored once. Leaves are finished trajectories; a root→leaf path is one
trajectory, which is what soft attribution trains on and what rewards are computed for.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property


@dataclass(frozen=True)
class Segment:
    """One tree node: its tokens and their loss mask (1 = sampled by the model and trained)."""

    node_id: str
    parent_id: str | None
    token_ids: tuple[int, ...]
    loss_mask: tuple[int, ...]

    def __post_init__(self) -> None:
        if len(self.token_ids) != len(self.loss_mask):
            raise ValueError(
                f"node {self.node_id!r}: {len(self.token_ids)} token_ids but {len(self.loss_mask)} loss_mask"
            )
        if any(m not in (0, 1) for m in self.loss_mask):
            raise ValueError(f"node {self.node_id!r}: loss_mask values must be 0 or 1")


class TrajectoryTree:
    """An immutable, validated tree of `Segment`s with exactly one root.

    Children keep the order in which they were given, so leaf order (and everything derived from it)
    is deterministic.
    """

    def __init__(self, segments: Iterable[Segment]) -> None:
        self._nodes: dict[str, Segment] = {}
        for seg in segments:
            if seg.node_id in self._nodes:
                raise ValueError(f"duplicate node id {seg.node_id!r}")
            self._nodes[seg.node_id] = seg
        roots = [s.node_id for s in self._nodes.values() if s.parent_id is None]
        if len(roots) != 1:
            raise ValueError(f"a tree needs exactly one root, found {len(roots)}: {roots}")
        self.root_id = roots[0]
        self._children: dict[str, list[str]] = {nid: [] for nid in self._nodes}
        for seg in self._nodes.values():
            if seg.parent_id is None:
                continue
            if seg.parent_id not in self._nodes:
                raise ValueError(f"node {seg.node_id!r} has unknown parent {seg.parent_id!r}")
            self._children[seg.parent_id].append(seg.node_id)
        reachable = self._preorder()
        if len(reachable) != len(self._nodes):
            unreached = sorted(set(self._nodes) - set(reachable))
            raise ValueError(f"nodes not reachable from the root (a cycle?): {unreached}")

    def _preorder(self) -> list[str]:
        order: list[str] = []
        stack = [self.root_id]
        while stack:
            nid = stack.pop()
            order.append(nid)
            stack.extend(reversed(self._children[nid]))
        return order

    def __len__(self) -> int:
        return len(self._nodes)

    def node(self, node_id: str) -> Segment:
        return self._nodes[node_id]

    def children(self, node_id: str) -> tuple[str, ...]:
        return tuple(self._children[node_id])

    @cached_property
    def preorder(self) -> tuple[str, ...]:
        """All node ids, parents before children, siblings in insertion order."""
        return tuple(self._preorder())

    @cached_property
    def leaves(self) -> tuple[str, ...]:
        """Leaf ids in preorder: one per trajectory."""
        return tuple(nid for nid in self.preorder if not self._children[nid])

    @cached_property
    def branch_points(self) -> tuple[str, ...]:
        """Nodes with more than one child: where trajectories diverge."""
        return tuple(nid for nid in self.preorder if len(self._children[nid]) > 1)

    def path(self, node_id: str) -> tuple[str, ...]:
        """Node ids from the root down to `node_id`, inclusive."""
        out: list[str] = []
        current: str | None = node_id
        while current is not None:
            out.append(current)
            current = self._nodes[current].parent_id
        return tuple(reversed(out))

    @cached_property
    def leaves_under(self) -> dict[str, tuple[str, ...]]:
        """For every node, the leaves of its subtree (in leaf order)."""
        under: dict[str, list[str]] = {nid: [] for nid in self._nodes}
        for leaf in self.leaves:
            for nid in self.path(leaf):
                under[nid].append(leaf)
        return {nid: tuple(v) for nid, v in under.items()}

    def sequence(self, leaf_id: str) -> tuple[list[int], list[int]]:
        """The root→leaf trajectory as (token_ids, loss_mask), shared prefix included."""
        if self._children[leaf_id]:
            raise ValueError(f"{leaf_id!r} is not a leaf")
        ids: list[int] = []
        mask: list[int] = []
        for nid in self.path(leaf_id):
            ids.extend(self._nodes[nid].token_ids)
            mask.extend(self._nodes[nid].loss_mask)
        return ids, mask

    def count_model_tokens(self, node_ids: Sequence[str] | None = None) -> int:
        """Number of loss-mask-1 tokens in the given nodes (default: the whole tree, each node once)."""
        ids = self.preorder if node_ids is None else node_ids
        return sum(sum(self._nodes[nid].loss_mask) for nid in ids)


@dataclass(frozen=True)
class TreeCost:
    """What a tree cost to generate, against sampling its trajectories independently (DESIGN.md §7)."""

    leaves: int
    tree_tokens: int
    """Every node's tokens once: what an engine that reuses shared prefixes computes (prompt included)."""
    independent_tokens: int
    """The root→leaf sequences summed: the same trajectories sampled one by one, prefixes recomputed."""
    generated_tokens: int
    """Model tokens (loss mask 1), each node once."""

    @property
    def ratio(self) -> float:
        """tree_tokens / independent_tokens (1.0 without branching; lower is more reuse)."""
        return self.tree_tokens / self.independent_tokens


def tree_cost(tree: TrajectoryTree) -> TreeCost:
    leaves = [leaf for leaf in tree.leaves if tree.node(leaf).parent_id is not None]
    return TreeCost(
        leaves=len(leaves),
        tree_tokens=sum(len(tree.node(n).token_ids) for n in tree.preorder),
        independent_tokens=sum(len(tree.sequence(leaf)[0]) for leaf in leaves),
        generated_tokens=tree.count_model_tokens(),
    )
