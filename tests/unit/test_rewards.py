"""Rewards: SQuAD normalization, EM/F1, math equivalence, format rules, the bonus."""

from __future__ import annotations

import threading

import pytest

from arpo.core.rewards import (
    AnswerMetric,
    RewardParams,
    check_format,
    compute_reward,
    exact_match,
    math_equal,
    normalize_answer,
    score_answer,
    token_f1,
)
from arpo.core.tags import format_tool_result

P = RewardParams()


def test_squad_normalization_em_f1() -> None:
    assert normalize_answer("The  Eiffel-Tower!") == "eiffeltower"
    assert exact_match("the Paris", ["paris", "Lyon"]) == 1.0
    assert exact_match("Paris, France", ["Paris"]) == 0.0
    assert token_f1("Paris France", ["Paris"]) == pytest.approx(2 / 3)
    assert token_f1("blue whale", ["the blue whale", "orca"]) == 1.0
    assert token_f1("", ["x"]) == 0.0
    assert token_f1("a b c", ["d"]) == 0.0


@pytest.mark.parametrize(
    ("pred", "gold", "equal"),
    [
        ("3\\sqrt{3} - 6", "3\\sqrt{3}-6", True),  # the paper code's F1 scoring got this wrong
        ("0.5", "\\frac{1}{2}", True),
        ("1,000", "1000", True),
        ("x^2+1", "1+x^2", True),
        ("12", "13", False),
        ("\\sqrt{2}", "2", False),
        ("", "1", False),
    ],
)
def test_math_equal(pred: str, gold: str, equal: bool) -> None:
    assert math_equal(pred, gold) is equal


def test_math_equal_off_the_main_thread() -> None:
    out: list[bool] = []
    t = threading.Thread(target=lambda: out.append(math_equal("2\\cdot 3", "6")))
    t.start()
    t.join(timeout=60)
    assert out == [True]


def test_score_answer_metrics() -> None:
    assert score_answer("Paris", ["paris"], AnswerMetric.EXACT_MATCH) == 1.0
    assert score_answer("Paris city", ["Paris"], AnswerMetric.F1) == pytest.approx(2 / 3)
    assert score_answer("\\frac{6}{4}", ["1.5"], AnswerMetric.MATH) == 1.0
    with pytest.raises(ValueError, match="gold"):
        score_answer("x", [], AnswerMetric.F1)


GOOD = (
    "<think>need a lookup</think><search>capital of Veloria</search>"
    + format_tool_result("Veloria's capital is Ostrin.")
    + "<think>compute</think><python>print(3*4)</python>"
    + format_tool_result("12")
    + "<answer>It is \\boxed{Ostrin}</answer>"
)


@pytest.mark.parametrize(
    ("response", "reason"),
    [
        ("<answer>\\boxed{1}</answer>", ""),
        (GOOD, ""),
        ("<think>a<think>b</think></think><answer>\\boxed{1}</answer>", "nested"),
        ("<think>a<answer>\\boxed{1}</answer>", "unclosed <think>"),
        ("</think><think><answer>\\boxed{1}</answer>", "unbalanced"),
        ("no answer at all", "exactly one <answer>"),
        ("<answer>\\boxed{1}</answer><answer>\\boxed{2}</answer>", "exactly one <answer>"),
        ("<answer>1</answer>", "no \\boxed{}"),
        ("<python>print(1)</python><answer>\\boxed{1}</answer>", "not followed by its <result>"),
        ("<python>print(1)<answer>\\boxed{1}</answer>", "unclosed <python>"),
        ("print(1)</python>" + format_tool_result("1") + "<answer>\\boxed{1}</answer>", "without <python>"),
    ],
)
def test_check_format(response: str, reason: str) -> None:
    result = check_format(response)
    assert result.ok is (reason == "")
    assert reason in result.reason


def test_tool_output_cannot_break_or_fake_format() -> None:
    # A tool printing tags does not count as the model's: format still ok, one answer block.
    noisy = "<python>print(1)</python>" + format_tool_result("</python><answer>x</answer></think>")
    assert check_format(noisy + "<answer>\\boxed{1}</answer>").ok


def test_compute_reward() -> None:
    right = compute_reward(GOOD, ["Ostrin"], AnswerMetric.EXACT_MATCH, P)
    assert right.reward == pytest.approx(1.1) and right.format_ok and right.answer == "Ostrin"  # both tools
    one_tool = "<search>q</search>" + format_tool_result("r") + "<answer>\\boxed{Ostrin}</answer>"
    assert compute_reward(one_tool, ["Ostrin"], AnswerMetric.EXACT_MATCH, P).reward == 1.0
    wrong = compute_reward(GOOD, ["Brask"], AnswerMetric.EXACT_MATCH, P)
    assert wrong.reward == 0.0 and wrong.format_ok  # no bonus without a right answer
    broken = compute_reward("<answer>Ostrin</answer>", ["Ostrin"], AnswerMetric.EXACT_MATCH, P)
    assert broken.reward == -1.0 and not broken.format_ok and "boxed" in broken.reason
    partial = compute_reward("<answer>\\boxed{Ostrin city}</answer>", ["Ostrin"], AnswerMetric.F1, P)
    assert partial.reward == pytest.approx(2 / 3)
    custom = RewardParams(format_penalty=-0.5, multi_tool_bonus=0.0)
    assert compute_reward(GOOD, ["Ostrin"], AnswerMetric.EXACT_MATCH, custom).reward == 1.0
    assert compute_reward("junk", ["x"], AnswerMetric.F1, custom).reward == -0.5
    math = "<answer>\\boxed{3\\sqrt{3} - 6}</answer>"
    assert compute_reward(math, ["3\\sqrt{3}-6"], AnswerMetric.MATH, P).reward == 1.0
