"""The training half of one step: a step's completed trees -> optimizer steps -> StepMetrics.

With `loss.entropy_advantage_coef` (AEPO), advantages are first scaled by the rollout entropy's z-score
over the whole step. Old log-probs are the learner's own (recomputed before any update: the default) or
the rollout's (`loss.old_logprobs`); either way the mean |rollout - learner| log-prob over model tokens
is reported, a known early sign of a rollout/learner mismatch. Each of `optim.ppo_epochs` passes
shuffles the trees and takes one optimizer step per `optim.mini_batch_prompts` trees. What the trees say
about the rollout (reward, accuracy, tool calls, forks, entropy after tool results) goes into the same
metrics.
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from statistics import fmean, pstdev

from arpo.config import OldLogprobSource, RunConfig
from arpo.proto.runs import StepMetrics
from arpo.proto.tree import Tree
from arpo.services.learner.batches import TrainSequence, tree_batch, with_entropy_aware_advantages
from arpo.services.learner.torch_backend import TorchLearner, UpdateStats


def _mismatch(seqs: Sequence[TrainSequence], learner_logps: Sequence[list[float]]) -> float:
    diffs = [
        abs(r - lp)
        for s, logps in zip(seqs, learner_logps, strict=True)
        for r, lp, m in zip(s.rollout_logprobs, logps, s.loss_mask, strict=True)
        if m
    ]
    return fmean(diffs) if diffs else 0.0


def _rollout_metrics(trees: Sequence[Tree], window: int) -> dict[str, float | int | None]:
    """What the trees say about the rollout. Entropy after tool results: the first `window` model
    tokens of each segment that follows a tool result; elsewhere: every other model token."""
    leaves = [t for tree in trees for t in tree.trajectories]
    rewards = [t.reward or 0.0 for t in leaves]
    after_tool: list[float] = []
    elsewhere: list[float] = []
    lengths: list[int] = []
    for tree in trees:
        nodes = {n.node_id: n for n in tree.nodes}
        for n in tree.nodes:
            seen = 0
            for h, m in zip(n.entropies, n.loss_mask, strict=True):
                if m:
                    (after_tool if n.delta_h is not None and seen < window else elsewhere).append(h)
                    seen += 1
        lengths += [sum(len(nodes[i].token_ids) for i in t.node_ids[1:]) for t in tree.trajectories]
    return {
        "trees": len(trees),
        "trajectories": len(leaves),
        "reward_mean": fmean(rewards) if rewards else 0.0,
        "reward_std": pstdev(rewards) if rewards else 0.0,
        "accuracy": fmean(float(t.score == 1.0) for t in leaves) if leaves else 0.0,
        "format_ok_rate": fmean(float(bool(t.format_ok)) for t in leaves) if leaves else 0.0,
        "tool_calls_per_trajectory": fmean(t.tool_calls for t in leaves) if leaves else 0.0,
        "branches_per_tree": fmean(sum(n.forked for n in tree.nodes) for tree in trees) if trees else 0.0,
        "entropy_mean": fmean(after_tool + elsewhere) if after_tool or elsewhere else None,
        "entropy_after_tool_mean": fmean(after_tool) if after_tool else None,
        "entropy_elsewhere_mean": fmean(elsewhere) if elsewhere else None,
        "response_tokens_mean": fmean(lengths) if lengths else 0.0,
        "response_tokens_max": max(lengths, default=0),
        "generated_tokens": len(after_tool) + len(elsewhere),
        "dead_letters": sum(tree.dead_letters for tree in trees),
    }


def _advantage_stats(seqs: Sequence[TrainSequence]) -> dict[str, float | None]:
    values = [a for s in seqs for a, m in zip(s.advantages, s.loss_mask, strict=True) if m]
    return {
        "advantage_mean": fmean(values) if values else None,
        "advantage_std": pstdev(values) if values else None,
    }


def train_on_trees(
    learner: TorchLearner,
    trees: Sequence[Tree],
    config: RunConfig,
    step: int,
    policy_version: int,
    rng: random.Random,
) -> StepMetrics:
    """Train on one step's trees; every tree needs its rewards."""
    started = time.perf_counter()
    per_tree = [tree_batch(tree, config.loss.advantage_mode) for tree in trees]
    flat = with_entropy_aware_advantages(
        [s for seqs in per_tree for s in seqs], config.loss.entropy_advantage_coef
    )
    sizes = [len(seqs) for seqs in per_tree]
    per_tree = [flat[sum(sizes[:i]) : sum(sizes[: i + 1])] for i in range(len(sizes))]
    learner_logps = learner.logprobs(flat)
    ref_logps = learner.reference_logprobs(flat)
    mismatch = _mismatch(flat, learner_logps)
    source = (
        learner_logps
        if config.loss.old_logprobs is OldLogprobSource.LEARNER
        else [s.rollout_logprobs for s in flat]
    )
    old_of = {id(s): lp for s, lp in zip(flat, source, strict=True)}
    ref_of = {} if ref_logps is None else {id(s): lp for s, lp in zip(flat, ref_logps, strict=True)}
    updates: list[UpdateStats] = []
    size = config.optim.mini_batch_prompts
    for _ in range(config.optim.ppo_epochs):
        order = list(range(len(trees)))
        rng.shuffle(order)
        for start in range(0, len(order), size):
            seqs = [s for i in order[start : start + size] for s in per_tree[i]]
            if any(any(s.loss_mask[1:]) for s in seqs):
                ref = [ref_of[id(s)] for s in seqs] if ref_logps is not None else None
                updates.append(learner.update(seqs, [old_of[id(s)] for s in seqs], ref))
    weights = [u.tokens for u in updates] or [1]

    def mean(field: str) -> float | None:
        return (
            sum(getattr(u, field) * w for u, w in zip(updates, weights, strict=False)) / sum(weights)
            if updates
            else None
        )

    elapsed = time.perf_counter() - started
    # Tokens through the model: one no-grad pass for the old log-probs (two with a reference), then
    # each update's forward and backward.
    passes = 1 + (ref_logps is not None) + config.optim.ppo_epochs
    return StepMetrics(
        step=step,
        policy_version=policy_version,
        **_rollout_metrics(trees, config.branching.entropy_window),
        **_advantage_stats(flat),
        policy_loss=mean("loss"),
        clip_fraction=mean("clip_fraction"),
        approx_kl=mean("approx_kl"),
        ref_kl=mean("ref_kl") if ref_logps is not None else None,
        policy_entropy=mean("entropy"),
        grad_norm=mean("grad_norm"),
        logprob_mismatch=mismatch,
        time_train_s=elapsed,
        train_tokens_per_s=passes * sum(len(s.token_ids) for s in flat) / elapsed if elapsed > 0 else None,
    )
