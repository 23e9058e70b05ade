"""`arpo eval`: a checkpoint on a benchmark the way the paper evaluates it.

The agent loop is `arpo.evaluate` (training's state machine and tools, no branching). Around it: the
engine (a rollout server by URL, or the HF engine in this process), the tools (a tool service by URL,
or one in this process; `tools` limits which tags are executed, others get an error result), `samples`
per question (pass@k), every metric that applies to each answer, an optional LLM judge through any
OpenAI-compatible endpoint, per-question records appended to `records.jsonl` as they complete (an
interrupted evaluation resumes from them), and a summary with the tool-call accounting.
"""

from __future__ import annotations

import asyncio
import json
import math
import statistics
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from arpo.config import RunConfig
from arpo.core.rewards import AnswerMetric, exact_match, math_equal, token_f1
from arpo.evaluate import Agent, Record, Summary, eval_config, evaluate
from arpo.proto.runs import ModelRef
from arpo.proto.tools import ToolCall, ToolResult
from arpo.services.agent.pool import RolloutPool
from arpo.services.learner.data import Prompt

RECORDS = "records.jsonl"
JUDGE_PROMPT = """You grade answers. Question: {question}
Gold answer(s): {golds}
Predicted answer: {prediction}
Is the predicted answer correct (the same meaning as a gold answer)?
Reply with one word: correct or incorrect."""


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c are correct (Chen et al., 2021)."""
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def scores(prediction: str | None, golds: Sequence[str], metric: AnswerMetric) -> dict[str, float]:
    """The answer under every metric that applies: math for math sets, exact match and F1 otherwise."""
    if not prediction:
        return {metric.value: 0.0} | ({} if metric is AnswerMetric.MATH else {"exact_match": 0.0, "f1": 0.0})
    if metric is AnswerMetric.MATH:
        return {"math": float(any(math_equal(prediction, g) for g in golds))}
    return {"exact_match": exact_match(prediction, golds), "f1": token_f1(prediction, golds)}


class EnabledTools:
    """The tool service, executing only the enabled tools; other calls get an error result."""

    def __init__(self, inner: Any, enabled: set[str]) -> None:
        self.inner, self.enabled = inner, enabled

    async def batch(self, calls: Sequence[ToolCall]) -> list[ToolResult]:
        allowed = [c for c in calls if c.tool in self.enabled]
        results = iter(await self.inner.batch(allowed) if allowed else [])
        return [next(results) if c.tool in self.enabled else _refused(c.tool) for c in calls]


def _refused(tool: str) -> ToolResult:
    return ToolResult(
        ok=False, output="", error=f"Error: the {tool} tool is not available in this evaluation"
    )


@dataclass(frozen=True)
class Judge:
    """An LLM judge behind an OpenAI-compatible `/chat/completions` endpoint."""

    url: str
    model: str
    api_key: str | None = None
    timeout_s: float = 60.0

    async def verdict(self, http: httpx.AsyncClient, record: Record) -> str:
        """`correct`, `incorrect`, or `unclear: <what it said>`; `error: ...` when the call failed."""
        prompt = JUDGE_PROMPT.format(
            question=record.question, golds=" | ".join(record.answers), prediction=record.answer or "(none)"
        )
        body = {"model": self.model, "messages": [{"role": "user", "content": prompt}], "temperature": 0.0}
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        try:
            response = await http.post(
                f"{self.url.rstrip('/')}/chat/completions", json=body, headers=headers, timeout=self.timeout_s
            )
            response.raise_for_status()
            text = str(response.json()["choices"][0]["message"]["content"]).strip().lower()
        except (httpx.HTTPError, KeyError, IndexError, ValueError) as err:
            return f"error: {type(err).__name__}: {err}"[:300]
        return parse_verdict(text)


def parse_verdict(text: str) -> str:
    """`correct` / `incorrect` from a judge's reply (its first word, else a phrase), else `unclear: ...`."""
    text = text.strip().lower()
    words = text.split()
    first = words[0].strip(".,!:;*\"'") if words else ""
    if first in ("correct", "incorrect"):
        return first
    if "incorrect" in text or "not correct" in text:
        return "incorrect"
    if "correct" in text:
        return "correct"
    return f"unclear: {text[:200]}"


@dataclass
class EvalOptions:
    out: Path
    samples: int = 1
    temperature: float = 0.0
    tools: set[str] = field(default_factory=lambda: {"python", "search"})
    concurrency: int = 16
    judge: Judge | None = None
    fresh: bool = False
    """Start over instead of resuming from `out/records.jsonl`."""


def solved(record: Record, metric: AnswerMetric) -> bool:
    """Judged correct when a judge ran; else a full score under the set's metric."""
    if record.judge is not None and not record.judge.startswith("error"):
        return record.judge == "correct"
    return record.scores.get(metric.value, record.score) >= 1.0


def read_records(path: Path) -> list[Record]:
    """Every record of an evaluation's JSONL, in file order (a torn last line is dropped)."""
    out = []
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                out.append(Record.from_json(line))
            except (ValueError, TypeError):
                continue
    return out


def load_records(path: Path) -> dict[str, Record]:
    """Completed records of an interrupted evaluation, by question and sample (failed ones are redone)."""
    return {r.key: r for r in read_records(path) if r.error is None}


async def run_eval(
    prompts: Sequence[Prompt],
    agent: Agent,
    config: RunConfig,
    options: EvalOptions,
    progress: Callable[[Record], None] | None = None,
) -> list[Record]:
    """Every prompt `options.samples` times; records appended to `out/records.jsonl` as they complete.
    Failed questions are recorded with their error and retried on the next resume."""
    options.out.mkdir(parents=True, exist_ok=True)
    path = options.out / RECORDS
    if options.fresh:
        path.unlink(missing_ok=True)
    done = load_records(path)
    if done:  # rewrite without failed or torn lines, so the file holds each question once
        path.write_text("".join(r.to_json() + "\n" for r in done.values()))
    todo = [(p, s) for p in prompts for s in range(options.samples) if f"{p.prompt_id}/{s}" not in done]
    metric = {p.prompt_id: p.metric for p in prompts}
    agent = Agent(agent.render, agent.generator, EnabledTools(agent.tools, options.tools), agent.tokenizer)
    sampled = eval_config(config, options.temperature)
    judging = asyncio.Semaphore(options.concurrency)
    async with httpx.AsyncClient() as http:
        pending: list[asyncio.Task[None]] = []

        with path.open("a", encoding="utf-8") as out:

            async def finish(record: Record) -> None:
                record.scores = scores(record.answer, record.answers, metric[record.prompt_id])
                if options.judge is not None and record.error is None:
                    async with judging:
                        record.judge = await options.judge.verdict(http, record)
                out.write(record.to_json() + "\n")
                out.flush()
                if progress is not None:
                    progress(record)

            def on_record(record: Record) -> None:
                pending.append(asyncio.create_task(finish(record)))

            await evaluate(
                [p for p, _ in todo],
                agent,
                sampled,
                concurrency=options.concurrency,
                samples=[s for _, s in todo],
                on_record=on_record,
            )
            await asyncio.gather(*pending)
    every = read_records(path)
    completed = {r.key: r for r in every if r.error is None}
    failed = [r for r in every if r.error is not None and r.key not in completed]
    return [*completed.values(), *failed]


def by_group(records: Sequence[Record], prompts: Sequence[Prompt], groups: dict[str, str]) -> dict[str, Any]:
    """Per group (a dataset field's value): accuracy, how often a tool was used, and accuracy with and
    without tools, which says whether a tool pays off when chosen and how often it is chosen."""
    metric = {p.prompt_id: p.metric for p in prompts}
    grouped: dict[str, list[Record]] = defaultdict(list)
    for r in records:
        if r.error is None:
            grouped[groups.get(r.prompt_id, "(none)")].append(r)
    out = {}
    for group, rs in sorted(grouped.items()):
        used = [r for r in rs if r.calls]
        unused = [r for r in rs if not r.calls]

        def rate(xs: Sequence[Record]) -> float | None:
            return sum(solved(r, metric[r.prompt_id]) for r in xs) / len(xs) if xs else None

        out[group] = {
            "records": len(rs),
            "accuracy": rate(rs),
            "tool_use_rate": len(used) / len(rs),
            "tool_calls_per_question": sum(r.calls for r in rs) / len(rs),
            "accuracy_with_tools": rate(used),
            "accuracy_without_tools": rate(unused),
        }
    return out


def summarize(
    records: Sequence[Record], prompts: Sequence[Prompt], samples: int, groups: dict[str, str] | None = None
) -> dict[str, Any]:
    """The paper's numbers: accuracy under each metric, pass@k, and the tool-call accounting (per group
    too, when `groups` maps prompt ids to groups)."""
    metric = {p.prompt_id: p.metric for p in prompts}
    ok = [r for r in records if r.error is None]
    by_question: dict[str, list[Record]] = defaultdict(list)
    for r in ok:
        by_question[r.prompt_id].append(r)
    base = Summary.of(ok, lambda r: solved(r, metric[r.prompt_id]))
    calls = Counter[str]()
    for r in ok:
        calls.update(r.tool_calls)
    n = max(1, len(ok))
    out: dict[str, Any] = {
        "questions": len(prompts),
        "samples": samples,
        "records": len(ok),
        "failed": len(records) - len(ok),
        "accuracy": sum(solved(r, metric[r.prompt_id]) for r in ok) / n,
        "metrics": {
            name: statistics.fmean(r.scores[name] for r in ok if name in r.scores)
            for name in sorted({k for r in ok for k in r.scores})
        },
        "tool_calls_per_question": base.tool_calls,
        "tool_calls_per_solved": base.tool_calls_solved,
        "tool_calls_by_tool": {tool: count / n for tool, count in sorted(calls.items())},
        "tool_limit_hits": sum(r.tool_limit_hits for r in ok),
        "response_tokens": base.tokens,
        "format_ok": base.format_ok,
    }
    if any(r.judge is not None for r in ok):
        out["judge"] = dict(Counter((r.judge or "").split(":")[0] for r in ok))
    for k in sorted({1, samples}):
        values = [
            pass_at_k(len(rs), sum(solved(r, metric[r.prompt_id]) for r in rs), k)
            for rs in by_question.values()
            if len(rs) >= k
        ]
        out[f"pass@{k}"] = statistics.fmean(values) if values else 0.0
    if groups:
        out["by_group"] = by_group(records, prompts, groups)
    return out


def write_summary(out: Path, summary: dict[str, Any], meta: dict[str, Any]) -> Path:
    path = out / "summary.json"
    path.write_text(json.dumps(meta | summary, indent=2) + "\n")
    return path


@asynccontextmanager
async def open_agent(
    model: ModelRef,
    config: RunConfig,
    rollout_url: str | None = None,
    tools_url: str | None = None,
    dataset: str = "",
    index: str | None = None,
    device: str = "cpu",
) -> AsyncIterator[Agent]:
    """The agent: a rollout server by URL or the HF engine in this process; a tool service by URL or one
    in this process searching `index` (default: the built-in index of a built-in dataset, else
    `arpo:facts`; isolation `auto` unless ARPO_TOOLS_ISOLATION says otherwise)."""
    from arpo.embedded import rollout_service, tool_service, tools_settings

    settings = tools_settings(dataset, index)
    timeout = config.rollout.tool_timeout_s + 30
    async with (
        rollout_service(model, rollout_url, device) as (rollout, tokens),
        tool_service(settings, timeout, tools_url) as tools,
    ):

        def render(question: str) -> list[int]:
            return tokens.chat_prompt([{"role": "user", "content": question}])

        yield Agent(render, RolloutPool({"eval": rollout}), tools, tokens)
