"""Verifiable rewards of finished trajectories (DESIGN.md §4.4).

reward = `format_penalty` (default -1) if the trajectory's format is broken, else the correctness score
(exact match or token F1 with SQuAD normalization for QA, symbolic equivalence for math), plus
`multi_tool_bonus` (default 0.1) when both tools were used and the score is positive.

Format rules, checked on the model-written text with tool results removed (tool output is not the
model's to format): think tags balanced and not nested; exactly one `<answer>…</answer>` block holding a
`\\boxed{}`; every tool call closed and followed by its `<result>` block.

Math equivalence uses math-verify (sympy underneath): the paper's code scored math with token F1, which
calls `3\\sqrt{3}-6` and `3\\sqrt{3} - 6` different. math-verify's own timeouts rely on SIGALRM, which
only works on the main thread; elsewhere we run it without them and bound the work by input length.
"""

from __future__ import annotations

import logging
import re
import string
import threading
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from arpo.core import tags

MAX_MATH_CHARS = 1000
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = set(string.punctuation)
# Result blocks are matched whole so that closing tool tags printed by a tool are skipped over.
_CALL_END_OR_RESULT = re.compile(
    re.escape(tags.RESULT_OPEN)
    + ".*?"
    + re.escape(tags.RESULT_CLOSE)
    + "|(?P<call_end>"
    + "|".join(re.escape(t) for t in tags.STOP_STRINGS)
    + ")",
    re.DOTALL,
)


class AnswerMetric(StrEnum):
    """How a final answer is scored against the gold answers."""

    EXACT_MATCH = "exact_match"
    F1 = "f1"
    MATH = "math"


@dataclass(frozen=True)
class RewardParams:
    """Reward knobs (a view of `RunConfig.reward`)."""

    format_penalty: float = -1.0
    multi_tool_bonus: float = 0.1


@dataclass(frozen=True)
class FormatCheck:
    ok: bool
    reason: str = ""


@dataclass(frozen=True)
class Reward:
    """A scored trajectory: `reward` is what the learner uses; the rest explains it."""

    reward: float
    format_ok: bool
    reason: str
    score: float
    answer: str | None
    tools_used: frozenset[tags.ToolName]


def normalize_answer(text: str) -> str:
    """SQuAD normalization: lower case, drop punctuation and articles, collapse whitespace."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(prediction: str, golds: Sequence[str]) -> float:
    """1.0 if the normalized prediction equals any normalized gold answer."""
    pred = normalize_answer(prediction)
    return float(any(pred == normalize_answer(g) for g in golds))


def token_f1(prediction: str, golds: Sequence[str]) -> float:
    """Best SQuAD token F1 of the prediction against the gold answers."""
    pred_tokens = normalize_answer(prediction).split()
    best = 0.0
    for gold in golds:
        gold_tokens = normalize_answer(gold).split()
        common = sum((Counter(pred_tokens) & Counter(gold_tokens)).values())
        if common == 0:
            continue
        precision, recall = common / len(pred_tokens), common / len(gold_tokens)
        best = max(best, 2 * precision * recall / (precision + recall))
    return best


def _as_math(text: str) -> str:
    text = text.strip()
    if text.startswith("$") or "\\boxed" in text:
        return text
    return f"${text}$"


def math_equal(prediction: str, gold: str) -> bool:
    """Symbolic equivalence of two answers (`3\\sqrt{3}-6` == `3\\sqrt{3} - 6`, `0.5` == `\\frac{1}{2}`)."""
    if prediction.strip() == gold.strip():
        return True
    if len(prediction) > MAX_MATH_CHARS or len(gold) > MAX_MATH_CHARS:
        return False
    from math_verify import parse, verify  # heavy import, paid only when math is scored

    on_main = threading.current_thread() is threading.main_thread()
    timeout = 5 if on_main else None
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    gold_parsed = parse(_as_math(gold), parsing_timeout=timeout)
    pred_parsed = parse(_as_math(prediction), parsing_timeout=timeout)
    if not gold_parsed or not pred_parsed:
        return False
    return bool(verify(gold_parsed, pred_parsed, timeout_seconds=timeout))


def score_answer(prediction: str, golds: Sequence[str], metric: AnswerMetric) -> float:
    """Correctness in [0, 1] of a final answer under `metric` (best over the gold answers)."""
    if not golds:
        raise ValueError("score_answer needs at least one gold answer")
    match metric:
        case AnswerMetric.EXACT_MATCH:
            return exact_match(prediction, golds)
        case AnswerMetric.F1:
            return token_f1(prediction, golds)
        case AnswerMetric.MATH:
            return float(any(math_equal(prediction, g) for g in golds))


def check_format(response: str) -> FormatCheck:
    """The format rules of the tag protocol, on a trajectory's response (prompt excluded)."""
    own = tags.without_results(response)
    depth = 0
    for match in re.finditer(r"</?think>", own):
        depth += 1 if match.group(0) == tags.THINK_OPEN else -1
        if depth not in (0, 1):
            return FormatCheck(False, "nested or unbalanced <think> tags")
    if depth != 0:
        return FormatCheck(False, "unclosed <think>")
    if own.count(tags.ANSWER_OPEN) != 1 or own.count(tags.ANSWER_CLOSE) != 1:
        return FormatCheck(False, "need exactly one <answer>…</answer> block")
    if tags.extract_answer(own) is None:
        return FormatCheck(False, "no \\boxed{} in the answer block")
    for tool in tags.ToolName:
        opened, closed = own.count(tags.open_tag(tool)), own.count(tags.close_tag(tool))
        if closed > opened:
            return FormatCheck(False, f"{tags.close_tag(tool)} without {tags.open_tag(tool)}")
        if opened != closed:
            return FormatCheck(False, f"unclosed {tags.open_tag(tool)}")
    for m in _CALL_END_OR_RESULT.finditer(response):
        call_end = m.group("call_end")
        if call_end and not response[m.end() :].lstrip().startswith(tags.RESULT_OPEN):
            return FormatCheck(False, f"{call_end} not followed by its <result>")
    return FormatCheck(True)


def compute_reward(response: str, golds: Sequence[str], metric: AnswerMetric, params: RewardParams) -> Reward:
    """The reward of one finished trajectory given its response text and gold answers."""
    used = frozenset(tags.tools_called(response))
    fmt = check_format(response)
    answer = tags.extract_answer(tags.without_results(response))
    if not fmt.ok:
        return Reward(params.format_penalty, False, fmt.reason, 0.0, answer, used)
    assert answer is not None  # check_format guarantees a boxed answer
    score = score_answer(answer, golds, metric)
    bonus = params.multi_tool_bonus if score > 0 and used == frozenset(tags.ToolName) else 0.0
    return Reward(score + bonus, True, "", score, answer, used)
