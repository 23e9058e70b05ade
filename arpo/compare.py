"""ARPO vs GRPO from the same checkpoint (`arpo compare SPEC`): embedded runs, test evaluations, a report.

Each method trains from the spec's model with the same trajectory budget M per prompt (`group_size`):
ARPO as the spec says (N initial rollouts, forks after tool results while the budget lasts), GRPO with
all M trajectories started at the root (no fork budget; with a flat tree the advantages reduce to
GRPO's). Every (method, seed) is one embedded run with validation; its final policy then answers the
test split (one trajectory per question, at the validation's temperature), as does the starting
checkpoint. Written to `out/`:
`results.json` (everything measured), `report.md` (tables), `validation.png` (validation accuracy over
steps, mean and spread over seeds), `entropy.png` (token entropy by position after a tool result vs
elsewhere), and `records/*.jsonl` (every test trajectory).
"""

from __future__ import annotations

import json
import statistics
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from arpo.analysis import delta_h_by_tool, entropy_profile, record_segments
from arpo.builtins import resolve_dataset
from arpo.config import RunConfig
from arpo.core.branching import fork_probability
from arpo.embedded import Embedded, EmbeddedOptions, local_services
from arpo.evaluate import Agent, Record, Summary, eval_config, evaluate
from arpo.plots import entropy_curves, validation_curves
from arpo.proto.runs import RunSpec
from arpo.services.agent.pool import RolloutPool
from arpo.services.learner.data import load_prompts

METHODS = ("arpo", "grpo")


def method_spec(spec: RunSpec, method: str, seed: int) -> RunSpec:
    """`spec` for `method` at `seed`; GRPO starts every trajectory of the budget at the root."""
    config = spec.config.model_copy(update={"seed": seed})
    if method == "grpo":
        branching = config.branching.model_copy(update={"initial_rollouts": config.branching.group_size})
        config = config.model_copy(update={"branching": branching})
    elif method != "arpo":
        raise ValueError(f"method: expected one of {METHODS}, got {method!r}")
    name = f"{spec.name or 'compare'}-{method}-s{seed}"
    return spec.model_copy(update={"config": config, "name": name})


@dataclass
class Outcome:
    """One evaluated policy: the starting checkpoint, or a method's run at a seed."""

    method: str
    seed: int | None
    test: Summary
    by_family: dict[str, Summary]
    run_id: str | None = None
    wall_s: float = 0.0
    generated_tokens: int = 0
    steps: list[dict[str, Any]] = field(default_factory=list)
    validations: list[dict[str, Any]] = field(default_factory=list)
    branch_points: dict[str, dict[str, float | None]] = field(default_factory=dict)
    """Per tool: its results in the test records, mean ΔH there, mean fork probability (`branch_points`)."""


def families(spec: RunSpec, split: str) -> dict[str, str]:
    """prompt id -> `family` field of the dataset's rows (empty when the rows have none)."""
    path = Path(resolve_dataset(spec.dataset.path_or_name))
    path = path / f"{split}.jsonl" if path.is_dir() else path
    out = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        if "family" in row and "id" in row:
            out[str(row["id"])] = str(row["family"])
    return out


async def evaluate_policy(
    spec: RunSpec, weights: Path | None, split: str, questions: int, temperature: float
) -> list[Record]:
    """The policy (`weights` over the spec's model, or the model itself) on `split`'s first `questions`."""
    test = load_prompts(spec.dataset.model_copy(update={"split": split}), spec.config.reward.default_metric)
    async with local_services(spec) as (engine, rollout, tools):
        if weights is not None:
            engine.load(weights)

        def render(question: str) -> list[int]:
            return engine.chat_prompt([{"role": "user", "content": question}])

        agent = Agent(render, RolloutPool({"local": rollout}), tools, engine)
        return await evaluate(test[:questions], agent, eval_config(spec.config, temperature))


def branch_points(records: Sequence[Record], config: RunConfig) -> dict[str, dict[str, float | None]]:
    """Per tool: how many tool results the records hold, the mean ΔH there and the mean probability that
    ARPO's rule (the spec's α, β, mode) forks there: how much the entropy, not α alone, steers the forks.
    The probability is left out (None) under `normalize_entropy`: records do not know the vocabulary."""
    rule, b = config.branch_rule, config.branching
    out: dict[str, dict[str, float | None]] = {}
    for tool, deltas in sorted(delta_h_by_tool(records, b.entropy_window).items()):
        fork = None if b.normalize_entropy else statistics.fmean(fork_probability(d, rule) for d in deltas)
        out[tool] = {"points": len(deltas), "delta_h": statistics.fmean(deltas), "fork_probability": fork}
    return out


def outcome(
    method: str, seed: int | None, records: Sequence[Record], family: dict[str, str], config: RunConfig
) -> Outcome:
    grouped: dict[str, list[Record]] = defaultdict(list)
    for r in records:
        grouped[family.get(r.prompt_id, "all")].append(r)
    by_family = {f: Summary.of(rs) for f, rs in sorted(grouped.items())}
    return Outcome(method, seed, Summary.of(records), by_family, branch_points=branch_points(records, config))


async def compare(
    spec: RunSpec,
    out: Path,
    seeds: Sequence[int],
    test_split: str = "test",
    test_questions: int = 1000,
    log: Callable[[str], None] = print,
    methods: Sequence[str] = METHODS,
) -> list[Outcome]:
    """Train and evaluate every method (of `methods`) at every seed; write the results under `out`."""
    validation = spec.validation
    if validation is None:
        raise ValueError("validation: the spec needs a validation block (the curves are the report's point)")
    family = families(spec, test_split)
    out.mkdir(parents=True, exist_ok=True)
    (out / "records").mkdir(exist_ok=True)
    outcomes: list[Outcome] = []
    profiles: dict[str, Any] = {}

    async def evaluated(label: str, s: RunSpec, weights: Path | None) -> list[Record]:
        started = time.perf_counter()
        records = await evaluate_policy(s, weights, test_split, test_questions, validation.temperature)
        with (out / "records" / f"{label}.jsonl").open("w") as f:
            f.writelines(r.to_json() + "\n" for r in records)
        summary, took = Summary.of(records), time.perf_counter() - started
        log(f"{label}: test accuracy {summary.accuracy:.3f} on {summary.questions} questions ({took:.0f}s)")
        return records

    start_records = await evaluated("start", spec, None)
    outcomes.append(outcome("start", None, start_records, family, spec.config))
    profiles["start"] = entropy_profile(record_segments(start_records))
    for seed in seeds:
        for method in methods:
            s = method_spec(spec, method, seed)
            run = Embedded(s, EmbeddedOptions(directory=out / "runs"))
            started = time.perf_counter()
            steps = await run.run()
            wall = time.perf_counter() - started
            assert run.run_id is not None and run.loop is not None
            version = run.loop.state.policy_version
            weights = out / "runs" / run.run_id / "weights" / f"v{version:06d}"
            records = await evaluated(f"{method}-s{seed}", s, weights)
            result = outcome(method, seed, records, family, spec.config)
            result.run_id, result.wall_s = run.run_id, wall
            result.generated_tokens = sum(m.generated_tokens for m in steps)
            result.steps = [m.model_dump() for m in steps]
            result.validations = [v.model_dump() for v in run.validations]
            outcomes.append(result)
            profiles.setdefault(method, entropy_profile(record_segments(records)))
            _write(out, spec, outcomes, profiles, seeds, test_questions)
    return outcomes


def _fmt(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3f}"


def _mean_std(values: Sequence[float]) -> str:
    if len(values) < 2:
        return _fmt(values[0]) if values else "-"
    return f"{_fmt(statistics.fmean(values))} ± {_fmt(statistics.stdev(values))}"


def _write(
    out: Path,
    spec: RunSpec,
    outcomes: Sequence[Outcome],
    profiles: dict[str, Any],
    seeds: Sequence[int],
    test_questions: int,
) -> None:
    data = {
        "spec": spec.model_dump(mode="json"),
        "seeds": list(seeds),
        "test_questions": test_questions,
        "outcomes": [asdict(o) for o in outcomes],
        "entropy": profiles,
    }
    (out / "results.json").write_text(json.dumps(data, indent=1))
    (out / "report.md").write_text(report_markdown(outcomes, profiles))
    curves = {m: [o.validations for o in outcomes if o.method == m and o.validations] for m in METHODS}
    validation_curves(curves, out / "validation.png")
    entropy_curves(profiles, out / "entropy.png")


COLUMNS: tuple[tuple[str, Callable[[Outcome], float]], ...] = (
    ("test accuracy", lambda o: o.test.accuracy),
    ("reward", lambda o: o.test.reward),
    ("tool calls / question", lambda o: o.test.tool_calls),
    ("tool calls / solved", lambda o: o.test.tool_calls_solved),
    ("tokens / question", lambda o: o.test.tokens),
    ("generated tokens (training)", lambda o: float(o.generated_tokens)),
    ("wall s (training)", lambda o: o.wall_s),
)


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    return [
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *("| " + " | ".join(row) + " |" for row in rows),
    ]


def report_markdown(outcomes: Sequence[Outcome], profiles: dict[str, Any]) -> str:
    """The report's tables: mean ± std over seeds per method, by family, and the entropy profile."""
    by_method: dict[str, list[Outcome]] = defaultdict(list)
    for o in outcomes:
        by_method[o.method].append(o)
    lines = _table(
        ["policy", "runs", *(name for name, _ in COLUMNS)],
        [
            [method, str(len(group)), *(_mean_std([get(o) for o in group]) for _, get in COLUMNS)]
            for method, group in by_method.items()
        ],
    )
    names = sorted({f for o in outcomes for f in o.by_family})
    rows = []
    for method, group in by_method.items():
        cells = [method]
        for f in names:
            acc = [o.by_family[f].accuracy for o in group if f in o.by_family]
            calls = [o.by_family[f].tool_calls for o in group if f in o.by_family]
            cells.append(f"{_mean_std(acc)} ({_mean_std(calls)} calls)")
        rows.append(cells)
    lines += ["", "Test accuracy (tool calls per question) by family:", "", *_table(["policy", *names], rows)]
    rows = []
    for name, profile in profiles.items():
        elsewhere = profile["elsewhere"]
        for tool, values in profile["after"].items():
            spans = [[v for v in values[a:b] if v is not None] for a, b in ((0, 4), (4, 16), (16, 32))]
            cells = [f"{statistics.fmean(s):.3f}" if s else "-" for s in spans]
            rows.append([name, tool, *cells, f"{elsewhere:.3f}" if elsewhere is not None else "-"])
    lines += [
        "",
        "Mean token entropy (nats) after a tool result, by position, vs every other generated token:",
        "",
        *_table(["policy", "after", "0-3", "4-15", "16-31", "elsewhere"], rows),
    ]
    rows = []
    for method, group in by_method.items():
        for tool in sorted({t for o in group for t in o.branch_points}):
            points = [o.branch_points[tool] for o in group if tool in o.branch_points]
            forks = [p["fork_probability"] for p in points if p["fork_probability"] is not None]
            rows.append(
                [
                    method,
                    tool,
                    _mean_std([float(p["points"] or 0) for p in points]),
                    _mean_std([float(p["delta_h"] or 0) for p in points]),
                    _mean_std(forks) if forks else "-",
                ]
            )
    lines += [
        "",
        "What ARPO's branch rule sees at the tool results of the test trajectories: ΔH (nats, the entropy of",
        "the segment after the result minus the trajectory's first segment, over the spec's window) and the",
        "mean probability that the spec's rule forks there:",
        "",
        *_table(["policy", "after", "tool results", "mean ΔH", "fork probability"], rows),
    ]
    return "\n".join(lines) + "\n"
