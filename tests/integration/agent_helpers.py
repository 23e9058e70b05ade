"""A scripted engine for the agent tests: fixed segments and entropies, chosen by the prefix.

The engine is what is scripted (its outputs decide the tree shape exactly); Redis, the queue, the tree
store, the worker and (in the scenario tests) the tool service are real.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field

from arpo.core import tags
from arpo.core.rewards import AnswerMetric
from arpo.proto.rollout import Completion, FinishReason, GenerateRequest, GenerateResponse
from arpo.proto.tools import ToolCall, ToolResult
from arpo.proto.tree import TreeSeed


class CharTokenizer:
    """One token per character (code point)."""

    vocab_size = 0x110000

    def encode(self, text: str) -> list[int]:
        return [ord(ch) for ch in text]

    def decode(self, token_ids: list[int]) -> str:
        return "".join(chr(t) for t in token_ids)


CALL = "<think>add</think><python>print(2 + 2)</python>"
ANSWER = "<answer>\\boxed{4}</answer>"


@dataclass
class ScriptedGenerator:
    """Round r (r = tool results in the prefix) answers `segments[r]` with entropy `entropies[r]`."""

    segments: Sequence[str] = (CALL, ANSWER)
    entropies: Sequence[float] = (1.0, 2.0)
    delay_s: float = 0.0
    fail_trees: set[str] = field(default_factory=set)
    calls: int = 0

    def choose(self, preferred: str | None) -> str:
        return preferred or "scripted"

    async def generate(
        self, requests: Sequence[GenerateRequest], replica: str | None = None
    ) -> list[GenerateResponse]:
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        self.calls += 1
        out = []
        for req in requests:
            prefix = CharTokenizer().decode(req.prompt_token_ids)
            if any(tree in prefix for tree in self.fail_trees):
                raise RuntimeError("scripted failure")
            r = min(prefix.count(tags.RESULT_OPEN), len(self.segments) - 1)
            text = self.segments[r]
            stop = next((s for s in tags.STOP_STRINGS if text.endswith(s)), None)
            ids = CharTokenizer().encode(text)
            completion = Completion(
                token_ids=ids,
                logprobs=[-0.5] * len(ids),
                entropies=[self.entropies[r]] * len(ids),
                text=text,
                finish_reason=FinishReason.STOP if stop else FinishReason.EOS,
                stop_string=stop,
            )
            out.append(GenerateResponse(completions=[completion], policy_version=0, prompt_tokens=len(ids)))
        return out


def two_plus_two(run_id: str, tree_id: str, m: int, n: int) -> TreeSeed:
    """A tree asking 2 + 2 (the prompt names the tree, so ScriptedGenerator.fail_trees can find it)."""
    prompt = f"Q[{tree_id}]: what is 2 + 2? "
    return TreeSeed(
        run_id=run_id,
        step=0,
        prompt_id=f"p-{tree_id}",
        tree_id=tree_id,
        prompt_token_ids=CharTokenizer().encode(prompt),
        prompt_text=prompt,
        answers=["4"],
        metric=AnswerMetric.MATH,
        budget=m,
        initial=n,
    )


class ScriptedTools:
    """Answers every call with "4" (for the chaos test, where the queue is under test, not the tools)."""

    async def batch(self, calls: Sequence[ToolCall]) -> list[ToolResult]:
        return [ToolResult(ok=True, output="4\n") for _ in calls]
