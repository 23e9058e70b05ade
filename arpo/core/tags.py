"""The text protocol between the model and its tools (DESIGN.md §4.1).

A trajectory is plain text with tags::

    <think>…</think> <python>code</python> <result>\\n{output}\\n</result> … <answer>… \\boxed{X} …</answer>

Generation stops on a closing tool tag (kept in the text). The call's content is the text between the
last opening tag of that tool and the closing tag, so a model that restarts a call mid-way
(`<python>a <python>b</python>`) runs `b`. `<result>` blocks are written by the system only; tool output
that itself contains result tags is neutralized so it cannot forge or close a result block.

This module parses; it does not execute anything.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum


class ToolName(StrEnum):
    """The tools a trajectory can call; the tag name is the tool name."""

    PYTHON = "python"
    SEARCH = "search"


RESULT_OPEN = "<result>"
RESULT_CLOSE = "</result>"
ANSWER_OPEN = "<answer>"
ANSWER_CLOSE = "</answer>"
THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"


def open_tag(tool: ToolName) -> str:
    return f"<{tool.value}>"


def close_tag(tool: ToolName) -> str:
    return f"</{tool.value}>"


STOP_STRINGS: tuple[str, ...] = tuple(close_tag(t) for t in ToolName)
"""Generation stops on these; the stop string stays in the trajectory."""


@dataclass(frozen=True)
class ToolCallText:
    """A well-formed call found at the end of a segment."""

    tool: ToolName
    content: str


@dataclass(frozen=True)
class MalformedCall:
    """A segment that ends with a closing tool tag but holds no usable call; the model sees `error`."""

    tool: ToolName
    error: str


def parse_tool_call(segment: str) -> ToolCallText | MalformedCall | None:
    """Find the tool call a generated segment ends with.

    Returns None when the segment does not end with a closing tool tag (trailing whitespace allowed):
    the model stopped for another reason (end of sequence, length, an answer). Content is stripped of
    surrounding whitespace; empty content or a closing tag with no opening tag is a `MalformedCall`.
    """
    stripped = segment.rstrip()
    for tool in ToolName:
        closing = close_tag(tool)
        if not stripped.endswith(closing):
            continue
        body = stripped[: -len(closing)]
        start = body.rfind(open_tag(tool))
        if start < 0:
            return MalformedCall(tool, f"{closing} without an opening {open_tag(tool)}")
        content = body[start + len(open_tag(tool)) :].strip()
        if not content:
            return MalformedCall(tool, f"empty {tool.value} call")
        return ToolCallText(tool, content)
    return None


_RESULT_TAG = re.compile(r"</?\s*result\s*>", re.IGNORECASE)


def format_tool_result(output: str) -> str:
    """The text appended after a tool call (loss mask 0): ` <result>\\n{output}\\n</result>`.

    Result tags inside the output are defanged (`<result>` -> `&lt;result&gt;`) so tool output cannot
    close its block early or fake a second one.
    """
    safe = _RESULT_TAG.sub(lambda m: m.group(0).replace("<", "&lt;").replace(">", "&gt;"), output)
    return f" {RESULT_OPEN}\n{safe}\n{RESULT_CLOSE}"


def tool_limit_message(max_tool_calls: int) -> str:
    """The result a call beyond the per-trajectory limit receives."""
    return f"Error: tool call limit reached ({max_tool_calls} calls); give your final answer."


def extract_boxed(text: str) -> str | None:
    """Content of the last `\\boxed{...}` in `text` (nested braces matched); None if absent or unclosed."""
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    i = start + len("\\boxed{")
    depth = 1
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i:j].strip()
    return None


def extract_answer(text: str) -> str | None:
    """The final answer of a trajectory: the boxed content of its last `<answer>` block, else None."""
    end = text.rfind(ANSWER_CLOSE)
    if end < 0:
        return None
    start = text.rfind(ANSWER_OPEN, 0, end)
    if start < 0:
        return None
    return extract_boxed(text[start + len(ANSWER_OPEN) : end])


_RESULT_BLOCK = re.compile(re.escape(RESULT_OPEN) + r".*?" + re.escape(RESULT_CLOSE), re.DOTALL)


def without_results(text: str) -> str:
    """The trajectory text with every `<result>` block removed: what the model itself wrote."""
    return _RESULT_BLOCK.sub("", text)


def tools_called(text: str) -> set[ToolName]:
    """Tools with at least one completed call (closing tag) in the model-written part of a trajectory."""
    own = without_results(text)
    return {tool for tool in ToolName if close_tag(tool) in own}
