"""One trajectory of a tree, as a state machine: generate -> tool -> generate ... -> finish (§4.1, §4.3).

A `BranchRequest` continues the tree after its parent node. Each round generates a segment (stopping on
a closing tool tag), measures its entropy, and, when the segment follows a tool result, decides whether
to fork there (ARPO's rule from `arpo.core.branching`; the budget in Redis grants or refuses). A tool
call is answered by the tool service (errors and timeouts are results the model sees; a call beyond
`max_tool_calls` gets the limit message, or ends the trajectory). A segment without a tool call, or the
response budget running out, makes a leaf: its reward is computed there, once, and the leaf is counted.

Every node is written once under an id derived from the request (`<request>.n<round>`); a redelivered
request resumes after the nodes already written. Sampling is seeded from the run's seed and the node
id, so the resumed segment is the one the lost delivery would have produced (at the same policy
version), a run repeats with its seed, and runs with different seeds sample independently.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

from arpo.config import RunConfig, ToolLimitBehavior
from arpo.core import tags
from arpo.core.branching import should_branch
from arpo.core.entropy import segment_entropy
from arpo.core.rewards import AnswerMetric, compute_reward
from arpo.proto.rollout import Completion, FinishReason, GenerateRequest, GenerateResponse, SamplingParams
from arpo.proto.tools import ToolCall, ToolResult
from arpo.proto.tree import BranchKind, BranchRequest, Trajectory, TreeNode
from arpo.services.agent.store import TreeStore


class Generator(Protocol):
    """What generates segments: a pool of rollout servers (`RolloutPool`), or a scripted engine in tests."""

    def choose(self, preferred: str | None) -> str:
        """The replica to use: `preferred` (the parent's) while it is healthy."""
        ...

    async def generate(
        self, requests: Sequence[GenerateRequest], replica: str | None = None
    ) -> list[GenerateResponse]: ...


class Tools(Protocol):
    """What answers tool calls: the tool service's client."""

    async def batch(self, calls: Sequence[ToolCall]) -> list[ToolResult]: ...


class Tokenizer(Protocol):
    def encode(self, text: str) -> list[int]: ...

    def decode(self, token_ids: list[int]) -> str: ...

    @property
    def vocab_size(self) -> int:
        """V of `branching.normalize_entropy` (segment entropies divided by ln V)."""
        ...


class LostClaimError(RuntimeError):
    """Another delivery of the same request wrote first: this one stops without acknowledging."""


class Phase(StrEnum):
    GENERATE = "generate"
    TOOL = "tool"
    FINISH = "finish"
    DONE = "done"


@dataclass
class Context:
    """What a worker gives every trajectory."""

    store: TreeStore
    generator: Generator
    tools: Tools
    tokenizer: Tokenizer
    config: RunConfig


@dataclass
class State:
    """A trajectory in flight."""

    request: BranchRequest
    path: list[TreeNode]
    h0: float | None
    streak: int
    round: int = 0
    segment: Completion | None = None
    call: tags.ToolCallText | tags.MalformedCall | None = None
    forked: int = 0
    hbar: float | None = None
    delta_h: float | None = None
    answers: list[str] = field(default_factory=list)
    metric: AnswerMetric = AnswerMetric.F1
    replica: str | None = None
    generate_s: float = 0.0
    tool_s: float = 0.0

    @property
    def prefix(self) -> list[int]:
        return [t for node in self.path for t in node.token_ids]

    @property
    def response_tokens(self) -> int:
        return sum(len(node.token_ids) for node in self.path[1:])

    @property
    def tool_calls(self) -> int:
        return sum(node.tool_call is not None for node in self.path)

    def node_id(self) -> str:
        return f"{self.request.request_id}.n{self.round}"


def _seed(run_seed: int, node_id: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{run_seed}:{node_id}".encode()).digest()[:4], "big") & 0x7FFFFFFF


async def start(ctx: Context, request: BranchRequest) -> State:
    """The trajectory's state: the tree path to its parent, plus what an earlier delivery wrote."""
    nodes = await ctx.store.nodes(request.step, request.tree_id)
    meta = await ctx.store.meta(request.step, request.tree_id)
    path: list[TreeNode] = []
    cursor: str | None = request.parent_node_id
    while cursor is not None:
        path.append(nodes[cursor])
        cursor = nodes[cursor].parent_id
    path.reverse()
    state = State(request, path, request.h0, request.consecutive_branches)
    state.answers, state.metric = json.loads(meta["answers"]), AnswerMetric(meta["metric"])
    while (resumed := nodes.get(state.node_id())) is not None:
        state.path.append(resumed)
        state.h0 = state.h0 if state.h0 is not None else resumed.segment_entropy
        state.streak = (
            state.streak + 1 if resumed.forked else (0 if resumed.delta_h is not None else state.streak)
        )
        state.round += 1
    return state


def first_phase(state: State) -> Phase:
    last = state.path[-1]
    if (
        len(state.path) > 1
        and last.node_id.startswith(state.request.request_id + ".n")
        and last.tool_call is None
    ):
        return Phase.FINISH  # an earlier delivery wrote the leaf
    return Phase.GENERATE


async def run(ctx: Context, request: BranchRequest) -> None:
    """Drive one trajectory to its leaf: one handler per phase."""
    state = await start(ctx, request)
    phase = first_phase(state)
    while phase is not Phase.DONE:
        match phase:
            case Phase.GENERATE:
                phase = await generate(ctx, state)
            case Phase.TOOL:
                phase = await call_tool(ctx, state)
            case Phase.FINISH:
                phase = await finish(ctx, state)


async def generate(ctx: Context, state: State) -> Phase:
    rollout = ctx.config.rollout
    room = rollout.max_response_tokens - state.response_tokens
    if room <= 0:
        return Phase.FINISH
    sampling = SamplingParams(
        max_tokens=room,
        temperature=rollout.temperature,
        top_p=rollout.top_p,
        top_k=rollout.top_k,
        stop=list(tags.STOP_STRINGS),
        seed=_seed(ctx.config.seed, state.node_id()),
    )
    state.replica = ctx.generator.choose(state.request.rollout_replica)
    request = GenerateRequest(prompt_token_ids=state.prefix, sampling=sampling)
    started = time.perf_counter()
    (response,) = await ctx.generator.generate([request], state.replica)
    state.generate_s += time.perf_counter() - started
    segment = response.completions[0]
    state.segment = segment
    branching = ctx.config.branching
    vocab = ctx.tokenizer.vocab_size if branching.normalize_entropy else None
    state.hbar = (
        segment_entropy(segment.entropies, branching.entropy_window, vocab) if segment.entropies else 0.0
    )
    state.forked, state.delta_h = 0, None
    if state.h0 is None:
        state.h0 = state.hbar
    elif state.path[-1].tool_result is not None:  # the segment follows a tool result: fork here?
        await decide_fork(ctx, state)
    state.call = tags.parse_tool_call(segment.text) if segment.finish_reason is FinishReason.STOP else None
    if state.call is None:
        await write(ctx, state, [], None, None)
        return Phase.FINISH
    return Phase.TOOL


async def decide_fork(ctx: Context, state: State) -> None:
    assert state.hbar is not None and state.h0 is not None
    state.delta_h = state.hbar - state.h0
    draw = random.Random(state.node_id()).random()
    if not should_branch(state.delta_h, ctx.config.branch_rule, draw, state.streak):
        state.streak = 0
        return
    parent = state.path[-1].node_id
    forks = [
        state.request.model_copy(
            update={
                "parent_node_id": parent,
                "kind": BranchKind.FORK,
                "h0": state.h0,
                "consecutive_branches": state.streak + 1,
                "attempt": 0,
                "request_id": f"{state.node_id()}.f{j}",
                "rollout_replica": state.replica,
            }
        )
        for j in range(ctx.config.branching.fork_width)
    ]
    state.forked = await ctx.store.admit(state.request, state.node_id(), forks)
    state.streak = state.streak + 1 if state.forked else 0


async def call_tool(ctx: Context, state: State) -> Phase:
    rollout, call = ctx.config.rollout, state.call
    assert call is not None
    if state.tool_calls >= rollout.max_tool_calls and rollout.tool_limit is ToolLimitBehavior.END:
        await write(ctx, state, [], None, None)
        return Phase.FINISH
    content = call.content if isinstance(call, tags.ToolCallText) else ""
    tool_call = ToolCall(tool=call.tool, content=content, timeout_s=rollout.tool_timeout_s)
    if isinstance(call, tags.MalformedCall):
        result = ToolResult(ok=False, output="", error=call.error)
    elif state.tool_calls >= rollout.max_tool_calls:
        result = ToolResult(ok=False, output="", error=tags.tool_limit_message(rollout.max_tool_calls))
    else:
        started = time.perf_counter()
        (result,) = await ctx.tools.batch([tool_call])
        state.tool_s += time.perf_counter() - started
    result_text = tags.format_tool_result(shown_to_model(result))
    await write(ctx, state, ctx.tokenizer.encode(result_text), tool_call, result, result_text)
    return Phase.GENERATE


def shown_to_model(result: ToolResult) -> str:
    """The result text: the output (trailing whitespace dropped), and the error unless the output already
    ends with it (a traceback)."""
    output = result.output.rstrip()
    if result.ok or result.error is None or output.endswith(result.error):
        return output
    error = result.error if result.error.startswith("Error:") else f"Error: {result.error}"
    return f"{output}\n{error}" if output else error


async def write(
    ctx: Context,
    state: State,
    result_tokens: list[int],
    call: ToolCall | None,
    result: ToolResult | None,
    result_text: str = "",
) -> None:
    """Write the round's node (the segment, plus the tool result if any) and step past it."""
    segment = state.segment
    assert segment is not None
    zeros = [0.0] * len(result_tokens)
    node = TreeNode(
        node_id=state.node_id(),
        parent_id=state.path[-1].node_id,
        token_ids=segment.token_ids + result_tokens,
        loss_mask=[1] * len(segment.token_ids) + [0] * len(result_tokens),
        logprobs=segment.logprobs + zeros,
        entropies=segment.entropies + zeros,
        text=segment.text + result_text,
        policy_version=state.request.policy_version,
        tool_call=call,
        tool_result=result,
        finish_reason=segment.finish_reason,
        segment_entropy=state.hbar,
        delta_h=state.delta_h,
        forked=state.forked,
    )
    if not await ctx.store.write_node(state.request.step, state.request.tree_id, node):
        raise LostClaimError(f"node {node.node_id} was written by another delivery")
    state.path.append(node)
    state.round += 1


async def finish(ctx: Context, state: State) -> Phase:
    """Score the leaf and count it (once, whoever gets here first)."""
    response = "".join(node.text for node in state.path[1:])
    reward = compute_reward(response, state.answers, state.metric, ctx.config.reward_params)
    leaf = state.path[-1]
    trajectory = Trajectory(
        leaf_node_id=leaf.node_id,
        node_ids=[n.node_id for n in state.path],
        tool_calls=state.tool_calls,
        reward=reward.reward,
        score=reward.score,
        format_ok=reward.format_ok,
        answer=reward.answer,
    )
    await ctx.store.add_times(state.request, state.generate_s, state.tool_s)
    await ctx.store.finish(state.request, trajectory)
    return Phase.DONE
