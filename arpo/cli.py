"""The `arpo` command: runs, services, configs, schemas, benchmarks, evaluation and analysis."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
import yaml
from rich.console import Console
from rich.table import Table

from arpo import sft as sft_defaults
from arpo.cli_eval import register as register_eval_commands
from arpo.cli_runs import Overrides
from arpo.cli_runs import register as register_run_commands
from arpo.config import ConfigError, RunConfig, load_config

if TYPE_CHECKING:
    from arpo.demo import DemoResult

app = typer.Typer(
    help="ARPO: train tool-using LLM agents with entropy-based adaptive rollout.",
    no_args_is_help=True,
    add_completion=False,
)
schema_app = typer.Typer(
    help="The contract's JSON Schemas (the top-level proto/ folder).", no_args_is_help=True
)
config_app = typer.Typer(help="Validate and show run configs.", no_args_is_help=True)
index_app = typer.Typer(help="Search indexes for the local search backend.", no_args_is_help=True)
app.add_typer(schema_app, name="schema")
app.add_typer(config_app, name="config")
app.add_typer(index_app, name="index")
console = Console()
errors = Console(stderr=True)


def _load(path: Path | None) -> RunConfig:
    if path is None:
        return RunConfig()
    try:
        return load_config(path)
    except ConfigError as err:
        errors.print(f"[red]invalid config[/red]\n{err}", highlight=False)
        raise typer.Exit(2) from None


@schema_app.command("export")
def schema_export(
    directory: Annotated[Path, typer.Argument(help="Folder to write *.schema.json into.")],
) -> None:
    """Write a JSON Schema for every message and each service's OpenAPI document (removing stale ones)."""
    from arpo.proto.schema import export_schemas
    from arpo.services.openapi import openapi_documents

    paths = export_schemas(directory, openapi_documents())
    console.print(f"wrote {len(paths)} documents to {directory}")


@config_app.command("check")
def config_check(path: Annotated[Path, typer.Argument(help="YAML or JSON RunConfig.")]) -> None:
    """Validate a config file; exit 2 naming every bad field."""
    cfg = _load(path)
    mode = "GRPO (no branching)" if cfg.branching.is_grpo else "ARPO"
    console.print(f"{path}: ok ({mode}, M={cfg.branching.group_size}, N={cfg.branching.initial_rollouts})")


@config_app.command("show")
def config_show(
    path: Annotated[Path | None, typer.Argument(help="Config file; omitted: the defaults.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON instead of YAML.")] = False,
) -> None:
    """Print the effective config, every default filled in."""
    data = _load(path).model_dump(mode="json")
    typer.echo(json.dumps(data, indent=2) if as_json else yaml.safe_dump(data, sort_keys=False))


@app.command()
def demo(
    config: Annotated[
        Path | None, typer.Option(help="RunConfig file (default: a small demo budget, M=8, N=4).")
    ] = None,
    prompts: Annotated[int, typer.Option(min=1, max=64, help="Prompts (trees) to roll out.")] = 6,
    segment_tokens: Annotated[int, typer.Option(min=1, max=64, help="Tokens per segment.")] = 8,
    lr: Annotated[float, typer.Option(min=0.0, help="Learning rate of the demo's single update.")] = 3e-3,
) -> None:
    """ARPO's forking and one update on a random tiny model, scripted tool (`arpo run`: the platform)."""
    from arpo.demo import run_demo

    cfg = _load(config) if config else RunConfig.model_validate(DEMO_DEFAULTS)
    with console.status("rolling out ARPO and GRPO trees, then one policy update..."):
        result = run_demo(cfg, prompts, segment_tokens, lr)
    _print_demo(cfg, result)


DEMO_DEFAULTS = {
    "seed": 0,
    "rollout": {"max_tool_calls": 2, "max_response_tokens": 64},
    "branching": {"group_size": 8, "initial_rollouts": 4, "entropy_window": 4, "beta": 0.4},
}


def _print_demo(cfg: RunConfig, result: DemoResult) -> None:
    b = cfg.branching
    console.print(
        "[bold]arpo demo[/bold]: random 2-layer Qwen2, 16-symbol vocabulary; scripted tool; toy reward "
        "(hidden digit in the final segment). Real: sampling with exact entropy, ARPO forking, trees, "
        "advantages, clipped loss, one AdamW step."
    )
    table = Table(title=f"Trees at equal budget M={b.group_size} (ARPO starts N={b.initial_rollouts})")
    for col in (
        "prompt",
        "ARPO forks",
        "ARPO branch pts",
        "ARPO tool calls",
        "GRPO tool calls",
        "ARPO reward",
    ):
        table.add_column(col, justify="right")
    for a, g in zip(result.arpo, result.grpo, strict=True):
        rewards = list(a.rewards.values())
        table.add_row(
            a.prompt_id,
            str(a.forks),
            str(sum(1 for n in a.tree.branch_points if n != a.tree.root_id)),
            str(a.tool_calls),
            str(g.tool_calls),
            f"{sum(rewards) / len(rewards):.2f}",
        )
    console.print(table)
    arpo_calls = sum(t.tool_calls for t in result.arpo) / sum(len(t.rewards) for t in result.arpo)
    grpo_calls = sum(t.tool_calls for t in result.grpo) / sum(len(t.rewards) for t in result.grpo)
    console.print(
        f"tool calls executed per trajectory: ARPO {arpo_calls:.2f} vs GRPO {grpo_calls:.2f} "
        f"(forks reuse the tool calls of their shared prefix)"
    )
    d, s = result.step.diagnostics, result.step
    console.print(
        f"update ({cfg.loss.advantage_mode} attribution): loss {d.policy_loss:+.4f}, "
        f"{d.tokens} trained tokens, "
        f"clip fraction {d.clip_fraction:.3f}, entropy {d.entropy:.3f} nats"
    )
    verdict = "[green]ok[/green]" if s.positive_shift > s.negative_shift else "[red]unexpected[/red]"
    console.print(
        f"mean log-prob change after the step: above-average trajectories {s.positive_shift:+.4f}, "
        f"below-average {s.negative_shift:+.4f} -> {verdict}"
    )
    if s.positive_shift <= s.negative_shift:
        raise typer.Exit(1)


@app.command()
def serve(
    service: Annotated[str, typer.Argument(help="rollout, tools, agent, learner or controller.")],
) -> None:
    """Run one service, exactly as `python -m arpo.services.<service>` (settings from ARPO_* variables)."""
    match service:
        case "rollout":
            from arpo.services.rollout.__main__ import main as rollout_main

            raise typer.Exit(rollout_main())
        case "tools":
            from arpo.services.tools.__main__ import main as tools_main

            raise typer.Exit(tools_main())
        case "agent":
            from arpo.services.agent.__main__ import main as agent_main

            raise typer.Exit(agent_main())
        case "learner":
            from arpo.services.learner.__main__ import main as learner_main

            raise typer.Exit(learner_main())
        case "controller":
            from arpo.services.controller.__main__ import main as controller_main

            raise typer.Exit(controller_main())
        case _:
            errors.print(f"unknown service {service!r}: choose rollout, tools, agent, learner or controller")
            raise typer.Exit(2)


@app.command()
def sft(
    out: Annotated[Path, typer.Argument(help="Folder for the trained model and tokenizer (and data/).")],
    steps: Annotated[int, typer.Option(min=1, help="Optimizer steps.")] = sft_defaults.STEPS,
    batch: Annotated[int, typer.Option(min=1, help="Demonstrations per step.")] = sft_defaults.BATCH,
    lr: Annotated[float, typer.Option(min=0.0, help="Peak learning rate.")] = sft_defaults.LR,
    demos: Annotated[int, typer.Option(min=1, help="Demonstrations generated.")] = sft_defaults.DEMOS,
    seed: Annotated[int, typer.Option(min=0, help="Benchmark and training seed.")] = 0,
    sloppiness: Annotated[
        float,
        typer.Option(min=0.0, max=1.0, help="Share of imperfect demonstrations (skipped or needless tools)."),
    ] = sft_defaults.SLOPPINESS,
    init_from: Annotated[
        Path | None,
        typer.Option(help="Continue training this earlier `arpo sft` output instead of a new model."),
    ] = None,
) -> None:
    """Cold-start the tiny agent: the benchmark, imperfect tool-use demonstrations, SFT. The defaults
    reproduce the shipped arpo:agent-tiny (about 30 minutes on 2 cores)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from arpo.sft import build_agent

    if out.exists() and any(out.iterdir()):
        errors.print(f"{out} exists and is not empty")
        raise typer.Exit(2)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console) as progress:
        task = progress.add_task("sft", total=steps)

        def on_step(step: int, loss: float) -> None:
            progress.update(task, completed=step + 1, description=f"sft loss {loss:.3f}")

        build_agent(
            out,
            steps=steps,
            batch=batch,
            lr=lr,
            demos=demos,
            seed=seed,
            on_step=on_step,
            sloppiness=sloppiness,
            init_from=init_from,
        )
    console.print(f"saved to {out} (load it by path, or use the built-in arpo:agent-tiny)")


@index_app.command("build")
def index_build(
    corpus: Annotated[Path, typer.Argument(help="JSONL corpus: one {id, title, text} object per line.")],
    out: Annotated[Path, typer.Argument(help="Folder to write the index into (ARPO_TOOLS_INDEX).")],
) -> None:
    """Build the BM25 index the tool service's `local` search backend loads."""
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from arpo.services.tools.search import CorpusError, build_index

    if not corpus.is_file():
        errors.print(f"corpus {corpus} is not a file")
        raise typer.Exit(2)
    columns = (SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn())
    with Progress(*columns, console=errors, transient=True) as progress:
        task = progress.add_task("reading documents", total=None)
        try:
            count = build_index(
                corpus, out, lambda n: progress.update(task, description=f"indexing: {n:,} documents read")
            )
        except CorpusError as err:
            errors.print(f"[red]invalid corpus[/red] {err}", highlight=False)
            raise typer.Exit(2) from None
    console.print(f"indexed {count:,} documents into {out}")


@app.command()
def bench(
    component: Annotated[
        str, typer.Argument(help="rollout(-vllm), entropy-topk, json, tools, search, queue, tree, learner.")
    ],
    shape: Annotated[str, typer.Option(help="Model shape: tiny, 0.5b, 1.5b (random weights).")] = "tiny",
    batch: Annotated[list[int] | None, typer.Option(help="Batch sizes (repeatable).")] = None,
    new_tokens: Annotated[int, typer.Option(min=1, help="Tokens generated per row.")] = 64,
    device: Annotated[str, typer.Option(help="torch device.")] = "cpu",
    vocab_size: Annotated[
        int | None, typer.Option(help="Model vocabulary (default: the tiny tokenizer's).")
    ] = None,
    dtype: Annotated[str, typer.Option(help="float32 or bfloat16.")] = "float32",
    repeats: Annotated[
        int, typer.Option(min=1, help="Timed runs per variant, interleaved; the median counts.")
    ] = 3,
    static_baseline: Annotated[bool, typer.Option(help="Also time `generate` with a static cache.")] = False,
    documents: Annotated[int, typer.Option(min=1, help="search: corpus size.")] = 100_000,
    run: Annotated[str | None, typer.Option(help="tree: the run whose completed trees to measure.")] = None,
    out: Annotated[Path | None, typer.Option(help="Also append the JSON lines to this file.")] = None,
) -> None:
    """Measure a component; prints one JSON object per measurement (record them under benchmarks/).

    rollout: the HF engine with/without entropy vs `generate`; rollout-vllm: vLLM with/without top-20
    log-probs (needs vllm installed); entropy-topk: exact entropy vs the top-K estimates; json: the cost
    of the JSON contract for a generate response; tools: sandboxed `print(1)` on the fresh and warm
    paths vs plain `python -c` (`--repeats` rounds of `--new-tokens` calls each); search: BM25 over a
    generated corpus of `--documents` documents; queue: `--documents / 5` branch requests through one
    Redis stream and consumer group (4 consumers); tree: tool calls, tokens per leaf and prefix reuse of
    the completed trees of `--run` (in Redis: REDIS_URL or the local server); learner: training tokens/s
    of the torch and DeepSpeed backends (`--batch` rows of `--new-tokens` tokens) and publish s/GB.
    """
    from arpo import bench as b

    batches = batch or [1, 8, 32]
    match component:
        case "rollout":
            records = b.bench_rollout(
                shape, batches, new_tokens, device, vocab_size, dtype, repeats, static_baseline
            )
        case "rollout-vllm":
            records = b.bench_vllm(shape, batches, new_tokens, vocab_size, repeats)
        case "entropy-topk":
            records = b.bench_topk_entropy(shape, max(batches), new_tokens, vocab_size)
        case "json":
            records = b.bench_json(max(batches), new_tokens, repeats)
        case "tools":
            from arpo.bench_tools import bench_sandbox

            records = bench_sandbox(calls=new_tokens, rounds=repeats)
        case "search":
            from arpo.bench_tools import bench_search

            records = bench_search(documents=documents, queries=new_tokens * 10)
        case "queue":
            from arpo.bench_agent import bench_queue

            records = bench_queue(count=documents // 5)
        case "learner":
            from arpo.bench_agent import bench_learner

            records = bench_learner(shape, max(batches), new_tokens, repeats, device)
        case "tree":
            from arpo.bench_agent import bench_trees

            if run is None:
                errors.print("bench tree needs --run RUN_ID (a run with completed trees in Redis)")
                raise typer.Exit(2)
            records = bench_trees(run)
        case _:
            errors.print(
                f"unknown bench {component!r}: choose rollout, rollout-vllm, entropy-topk, json, "
                "tools, search, queue, tree or learner"
            )
            raise typer.Exit(2)
    for record in records:
        line = json.dumps(record)
        typer.echo(line)
        if out is not None:
            with out.open("a") as f:
                f.write(line + "\n")


@app.command()
def compare(
    spec: Annotated[Path, typer.Argument(help="RunSpec (with a validation block) both methods start from.")],
    out: Annotated[Path, typer.Option(help="Folder for results.json, report.md, plots, records.")] = Path(
        "benchmarks/arpo-vs-grpo"
    ),
    seeds: Annotated[str, typer.Option(help="Comma-separated seeds; each runs every method.")] = "0,1,2",
    test_questions: Annotated[int, typer.Option(min=1, help="Test questions per evaluation.")] = 1000,
    test_split: Annotated[str, typer.Option(help="Split of the spec's dataset to test on.")] = "test",
    methods: Annotated[
        str, typer.Option(help="Comma-separated methods to train: arpo, grpo (sweeping ARPO's knobs: arpo).")
    ] = "arpo,grpo",
    overrides: Overrides = None,
) -> None:
    """ARPO vs GRPO from the same checkpoint at equal trajectory budget: embedded runs, then test evals."""
    import asyncio

    from arpo.cli_runs import load_spec
    from arpo.compare import METHODS
    from arpo.compare import compare as run_compare

    try:
        parsed = load_spec(spec, overrides)
        seed_list = [int(s) for s in seeds.split(",") if s.strip()]
    except (ConfigError, ValueError) as err:
        errors.print(f"[red]invalid input[/red] {err}", highlight=False)
        raise typer.Exit(2) from None
    method_list = [m.strip() for m in methods.split(",") if m.strip()]
    if not seed_list:
        errors.print("--seeds: give at least one seed")
        raise typer.Exit(2)
    if not method_list or any(m not in METHODS for m in method_list):
        errors.print(f"--methods: expected a comma-separated subset of {', '.join(METHODS)}, got {methods!r}")
        raise typer.Exit(2)
    try:
        run = run_compare(parsed, out, seed_list, test_split, test_questions, console.print, method_list)
        asyncio.run(run)
    except (ConfigError, ValueError) as err:
        errors.print(f"arpo compare: {err}", highlight=False)
        raise typer.Exit(2) from None
    console.print(f"report: {out / 'report.md'}")


register_run_commands(app)
register_eval_commands(app)


def main() -> None:
    app()
