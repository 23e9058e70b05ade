"""Entropy-based adaptive rollout: when to fork, and the per-prompt budget (DESIGN.md §4.3).

Per prompt there is a budget of M trajectories (`group_size`). N of them (`initial_rollouts`) start
from the prompt. Each trajectory keeps H0, the mean entropy of its first segment (a fork inherits its
parent's H0). After every tool result the next segment is generated and

    ΔH = Hbar(segment after the tool result) - H0
    p  = clip(α + β·ΔH, 0, 1)

decides whether to fork there: `STOCHASTIC` mode forks with probability p (the reference code's rule;
the uniform draw is passed in), `THRESHOLD` mode forks iff α + β·ΔH > τ (the paper's text). A fork asks
for Z (`fork_width`) new trajectories whose prefix ends with that tool result; `Budget.admit` grants
only what is left of M. When a prompt has no running trajectory and budget is left, all remaining
trajectories start from the root at once (`Budget.refill`); the reference code refilled one per round,
which made every straggler a round of latency.

AEPO options (arXiv 2510.14545): a consecutive-branch penalty p·(1 - penalty·c), c = consecutive forks
on the path so far; and a dynamic initial split of M from root vs post-tool entropy
(`dynamic_initial_rollouts`).

`Budget` is the reference semantics of the atomic counters the agent workers keep in Redis.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from enum import StrEnum


class BranchingMode(StrEnum):
    """How the branch probability turns into a decision."""

    STOCHASTIC = "stochastic"
    THRESHOLD = "threshold"


@dataclass(frozen=True)
class BranchRule:
    """The knobs of one branch decision (a view of `RunConfig.branching`)."""

    alpha: float = 0.5
    beta: float = 0.2
    mode: BranchingMode = BranchingMode.STOCHASTIC
    threshold: float = 0.5
    consecutive_penalty: float = 0.0


def branch_probability(delta_h: float, rule: BranchRule, consecutive_branches: int = 0) -> float:
    """p = clip(α + β·ΔH, 0, 1), times the AEPO penalty (1 - penalty·c) clipped at 0."""
    if consecutive_branches < 0:
        raise ValueError(f"consecutive_branches must be >= 0, got {consecutive_branches}")
    p = min(max(rule.alpha + rule.beta * delta_h, 0.0), 1.0)
    return p * max(0.0, 1.0 - rule.consecutive_penalty * consecutive_branches)


def fork_probability(delta_h: float, rule: BranchRule, consecutive_branches: int = 0) -> float:
    """The chance that the rule forks at ΔH: p in STOCHASTIC mode; 1 or 0 in THRESHOLD mode, which forks
    iff (α + β·ΔH)·penalty > τ."""
    if rule.mode == BranchingMode.STOCHASTIC:
        return branch_probability(delta_h, rule, consecutive_branches)
    score = rule.alpha + rule.beta * delta_h
    penalty = max(0.0, 1.0 - rule.consecutive_penalty * consecutive_branches)
    return 1.0 if score * penalty > rule.threshold else 0.0


def should_branch(
    delta_h: float, rule: BranchRule, uniform_draw: float, consecutive_branches: int = 0
) -> bool:
    """The fork decision after one tool result; `uniform_draw` is U[0, 1) from the caller's seeded RNG
    (THRESHOLD mode's probability is 0 or 1, so the draw does not matter there)."""
    if not 0.0 <= uniform_draw < 1.0:
        raise ValueError(f"uniform_draw must be in [0, 1), got {uniform_draw}")
    if not math.isfinite(delta_h):
        raise ValueError(f"delta_h must be finite, got {delta_h}")
    return uniform_draw < fork_probability(delta_h, rule, consecutive_branches)


@dataclass(frozen=True)
class Budget:
    """A prompt's trajectory budget: `started <= size`; complete when every started one has finished.

    Methods return the granted count and the next state; nothing mutates.
    """

    size: int
    started: int = 0
    finished: int = 0

    def __post_init__(self) -> None:
        if self.size < 1:
            raise ValueError(f"budget size must be >= 1, got {self.size}")
        if not 0 <= self.finished <= self.started <= self.size:
            raise ValueError(f"need 0 <= finished <= started <= size, got {self}")

    @property
    def running(self) -> int:
        return self.started - self.finished

    @property
    def remaining(self) -> int:
        return self.size - self.started

    @property
    def complete(self) -> bool:
        return self.started == self.size and self.finished == self.size

    def admit(self, requested: int) -> tuple[int, Budget]:
        """Start up to `requested` trajectories (roots or forks) while budget is left."""
        if requested < 0:
            raise ValueError(f"requested must be >= 0, got {requested}")
        granted = min(requested, self.remaining)
        return granted, replace(self, started=self.started + granted)

    def finish(self) -> Budget:
        """One running trajectory reached a leaf (or was abandoned)."""
        if self.running == 0:
            raise ValueError(f"finish() with no running trajectory: {self}")
        return replace(self, finished=self.finished + 1)

    def refill(self) -> tuple[int, Budget]:
        """When nothing runs and budget is left, start all the remaining trajectories at once."""
        if self.running > 0:
            return 0, self
        return self.admit(self.remaining)


def dynamic_initial_rollouts(
    group_size: int, root_entropy: float, tool_entropy: float, sharpness: float = 1.0
) -> int:
    """AEPO's entropy pre-monitoring: how many of M start as whole trajectories.

    N = round(M · sigmoid(sharpness · (H_root - H_tool))), kept in [1, M]. When the prompt itself is more
    uncertain than tool results, more budget goes to independent trajectories; when tool results are the
    uncertain part, more is left for forks after them.
    """
    if group_size < 1:
        raise ValueError(f"group_size must be >= 1, got {group_size}")
    share = 1.0 / (1.0 + math.exp(-sharpness * (root_entropy - tool_entropy)))
    return min(group_size, max(1, round(group_size * share)))
