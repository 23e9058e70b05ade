"""Branch decisions and the per-prompt budget, as pure functions."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from arpo.core.branching import (
    BranchingMode,
    BranchRule,
    Budget,
    branch_probability,
    dynamic_initial_rollouts,
    should_branch,
)


def test_probability_is_clipped_linear_in_delta_h() -> None:
    rule = BranchRule(alpha=0.5, beta=0.2)
    assert branch_probability(0.0, rule) == pytest.approx(0.5)
    assert branch_probability(1.5, rule) == pytest.approx(0.8)
    assert branch_probability(-1.0, rule) == pytest.approx(0.3)
    assert branch_probability(10.0, rule) == 1.0
    assert branch_probability(-10.0, rule) == 0.0


def test_consecutive_penalty() -> None:
    rule = BranchRule(alpha=0.5, beta=0.2, consecutive_penalty=0.05)
    assert branch_probability(0.0, rule, consecutive_branches=2) == pytest.approx(0.5 * 0.9)
    assert branch_probability(0.0, rule, consecutive_branches=40) == 0.0
    with pytest.raises(ValueError, match="consecutive_branches"):
        branch_probability(0.0, rule, consecutive_branches=-1)


def test_stochastic_uses_the_draw() -> None:
    rule = BranchRule(alpha=0.5, beta=0.2)
    assert should_branch(0.0, rule, uniform_draw=0.49)
    assert not should_branch(0.0, rule, uniform_draw=0.5)
    assert should_branch(2.0, rule, uniform_draw=0.89)  # p = 0.9
    with pytest.raises(ValueError, match="uniform_draw"):
        should_branch(0.0, rule, uniform_draw=1.0)
    with pytest.raises(ValueError, match="delta_h"):
        should_branch(float("nan"), rule, uniform_draw=0.1)


def test_stochastic_frequency_matches_probability() -> None:
    rule = BranchRule(alpha=0.5, beta=0.2)
    rng = random.Random(0)
    hits = sum(should_branch(1.0, rule, rng.random()) for _ in range(20_000))
    assert hits / 20_000 == pytest.approx(0.7, abs=0.015)


def test_threshold_mode_ignores_the_draw() -> None:
    rule = BranchRule(alpha=0.5, beta=0.2, mode=BranchingMode.THRESHOLD, threshold=0.5)
    assert not should_branch(0.0, rule, uniform_draw=0.0)  # 0.5 is not > 0.5
    assert should_branch(0.01, rule, uniform_draw=0.99)
    assert not should_branch(-0.5, rule, uniform_draw=0.0)
    penalized = BranchRule(0.5, 0.2, BranchingMode.THRESHOLD, 0.5, consecutive_penalty=0.5)
    assert not should_branch(1.0, penalized, 0.0, consecutive_branches=1)  # 0.7 * 0.5 <= 0.5


def test_budget_lifecycle() -> None:
    b = Budget(size=4)
    granted, b = b.admit(2)  # N = 2 roots
    assert granted == 2 and b.running == 2 and b.remaining == 2
    granted, b = b.admit(3)  # a fork asks for 3, only 2 left
    assert granted == 2 and b.remaining == 0
    granted, b = b.admit(1)
    assert granted == 0
    for _ in range(4):
        assert not b.complete
        b = b.finish()
    assert b.complete
    with pytest.raises(ValueError, match="no running"):
        b.finish()


def test_refill_starts_all_remaining_at_once_only_when_idle() -> None:
    _, b = Budget(size=8).admit(3)
    assert b.refill() == (0, b)  # trajectories still running: no refill
    for _ in range(3):
        b = b.finish()
    granted, b = b.refill()
    assert granted == 5 and b.started == 8  # all 5 at once, not one per round


@given(
    size=st.integers(1, 32),
    ops=st.lists(st.tuples(st.sampled_from(["admit", "finish", "refill"]), st.integers(0, 5)), max_size=60),
)
def test_budget_invariants(size: int, ops: list[tuple[str, int]]) -> None:
    b = Budget(size)
    for op, n in ops:
        if op == "admit":
            _, b = b.admit(n)
        elif op == "finish" and b.running:
            b = b.finish()
        elif op == "refill":
            _, b = b.refill()
        assert 0 <= b.finished <= b.started <= b.size


def test_budget_validation() -> None:
    with pytest.raises(ValueError, match="size"):
        Budget(0)
    with pytest.raises(ValueError, match="finished <= started"):
        Budget(4, started=1, finished=2)
    with pytest.raises(ValueError, match="requested"):
        Budget(4).admit(-1)


def test_dynamic_initial_rollouts() -> None:
    assert dynamic_initial_rollouts(16, 1.0, 1.0) == 8
    assert dynamic_initial_rollouts(16, 3.0, 0.0, sharpness=2.0) == 16
    assert dynamic_initial_rollouts(16, 0.0, 5.0) == 1  # never zero roots
    assert dynamic_initial_rollouts(16, 2.0, 1.0) > dynamic_initial_rollouts(16, 1.0, 2.0)
    with pytest.raises(ValueError, match="group_size"):
        dynamic_initial_rollouts(0, 1.0, 1.0)
