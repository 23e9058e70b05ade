"""`arpo eval` (a checkpoint on a benchmark, the paper's way) and `arpo analyze entropy` (the paper's
motivating observation on any records or run). Exit codes: 0 done; 2 bad input; 3 a service unreachable."""

from __future__ import annotations

import asyncio
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import httpx
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from arpo.cli_runs import fail
from arpo.config import ConfigError, RunConfig, load_config
from arpo.core.rewards import AnswerMetric
from arpo.services.learner.data import DatasetError

if TYPE_CHECKING:
    from arpo.datasets import EvalSet
    from arpo.harness import EvalOptions

console = Console()
TOOLS = ("python", "search")
analyze_app = typer.Typer(help="Analyses of trajectories: records files or runs.", no_args_is_help=True)


def _tools(text: str) -> set[str]:
    chosen = {t.strip() for t in text.split(",") if t.strip()}
    unknown = chosen - set(TOOLS)
    if unknown:
        raise fail(f"--tools: unknown {', '.join(sorted(unknown))}; choose from {', '.join(TOOLS)}")
    return chosen


def _config(path: Path | None, max_tool_calls: int | None, max_response_tokens: int | None) -> RunConfig:
    try:
        config = load_config(path) if path is not None else RunConfig()
    except ConfigError as err:
        raise fail(f"--config: {err}") from None
    updates: dict[str, Any] = {}
    if max_tool_calls is not None:
        updates["max_tool_calls"] = max_tool_calls
    if max_response_tokens is not None:
        updates["max_response_tokens"] = max_response_tokens
    return config.model_copy(update={"rollout": config.rollout.model_copy(update=updates)})


def summary_table(summary: dict[str, Any]) -> Table:
    table = Table(title=f"{summary['data']} ({summary['layout']}): {summary['model']}")
    table.add_column("measure")
    table.add_column("value", justify="right")
    rows: list[tuple[str, Any]] = [
        ("questions (samples each)", f"{summary['questions']} ({summary['samples']})"),
        ("accuracy (solved share)", summary["accuracy"]),
        *((name, v) for name, v in summary["metrics"].items()),
        *((k, summary[k]) for k in summary if k.startswith("pass@")),
        ("tool calls per question", summary["tool_calls_per_question"]),
        ("tool calls per solved question", summary["tool_calls_per_solved"]),
        *((f"  {tool} calls per question", v) for tool, v in summary["tool_calls_by_tool"].items()),
        ("tool-limit hits", summary["tool_limit_hits"]),
        ("response tokens per question", summary["response_tokens"]),
        ("failed", summary["failed"]),
    ]
    if "judge" in summary:
        rows.append(("judge verdicts", ", ".join(f"{k} {v}" for k, v in summary["judge"].items())))
    for name, value in rows:
        table.add_row(name, f"{value:.4f}" if isinstance(value, float) else str(value))
    return table


def _cell(value: Any) -> str:
    return "–" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)


def group_table(groups: dict[str, Any]) -> Table:
    table = Table(title="by group")
    columns = ["records", "accuracy", "tool_use_rate", "tool_calls_per_question"]
    columns += ["accuracy_with_tools", "accuracy_without_tools"]
    table.add_column("group")
    for column in columns:
        table.add_column(column.replace("_", " "), justify="right")
    for group, row in groups.items():
        table.add_row(group, *(_cell(row[c]) for c in columns))
    return table


def register(app: typer.Typer) -> None:
    app.command("eval")(evaluate_command)
    app.add_typer(analyze_app, name="analyze")


def evaluate_command(
    model: Annotated[
        str, typer.Option(help="Checkpoint: Hugging Face name, local path, or arpo:agent-tiny.")
    ],
    data: Annotated[
        str,
        typer.Option(
            help="JSONL / JSON / parquet file, a dataset folder (its <split>.jsonl), or hf:NAME:SPLIT."
        ),
    ],
    tools: Annotated[
        str, typer.Option(help="Tools executed, comma-separated (others get an error).")
    ] = "python,search",
    layout: Annotated[
        str | None, typer.Option(help="Dataset layout (default: recognised from the fields).")
    ] = None,
    question_field: Annotated[str | None, typer.Option(help="generic layout: the question's field.")] = None,
    answer_field: Annotated[str | None, typer.Option(help="generic layout: the answer's field.")] = None,
    metric: Annotated[AnswerMetric | None, typer.Option(help="Override the layout's metric.")] = None,
    split: Annotated[str, typer.Option(help="Split file of a dataset folder.")] = "test",
    limit: Annotated[int | None, typer.Option(min=1, help="Only the first N questions.")] = None,
    group_by: Annotated[str | None, typer.Option(help="Also report per value of this field.")] = None,
    samples: Annotated[
        int, typer.Option(min=1, help="Samples per question (pass@k needs temperature > 0).")
    ] = 1,
    temperature: Annotated[float, typer.Option(min=0.0, help="0 = greedy.")] = 0.0,
    rollout: Annotated[
        str | None, typer.Option(help="Rollout server URL (default: HF engine in-process).")
    ] = None,
    tools_url: Annotated[str | None, typer.Option(help="Tool service URL (default: in-process).")] = None,
    index: Annotated[str | None, typer.Option(help="BM25 index of the in-process search.")] = None,
    config: Annotated[Path | None, typer.Option(help="RunConfig whose rollout limits apply.")] = None,
    max_tool_calls: Annotated[int | None, typer.Option(min=0, help="Tool calls per question.")] = None,
    max_response_tokens: Annotated[int | None, typer.Option(min=1, help="Response token budget.")] = None,
    concurrency: Annotated[int, typer.Option(min=1, help="Questions answered at once.")] = 16,
    judge_url: Annotated[str | None, typer.Option(help="OpenAI-compatible base URL of an LLM judge.")] = None,
    judge_model: Annotated[str | None, typer.Option(help="The judge's model name.")] = None,
    judge_key_env: Annotated[str, typer.Option(help="Environment variable with the judge's API key.")] = (
        "OPENAI_API_KEY"
    ),
    out: Annotated[
        Path | None, typer.Option(help="Folder for records.jsonl, summary.json (default: evals/<data>).")
    ] = None,
    fresh: Annotated[bool, typer.Option(help="Start over instead of resuming from records.jsonl.")] = False,
    device: Annotated[str, typer.Option(help="torch device of the in-process engine.")] = "cpu",
) -> None:
    """Evaluate a checkpoint: the agent loop (training's, no branching) on a dataset; per-question records,
    metrics, pass@k and tool-call accounting. An interrupted evaluation resumes from its records."""
    from arpo.datasets import load_eval
    from arpo.harness import EvalOptions, Judge

    if samples > 1 and temperature == 0:
        raise fail("--samples > 1 needs --temperature > 0 (greedy samples are identical)")
    if (judge_url is None) != (judge_model is None):
        raise fail("--judge-url and --judge-model go together")
    enabled = _tools(tools)
    run_config = _config(config, max_tool_calls, max_response_tokens)
    try:
        dataset = load_eval(data, layout, question_field, answer_field, metric, limit, split, group_by)
    except DatasetError as err:
        raise fail(f"--data: {err}") from None
    folder = out or Path("evals") / Path(data.split(":")[-1]).stem
    judge = (
        Judge(judge_url, judge_model, os.environ.get(judge_key_env)) if judge_url and judge_model else None
    )
    options = EvalOptions(folder, samples, temperature, enabled, concurrency, judge, fresh)
    source = Source(model, data, rollout, tools_url, index, device)
    _run_and_report(source, dataset, run_config, options)


@dataclass(frozen=True)
class Source:
    """What answers the questions: the checkpoint, where its engine and tools are, and the data's name."""

    model: str
    data: str
    rollout: str | None
    tools_url: str | None
    index: str | None
    device: str


def _run_and_report(source: Source, dataset: EvalSet, run_config: RunConfig, options: EvalOptions) -> None:
    from arpo.harness import load_records, open_agent, run_eval, summarize, write_summary
    from arpo.proto.runs import ModelRef

    folder = options.out
    total = len(dataset.prompts) * options.samples
    done = 0 if options.fresh else len(load_records(folder / "records.jsonl"))
    skipped = f", {dataset.skipped} rows skipped (attachments/images)" if dataset.skipped else ""
    console.print(
        f"{source.data}: {len(dataset.prompts)} questions, layout {dataset.layout}{skipped}; {done} done"
    )

    async def go() -> list[Any]:
        columns = (TextColumn("eval"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        ref = ModelRef(name_or_path=source.model)
        urls = (source.rollout, source.tools_url)
        with Progress(*columns, console=console, transient=True) as bar:
            task = bar.add_task("eval", total=total, completed=min(done, total))
            async with open_agent(ref, run_config, *urls, source.data, source.index, source.device) as agent:
                return await run_eval(
                    dataset.prompts, agent, run_config, options, lambda _: bar.advance(task)
                )

    try:
        records = asyncio.run(go())
    except KeyboardInterrupt:
        kept = len(load_records(folder / "records.jsonl"))
        raise fail(f"interrupted: {kept} records kept in {folder}; the same command resumes", 130) from None
    except (httpx.TransportError, OSError) as err:
        raise fail(f"arpo eval: {err}", 3) from None
    except (ValueError, ConfigError) as err:
        raise fail(f"arpo eval: {err}") from None
    summary = summarize(records, dataset.prompts, options.samples, dataset.groups)
    meta = {
        "model": source.model,
        "data": source.data,
        "layout": dataset.layout,
        "temperature": options.temperature,
        "tools": sorted(options.tools),
    }
    path = write_summary(folder, summary, meta)
    console.print(summary_table(meta | summary))
    if "by_group" in summary:
        console.print(group_table(summary["by_group"]))
    console.print(f"records: {folder / 'records.jsonl'}; summary: {path}")


@analyze_app.command("entropy")
def analyze_entropy(
    source: Annotated[
        str, typer.Argument(help="Records JSONL (arpo eval/compare), trees JSON, or a run id.")
    ],
    out: Annotated[Path | None, typer.Option(help="Folder for entropy.png and entropy.json.")] = None,
    positions: Annotated[int, typer.Option(min=1, max=512, help="Positions after a tool result.")] = 32,
    remote: Annotated[
        str | None,
        typer.Option("--remote", envvar="ARPO_CONTROLLER_URL", help="Read the run through a controller."),
    ] = None,
    token: Annotated[str | None, typer.Option("--token", envvar="ARPO_CONTROLLER_TOKEN")] = None,
) -> None:
    """Token entropy by position after each tool's results vs the rest of the trajectories (the paper's
    observation), as a table and a plot."""
    from arpo.analysis import file_segments, profile_of, summary_line, table_rows, tree_segments
    from arpo.plots import entropy_curves

    path = Path(source)
    try:
        if path.is_file():
            segments = file_segments(path)
            folder = out or path.parent
        else:
            segments = tree_segments(asyncio.run(_run_trees(source, remote, token)))
            folder = out or Path("runs") / source
        profile = profile_of(segments, positions)
    except httpx.TransportError as err:
        raise fail(f"arpo analyze: {err}", 3) from None
    except ValueError as err:
        raise fail(f"arpo analyze: {err}") from None
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "entropy.json").write_text(json.dumps(profile, indent=1) + "\n")
    plot = entropy_curves({path.stem if path.is_file() else source: profile}, folder / "entropy.png")
    table = Table(
        title=f"mean token entropy (nats) by position after a tool result ({len(segments)} segments)"
    )
    table.add_column("position")
    for tool in sorted(profile["after"]):
        table.add_column(f"after {tool} (tokens)", justify="right")
    for row in table_rows(profile):
        table.add_row(*row)
    console.print(table)
    console.print(summary_line(profile))
    console.print(f"plot: {plot}; numbers: {folder / 'entropy.json'}")


async def _run_trees(run_id: str, remote: str | None, token: str | None) -> list[Any]:
    """Every completed tree of a run: through the controller, or from Redis (REDIS_URL or local)."""
    from arpo.proto.tree import Tree

    if remote is not None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with httpx.AsyncClient(base_url=remote.rstrip("/"), headers=headers, timeout=60) as http:
            status = await http.get(f"/v1/runs/{run_id}")
            if status.status_code != 200:
                raise ValueError(f"run {run_id}: controller answered {status.status_code} {status.text}")
            trees = []
            for step in range(int(status.json()["step"]) + 1):
                response = await http.get(f"/v1/runs/{run_id}/trees/{step}")
                trees += (
                    [Tree.model_validate(t) for t in response.json()] if response.status_code == 200 else []
                )
            return trees
    from redis.asyncio import Redis

    from arpo.localredis import connect_or_start
    from arpo.proto import keys
    from arpo.services.agent.store import TreeStore

    try:
        keys.run_spec(run_id)
    except ValueError:
        raise ValueError(f"{run_id}: not a file, and not a run id") from None
    redis = Redis.from_url(connect_or_start().url)
    try:
        trees = await TreeStore(redis, run_id).completed_trees()
    finally:
        await redis.aclose()
    if not trees:
        raise ValueError(f"{run_id}: no such file, and no completed trees of such a run in Redis")
    return trees
