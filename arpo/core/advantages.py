"""Advantages over a prompt's trajectory tree (DESIGN.md §4.5).

The group is the prompt's M leaves. GRPO: A_i = (R_i - mean R) / (std R + eps), with the sample
standard deviation (as the reference code's `torch.std`); a group of one has advantage 0.

Two ways to credit tokens of the tree:

- SOFT (default, the paper's): every leaf is its own sequence root→leaf, shared prefix duplicated, all
  its model tokens carrying the leaf's A. Identical prefixes give identical PPO ratios, so shared tokens
  receive the average of their leaves' gradients implicitly.
- HARD: every node gets the mean A of the leaves below it, and each node's tokens are trained once, not
  once per leaf. We still emit one sequence per leaf (a shared node needs its prefix as context), but a
  node's loss mask is switched on only in the sequence of its first leaf. With no branching every node
  has one leaf, so HARD produces exactly the SOFT sequences: it equals GRPO. Under the token-mean loss
  each unique model token then weighs the same, whichever branch it sits on.

The paper found SOFT more stable; HARD is not in the reference code.

Because HARD trains each node once, a tree can also be trained as one packed row (`packed_tree`): every
node's tokens once, in preorder, each token attending only to its own node's earlier tokens and to its
ancestors' tokens, and predicted from the previous token on its root path. That is the per-leaf HARD
loss without computing any shared prefix twice.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

import torch

from arpo.core.tree import TrajectoryTree

ADVANTAGE_STD_EPS = 1e-6


class AdvantageMode(StrEnum):
    """How leaf advantages are attributed to the tokens of a tree."""

    SOFT = "soft"
    HARD = "hard"


def group_advantages(rewards: Sequence[float] | torch.Tensor, eps: float = ADVANTAGE_STD_EPS) -> torch.Tensor:
    """GRPO advantages of one group: (M,) -> (M,) float64; zeros for M = 1."""
    r = torch.as_tensor(rewards, dtype=torch.float64)
    if r.ndim != 1 or r.numel() == 0:
        raise ValueError(f"rewards must be a non-empty 1-D sequence, got shape {tuple(r.shape)}")
    if not torch.isfinite(r).all():
        raise ValueError("rewards must be finite")
    if r.numel() == 1:
        return torch.zeros_like(r)
    return (r - r.mean()) / (r.std() + eps)


def leaf_advantages(tree: TrajectoryTree, rewards: Mapping[str, float]) -> dict[str, float]:
    """GRPO advantage of every leaf of `tree`, the group being all its leaves."""
    missing = [leaf for leaf in tree.leaves if leaf not in rewards]
    if missing:
        raise ValueError(f"no reward for leaves {missing}")
    adv = group_advantages([rewards[leaf] for leaf in tree.leaves])
    return {leaf: float(a) for leaf, a in zip(tree.leaves, adv, strict=True)}


def node_advantages(tree: TrajectoryTree, leaf_adv: Mapping[str, float]) -> dict[str, float]:
    """Hard attribution: each node's advantage is the mean of the advantages of the leaves below it."""
    return {
        nid: sum(leaf_adv[leaf] for leaf in leaves) / len(leaves) for nid, leaves in tree.leaves_under.items()
    }


@dataclass(frozen=True)
class TokenSequence:
    """One training sequence: a root→leaf path with per-token loss mask and advantage.

    `advantages[t]` is 0.0 wherever `loss_mask[t]` is 0.
    """

    leaf_id: str
    token_ids: list[int]
    loss_mask: list[int]
    advantages: list[float]


def tree_sequences(
    tree: TrajectoryTree, leaf_adv: Mapping[str, float], mode: AdvantageMode
) -> list[TokenSequence]:
    """The training sequences of one tree under SOFT or HARD attribution, one per leaf, in leaf order."""
    match mode:
        case AdvantageMode.SOFT:
            per_node = None
        case AdvantageMode.HARD:
            per_node = node_advantages(tree, leaf_adv)
    out: list[TokenSequence] = []
    for leaf in tree.leaves:
        ids: list[int] = []
        mask: list[int] = []
        advs: list[float] = []
        for nid in tree.path(leaf):
            seg = tree.node(nid)
            if per_node is None:
                owned, adv = True, leaf_adv[leaf]
            else:
                owned, adv = tree.leaves_under[nid][0] == leaf, per_node[nid]
            ids.extend(seg.token_ids)
            for m in seg.loss_mask:
                on = m if owned else 0
                mask.append(on)
                advs.append(adv if on else 0.0)
        out.append(TokenSequence(leaf, ids, mask, advs))
    return out


def entropy_aware_advantages(
    advantages: torch.Tensor,
    entropies: torch.Tensor,
    loss_mask: torch.Tensor,
    coef: float,
    eps: float = ADVANTAGE_STD_EPS,
) -> torch.Tensor:
    """AEPO's entropy-aware advantage A·(1 + coef·zscore(H_t)): (B, T) x3 -> (B, T).

    The z-score uses the mean and standard deviation of the entropies of the loss-mask tokens in the
    batch; entropies are treated as constants (no gradient flows through them).
    """
    if not advantages.shape == entropies.shape == loss_mask.shape:
        raise ValueError(
            f"shapes differ: advantages {tuple(advantages.shape)}, entropies {tuple(entropies.shape)}, "
            f"loss_mask {tuple(loss_mask.shape)}"
        )
    if coef == 0.0:
        return advantages
    h = entropies.detach().double()
    m = loss_mask.double()
    n = m.sum().clamp(min=1.0)
    mean = (h * m).sum() / n
    std = (((h - mean) ** 2 * m).sum() / n).sqrt()
    z = ((h - mean) / (std + eps)) * m
    return advantages * (1.0 + coef * z).to(advantages.dtype)


@dataclass(frozen=True)
class PackedTree:
    """A whole tree as one row (HARD attribution): tokens of every node once, in preorder.

    `node_of[t]` is the index (into preorder) of token t's node; `parent_of[i]` is node i's parent index
    (-1 for the root). Token t may attend to token s <= t iff s's node is t's node or one of its
    ancestors; `previous[t]` is the token t is predicted from (-1: none, the tree's first token), and
    `positions[t]` its position on its root path.
    """

    token_ids: list[int]
    loss_mask: list[int]
    advantages: list[float]
    node_of: list[int]
    parent_of: list[int]
    previous: list[int]
    positions: list[int]


def packed_tree(tree: TrajectoryTree, leaf_adv: Mapping[str, float]) -> PackedTree:
    """`tree` packed for HARD attribution: the same loss, per token, as `tree_sequences(..., HARD)`."""
    per_node = node_advantages(tree, leaf_adv)
    index = {nid: i for i, nid in enumerate(tree.preorder)}
    last_token: dict[str, int] = {}  # a node's last token, or its nearest ancestor's when it has none
    out = PackedTree([], [], [], [], [], [], [])
    depth: dict[str, int] = {}
    for nid in tree.preorder:
        seg = tree.node(nid)
        parent = seg.parent_id
        out.parent_of.append(-1 if parent is None else index[parent])
        prev = -1 if parent is None else last_token[parent]
        pos = 0 if parent is None else depth[parent]
        for tok, m in zip(seg.token_ids, seg.loss_mask, strict=True):
            out.token_ids.append(tok)
            out.loss_mask.append(m)
            out.advantages.append(per_node[nid] if m else 0.0)
            out.node_of.append(index[nid])
            out.previous.append(prev)
            out.positions.append(pos)
            prev = len(out.token_ids) - 1
            pos += 1
        last_token[nid], depth[nid] = prev, pos
    return out
