"""Training sequences from completed trees, and micro-batches bounded by a token budget.

SOFT: one sequence per leaf (root -> leaf, the shared prefix repeated as context) with the leaf's
advantage. HARD: one packed row per tree (`arpo.core.advantages.packed_tree`): every node's tokens once,
with each node's mean advantage, and a `Packing` telling the backend which tokens see which, so no
shared prefix is computed twice. The rollout's log-probs ride along (the learner recomputes its own by
default and reports the mismatch).
Micro-batches are packed longest first so that rows x longest row stays within `token_budget`: memory is
bounded by configuration, not by the longest tree; a single row longer than the budget goes alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch

from arpo.core.advantages import (
    AdvantageMode,
    entropy_aware_advantages,
    leaf_advantages,
    packed_tree,
    tree_sequences,
)
from arpo.proto.tree import Tree


@dataclass(frozen=True)
class Packing:
    """How the tokens of a packed tree row see each other (see `arpo.core.advantages.PackedTree`)."""

    node_of: list[int]
    parent_of: list[int]
    previous: list[int]
    positions: list[int]

    def visible(self) -> torch.Tensor:
        """(T, T) bool: token t may attend to token s (s <= t, s's node on t's root path)."""
        parents = self.parent_of
        ancestor = torch.eye(len(parents), dtype=torch.bool)
        for i, p in enumerate(parents):  # preorder: a parent's row is complete before its children's
            if p >= 0:
                ancestor[i] |= ancestor[p]
        node = torch.tensor(self.node_of)
        t = len(self.node_of)
        return ancestor[node][:, node] & torch.ones(t, t, dtype=torch.bool).tril()


@dataclass(frozen=True)
class TrainSequence:
    """One training row: tokens, loss mask, advantages and the rollout's log-probs, all parallel.

    `packing` is None for a plain left-to-right sequence (token t predicted from t - 1); a packed tree
    (HARD) has one, and `leaf_id` is then empty."""

    tree_id: str
    leaf_id: str
    token_ids: list[int]
    loss_mask: list[int]
    advantages: list[float]
    rollout_logprobs: list[float]
    rollout_entropies: list[float]
    packing: Packing | None = None


def tree_batch(tree: Tree, mode: AdvantageMode) -> list[TrainSequence]:
    """The rows of one tree (SOFT: one per leaf; HARD: one packed row); every trajectory needs its reward."""
    missing = [t.leaf_node_id for t in tree.trajectories if t.reward is None]
    if missing:
        raise ValueError(f"tree {tree.tree_id}: no reward for leaves {missing}")
    core = tree.to_core()
    rewards = {t.leaf_node_id: float(t.reward) for t in tree.trajectories if t.reward is not None}
    nodes = {n.node_id: n for n in tree.nodes}
    advantages = leaf_advantages(core, rewards)
    if mode is AdvantageMode.HARD:
        packed = packed_tree(core, advantages)
        order = [nodes[nid] for nid in core.preorder]
        return [
            TrainSequence(
                tree.tree_id,
                "",
                packed.token_ids,
                packed.loss_mask,
                packed.advantages,
                [lp for n in order for lp in n.logprobs],
                [h for n in order for h in n.entropies],
                Packing(packed.node_of, packed.parent_of, packed.previous, packed.positions),
            )
        ]
    out = []
    for seq in tree_sequences(core, advantages, mode):
        path = [nodes[nid] for nid in core.path(seq.leaf_id)]
        logprobs = [lp for n in path for lp in n.logprobs]
        entropies = [h for n in path for h in n.entropies]
        out.append(
            TrainSequence(
                tree.tree_id, seq.leaf_id, seq.token_ids, seq.loss_mask, seq.advantages, logprobs, entropies
            )
        )
    return out


def with_entropy_aware_advantages(sequences: Sequence[TrainSequence], coef: float) -> list[TrainSequence]:
    """AEPO: advantages times (1 + coef * z-score of the rollout entropy), the z-score over every
    loss-mask token of `sequences` (a whole step, so it does not depend on how the step is split)."""
    if coef == 0.0:
        return list(sequences)
    width = max(len(s.token_ids) for s in sequences)

    def padded(rows: list[list[float]] | list[list[int]]) -> torch.Tensor:
        return torch.tensor([list(r) + [0] * (width - len(r)) for r in rows], dtype=torch.float64)

    scaled = entropy_aware_advantages(
        padded([s.advantages for s in sequences]),
        padded([s.rollout_entropies for s in sequences]),
        padded([s.loss_mask for s in sequences]),
        coef,
    )
    return [replace(s, advantages=scaled[i, : len(s.token_ids)].tolist()) for i, s in enumerate(sequences)]


def micro_batches(sequences: Sequence[TrainSequence], token_budget: int) -> list[list[int]]:
    """Indices of `sequences` grouped so that len(group) * longest <= token_budget (longest first)."""
    if token_budget < 1:
        raise ValueError(f"token_budget must be >= 1, got {token_budget}")
    order = sorted(range(len(sequences)), key=lambda i: -len(sequences[i].token_ids))
    groups: list[list[int]] = []
    for i in order:
        if groups and (len(groups[-1]) + 1) * len(sequences[groups[-1][0]].token_ids) <= token_budget:
            groups[-1].append(i)
        else:
            groups.append([i])
    return groups
