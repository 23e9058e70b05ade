"""Evaluation: the training agent loop on a list of questions, one trajectory each, no branching.

Every question runs through `arpo.services.agent.trajectory` (the same state machine, tool service and
reward as training) with a tree budget of one, so nothing forks; the nodes live in memory
(`MemoryTrees`), not in Redis, because nothing else needs to see them. Sampling is greedy unless a
temperature is given. A question whose trajectory fails (engine or tool service down) is recorded as
failed with the reason; the others go on.

`Record` keeps what the report and the entropy analysis need: the answer and its score, tool calls by
tool, tokens generated, and each segment's per-token entropies with the tool whose result it follows.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

from arpo.config import RunConfig
from arpo.core import tags
from arpo.proto.runs import ValidationMetrics, ValidationSpec
from arpo.proto.tree import BranchKind, BranchRequest, Trajectory, TreeNode
from arpo.services.agent import trajectory
from arpo.services.agent.store import root_node
from arpo.services.learner.data import Prompt


@dataclass
class Segment:
    """What the model wrote between two tool results, with the tool whose result it follows."""

    after: str | None
    """None for the first segment; else the tool (python, search) whose result precedes it."""
    entropies: list[float]


@dataclass
class Record:
    prompt_id: str
    question: str
    answers: list[str]
    response: str = ""
    answer: str | None = None
    score: float = 0.0
    reward: float = 0.0
    format_ok: bool = False
    tool_calls: dict[str, int] = field(default_factory=dict)
    tokens: int = 0
    segments: list[Segment] = field(default_factory=list)
    error: str | None = None
    sample: int = 0
    """Which of a question's samples (pass@k) this is."""
    tool_limit_hits: int = 0
    """Calls refused because the trajectory had used its `max_tool_calls`."""
    scores: dict[str, float] = field(default_factory=dict)
    """The answer under every metric that applies (exact_match, f1, math), besides `score`."""
    judge: str | None = None
    """An LLM judge's verdict (correct / incorrect / what it said when it said neither)."""

    @property
    def calls(self) -> int:
        return sum(self.tool_calls.values())

    @property
    def key(self) -> str:
        return f"{self.prompt_id}/{self.sample}"

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @staticmethod
    def from_json(line: str) -> Record:
        data = json.loads(line)
        data["segments"] = [Segment(**seg) for seg in data.get("segments", [])]
        return Record(**data)


@dataclass(frozen=True)
class Summary:
    questions: int
    accuracy: float
    """Share of questions scored 1 (exact match) — or the mean score for F1."""
    reward: float
    format_ok: float
    tool_calls: float
    """Tool calls per question."""
    tool_calls_solved: float
    """Tool calls per solved question (0 when none is solved)."""
    tokens: float
    """Response tokens per question (tool results excluded)."""
    failed: int

    @staticmethod
    def of(records: Sequence[Record], is_solved: Callable[[Record], bool] | None = None) -> Summary:
        """`is_solved` decides which questions count as solved (default: a full score)."""
        solved = [r for r in records if (is_solved(r) if is_solved else r.score >= 1.0)]
        n = max(1, len(records))
        return Summary(
            questions=len(records),
            accuracy=sum(r.score for r in records) / n,
            reward=sum(r.reward for r in records) / n,
            format_ok=sum(r.format_ok for r in records) / n,
            tool_calls=sum(r.calls for r in records) / n,
            tool_calls_solved=statistics.fmean(r.calls for r in solved) if solved else 0.0,
            tokens=sum(r.tokens for r in records) / n,
            failed=sum(r.error is not None for r in records),
        )


class MemoryTrees:
    """The tree store of `trajectory`, in memory, for trees that never fork and are read by nobody else."""

    def __init__(self) -> None:
        self._nodes: dict[str, dict[str, TreeNode]] = {}
        self._meta: dict[str, dict[str, str]] = {}
        self.leaves: dict[str, Trajectory] = {}

    def add(self, tree_id: str, root: TreeNode, prompt: Prompt) -> None:
        self._nodes[tree_id] = {root.node_id: root}
        self._meta[tree_id] = {"answers": json.dumps(prompt.answers), "metric": prompt.metric.value}

    async def nodes(self, step: int, tree_id: str) -> dict[str, TreeNode]:
        return dict(self._nodes[tree_id])

    async def meta(self, step: int, tree_id: str) -> dict[str, str]:
        return self._meta[tree_id]

    async def write_node(self, step: int, tree_id: str, node: TreeNode) -> bool:
        return self._nodes[tree_id].setdefault(node.node_id, node) is node

    async def admit(self, request: BranchRequest, decided_at: str, forks: Sequence[BranchRequest]) -> int:
        return 0  # a budget of one trajectory: nothing forks

    async def add_times(self, request: BranchRequest, generate_s: float, tool_s: float) -> None:
        return None

    async def finish(self, request: BranchRequest, leaf: Trajectory | None) -> None:
        if leaf is not None:
            self.leaves[request.tree_id] = leaf

    def path(self, tree_id: str) -> list[TreeNode]:
        nodes = self._nodes[tree_id]
        return [nodes[n] for n in self.leaves[tree_id].node_ids]


def eval_config(config: RunConfig, temperature: float) -> RunConfig:
    """The run's rollout limits, sampled at `temperature` (0 = greedy)."""
    return config.model_copy(
        update={"rollout": config.rollout.model_copy(update={"temperature": temperature})}
    )


@dataclass(frozen=True)
class Agent:
    """What answers questions: the prompt renderer, the rollout servers, the tool service, the tokenizer."""

    render: Callable[[str], list[int]]
    generator: trajectory.Generator
    tools: trajectory.Tools
    tokenizer: trajectory.Tokenizer


async def evaluate(
    prompts: Sequence[Prompt],
    agent: Agent,
    config: RunConfig,
    concurrency: int = 64,
    label: str = "eval",
    samples: Sequence[int] | None = None,
    on_record: Callable[[Record], None] | None = None,
) -> list[Record]:
    """One trajectory per prompt (in the order given), at most `concurrency` at a time; `samples[i]` numbers
    prompt i's sample (pass@k repeats a prompt); `on_record` sees each record as it completes. `config` is
    used as is: pass `eval_config(config, 0.0)` for greedy decoding."""
    trees = MemoryTrees()
    ctx = trajectory.Context(trees, agent.generator, agent.tools, agent.tokenizer, config)  # type: ignore[arg-type]
    gate = asyncio.Semaphore(concurrency)

    async def one(i: int, prompt: Prompt) -> Record:
        tree_id = f"{label}-{i}"
        record = Record(
            prompt.prompt_id, prompt.question, prompt.answers, sample=samples[i] if samples else 0
        )
        root = root_node(tree_id, agent.render(prompt.question), prompt.question)
        trees.add(tree_id, root, prompt)
        request = BranchRequest(
            run_id=label,
            step=0,
            prompt_id=prompt.prompt_id,
            tree_id=tree_id,
            parent_node_id=root.node_id,
            kind=BranchKind.ROOT,
            policy_version=0,
            request_id=f"{tree_id}.r0",
        )
        async with gate:
            try:
                await trajectory.run(ctx, request)
            except Exception as err:  # recorded, and the evaluation goes on
                record.error = f"{type(err).__name__}: {err}"
        if record.error is None:
            _fill(record, trees.leaves[tree_id], trees.path(tree_id))
        if on_record is not None:
            on_record(record)
        return record

    return list(await asyncio.gather(*(one(i, p) for i, p in enumerate(prompts))))


def _fill(record: Record, leaf: Trajectory, path: list[TreeNode]) -> None:
    record.response = "".join(node.text for node in path[1:])
    record.answer, record.score, record.reward = leaf.answer, leaf.score or 0.0, leaf.reward or 0.0
    record.format_ok = bool(leaf.format_ok)
    record.tool_calls = dict(Counter(n.tool_call.tool for n in path if n.tool_call is not None))
    record.tokens = sum(sum(n.loss_mask) for n in path[1:])
    limit = tags.tool_limit_message(0).split("(")[0]
    record.tool_limit_hits = sum(
        1 for n in path if n.tool_result is not None and (n.tool_result.error or "").startswith(limit)
    )
    after: str | None = None
    for node in path[1:]:
        written = sum(node.loss_mask)
        record.segments.append(Segment(after, node.entropies[:written]))
        after = node.tool_call.tool if node.tool_call is not None else None


class Validator:
    """A run's periodic validation (`RunSpec.validation`): its held-out prompts answered by the policy the
    rollout servers serve now."""

    def __init__(
        self, spec: ValidationSpec, prompts: Sequence[Prompt], agent: Agent, config: RunConfig
    ) -> None:
        self.spec, self.prompts, self.agent = spec, list(prompts)[: spec.questions], agent
        self.config = eval_config(config, spec.temperature)

    def due(self, step: int, last_step: int) -> bool:
        return step % self.spec.every_steps == 0 or step == last_step

    async def __call__(self, step: int, policy_version: int) -> ValidationMetrics:
        started = time.perf_counter()
        records = await evaluate(self.prompts, self.agent, self.config, label=f"validation-{policy_version}")
        s = Summary.of(records)
        return ValidationMetrics(
            step=step,
            policy_version=policy_version,
            questions=s.questions,
            accuracy=s.accuracy,
            reward_mean=s.reward,
            format_ok_rate=s.format_ok,
            tool_calls_per_question=s.tool_calls,
            tool_calls_per_solved=s.tool_calls_solved,
            response_tokens_mean=s.tokens,
            failed=s.failed,
            time_s=time.perf_counter() - started,
        )
