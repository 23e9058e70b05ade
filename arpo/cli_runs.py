"""`arpo run`, `status`, `logs`, `stop`: runs, embedded or through a controller.

Exit codes a script can rely on: 0 done; 1 the run failed; 2 bad input (spec, arguments, unknown run,
a state that does not allow the operation); 3 the controller could not be reached or refused the token;
130 stopped by Ctrl-C (after the current step and its checkpoint).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
import yaml
from pydantic import ValidationError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from arpo.config import ConfigError, describe_validation_error
from arpo.proto.runs import RunSpec, RunStatus, StepMetrics, ValidationMetrics

console = Console()
errors = Console(stderr=True)

Remote = Annotated[
    str | None,
    typer.Option("--remote", envvar="ARPO_CONTROLLER_URL", help="Controller URL (default: embedded)."),
]
Token = Annotated[
    str | None, typer.Option("--token", envvar="ARPO_CONTROLLER_TOKEN", help="The controller's bearer token.")
]
COLUMNS = ("step", "reward_mean", "accuracy", "tool_calls_per_trajectory", "branches_per_tree", "policy_loss")


Overrides = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        metavar="KEY=VALUE",
        help="Override a spec field by its dotted path, e.g. --set config.branching.beta=0.4 (repeatable).",
    ),
]


def apply_override(data: dict[str, Any], assignment: str) -> None:
    """Set `data`'s field at a dotted path (`config.branching.beta=0.4`); the value is read as YAML."""
    key, sep, raw = assignment.partition("=")
    names = key.strip().split(".")
    if not sep or not all(names):
        raise ConfigError(f"--set {assignment!r}: expected KEY=VALUE with a dotted KEY, e.g. config.seed=1")
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError as err:
        raise ConfigError(f"--set {key}: value {raw!r} is not valid YAML: {err}") from None
    node = data
    for depth, name in enumerate(names[:-1]):
        child = node.get(name)
        if child is None:
            child = node[name] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"--set {key}: {'.'.join(names[: depth + 1])} is a value, not a section")
        node = child
    node[names[-1]] = value


def load_spec(path: Path, overrides: list[str] | None = None) -> RunSpec:
    """The RunSpec in `path` with `--set` overrides applied; errors name the file and the bad field."""
    if not path.is_file():
        raise ConfigError(f"{path}: no such file")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML/JSON: {err}") from None
    if not isinstance(data, dict) or "model" not in data:
        raise ConfigError(f"{path}: expected a RunSpec (model, dataset, config), see configs/embedded.yaml")
    for assignment in overrides or ():
        apply_override(data, assignment)
    source = f"{path} with --set {' '.join(overrides)}" if overrides else str(path)
    try:
        return RunSpec.model_validate(data)
    except ValidationError as err:
        raise ConfigError(describe_validation_error(err, source)) from None


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print `message` to stderr (unwrapped: scripts grep it) and return the exit to raise."""
    errors.print(message, highlight=False, soft_wrap=True)
    return typer.Exit(code)


def _client(remote: str, token: str | None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=remote.rstrip("/"), headers=headers, timeout=30)


def _call(remote: str, token: str | None, method: str, path: str, **kwargs: Any) -> Any:
    """One controller request; HTTP errors become exit codes (404/409/422 -> 2, 401/transport -> 3)."""
    try:
        with _client(remote, token) as client:
            response = client.request(method, path, **kwargs)
    except httpx.TransportError as err:
        raise fail(f"controller {remote} unreachable: {err}", 3) from None
    if response.status_code >= 400:
        try:
            detail = response.json().get("detail", response.text)
        except ValueError:
            detail = response.text
        code = 3 if response.status_code in (401, 403) or response.status_code >= 500 else 2
        raise fail(f"controller: {response.status_code} {json.dumps(detail)}", code)
    return response.json() if response.content else None


def _row(m: StepMetrics) -> list[str]:
    values = m.model_dump()
    return [f"{values[c]:.3f}" if isinstance(values[c], float) else str(values[c]) for c in COLUMNS]


def _embedded(spec: RunSpec, directory: Path, run_id: str | None, steps: int | None) -> int:
    from arpo.embedded import Embedded, EmbeddedOptions

    if steps is not None:
        optim = spec.config.optim.model_copy(update={"total_steps": steps})
        spec = spec.model_copy(update={"config": spec.config.model_copy(update={"optim": optim})})
    run = Embedded(spec, EmbeddedOptions(directory=directory, run_id=run_id))
    total = spec.config.optim.total_steps
    table = Table(*COLUMNS, title="steps")
    interrupted = 0

    async def main() -> list[StepMetrics]:
        def on_sigint() -> None:
            nonlocal interrupted
            interrupted += 1
            if interrupted == 1:
                errors.print("stopping after this step (its checkpoint included); Ctrl-C again to abandon it")
                run.stop()
            elif task is not None:
                task.cancel()

        task = asyncio.current_task()
        asyncio.get_running_loop().add_signal_handler(signal.SIGINT, on_sigint)
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        with Progress(*columns, console=console) as progress:
            bar = progress.add_task("starting", total=total)

            async def started(run_id: str, _: Any) -> None:
                progress.update(bar, description=f"run {run_id}: steps")

            async def stepped(m: StepMetrics) -> None:
                table.add_row(*_row(m))
                progress.update(bar, completed=m.step + 1)
                progress.console.print(
                    f"step {m.step}: reward {m.reward_mean:.3f} acc {m.accuracy:.3f} "
                    f"tools/traj {m.tool_calls_per_trajectory:.2f} forks/tree {m.branches_per_tree:.2f} "
                    f"({m.time_step_s or 0:.1f}s)"
                )

            async def validated(v: ValidationMetrics) -> None:
                progress.console.print(
                    f"[bold]validation[/bold] after {v.step} steps: accuracy {v.accuracy:.3f} "
                    f"reward {v.reward_mean:.3f} tools/question {v.tool_calls_per_question:.2f} "
                    f"({v.questions} questions, {v.time_s:.1f}s)"
                )

            return await run.run(started, stepped, validated)

    try:
        asyncio.run(main())
    except (asyncio.CancelledError, KeyboardInterrupt):
        errors.print(f"abandoned the running step of run {run.run_id}; resume with --run-id {run.run_id}")
        return 130
    except (ConfigError, ValueError) as err:
        errors.print(f"arpo run: {err}", highlight=False)
        return 2
    console.print(table)
    console.print(
        f"run {run.run_id}: weights, checkpoints and TensorBoard logs in {directory / str(run.run_id)}"
    )
    if len(run.validations) >= 2:
        first, last = run.validations[0], run.validations[-1]
        console.print(
            f"[bold]validation accuracy {first.accuracy:.3f} -> {last.accuracy:.3f}[/bold] "
            f"(reward {first.reward_mean:.3f} -> {last.reward_mean:.3f}, tool calls per question "
            f"{first.tool_calls_per_question:.2f} -> {last.tool_calls_per_question:.2f}) "
            f"from step {first.step} to step {last.step}"
        )
    if run.plot is not None:
        console.print(f"learning curves: {run.plot}")
    if run.redis_url is not None:
        console.print(
            f"dashboard (trees, curves): REDIS_URL={run.redis_url} ARPO_CONTROLLER_AUTH_DISABLED=true "
            f"arpo serve controller, then http://127.0.0.1:8000/#/runs/{run.run_id}"
        )
    return 130 if interrupted else 0


def run_command(
    spec: Annotated[Path, typer.Argument(help="RunSpec YAML/JSON (model, dataset, config).")],
    remote: Remote = None,
    token: Token = None,
    directory: Annotated[Path, typer.Option("--dir", help="Embedded: where runs/<id>/ goes.")] = Path("runs"),
    run_id: Annotated[str | None, typer.Option("--run-id", help="Embedded: resume this run.")] = None,
    steps: Annotated[int | None, typer.Option("--steps", min=1, help="Override optim.total_steps.")] = None,
    overrides: Overrides = None,
) -> None:
    """Run ARPO: embedded (every service in this process, on CPU) or submitted to `--remote`."""
    try:
        parsed = load_spec(spec, overrides)
    except ConfigError as err:
        raise fail(f"[red]invalid run spec[/red]\n{err}") from None
    if remote is None:
        raise typer.Exit(_embedded(parsed, directory, run_id, steps))
    status = RunStatus.model_validate(
        _call(
            remote,
            token,
            "POST",
            "/v1/runs",
            content=parsed.model_dump_json(),
            headers={"Content-Type": "application/json"},
        )
    )
    console.print(f"submitted run {status.run_id} ({status.state.value})")
    typer.echo(status.run_id)


def status_command(
    run_id: Annotated[str | None, typer.Argument(help="A run (default: all runs).")] = None,
    remote: Remote = None,
    token: Token = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Runs and their state, step and latest metrics (from the controller, or Redis when embedded)."""
    if remote is None:
        raw = _local_status(run_id)
    elif run_id is not None:
        raw = [_call(remote, token, "GET", f"/v1/runs/{run_id}")]
    else:
        raw = _call(remote, token, "GET", "/v1/runs")
    runs = [RunStatus.model_validate(r) for r in raw]
    if as_json:
        typer.echo(json.dumps([r.model_dump(mode="json") for r in runs], indent=2))
        return
    table = Table("run", "state", "step", "version", "reward", "reason")
    for r in runs:
        reward = f"{r.metrics.reward_mean:.3f}" if r.metrics else "-"
        table.add_row(r.run_id, r.state.value, str(r.step), str(r.policy_version), reward, r.reason or "")
    console.print(table)


def stop_command(
    run_id: Annotated[str, typer.Argument(help="The run.")], remote: Remote = None, token: Token = None
) -> None:
    """Ask a run to finish its step, checkpoint and stop (exit 2 if it has already ended)."""
    if remote is None:
        raise fail("arpo stop: needs --remote (an embedded run stops with Ctrl-C)")
    status = RunStatus.model_validate(_call(remote, token, "POST", f"/v1/runs/{run_id}/stop"))
    console.print(f"run {status.run_id}: {status.state.value}")


def logs_command(
    run_id: Annotated[str, typer.Argument(help="The run.")],
    remote: Remote = None,
    token: Token = None,
    follow: Annotated[
        bool, typer.Option("--follow/--no-follow", help="Keep following until the run ends.")
    ] = True,
) -> None:
    """Print a run's events (state changes, metrics) as they come, until it ends."""
    if remote is None:
        raise fail("arpo logs: needs --remote (an embedded run prints its own progress)")
    try:
        with (
            _client(remote, token) as client,
            client.stream(
                "GET", f"/v1/runs/{run_id}/events", params={"follow": follow}, timeout=None
            ) as response,
        ):
            if response.status_code >= 400:
                response.read()
                raise fail(
                    f"controller: {response.status_code} {response.text}",
                    3 if response.status_code == 401 else 2,
                )
            event = ""
            for line in response.iter_lines():
                if line.startswith("event: "):
                    event = line[7:]
                elif line.startswith("data: "):
                    typer.echo(f"{event}: {line[6:]}")
                    sys.stdout.flush()
    except httpx.TransportError as err:
        raise fail(f"controller {remote} unreachable: {err}", 3) from None


def register(app: typer.Typer) -> None:
    app.command("run")(run_command)
    app.command("status")(status_command)
    app.command("stop")(stop_command)
    app.command("logs")(logs_command)


def _local_status(run_id: str | None) -> list[dict[str, Any]]:
    from redis.asyncio import Redis

    from arpo.localredis import DEFAULT_URL, answers
    from arpo.services.controller.registry import RunNotFoundError, RunRegistry

    url = os.environ.get("REDIS_URL") or DEFAULT_URL
    if not os.environ.get("REDIS_URL") and not answers(url):
        raise fail("arpo status: no Redis to read (set REDIS_URL, or pass --remote)")

    async def read() -> list[RunStatus]:
        redis = Redis.from_url(url)
        try:
            registry = RunRegistry(redis)
            return [await registry.get(run_id)] if run_id else await registry.runs()
        finally:
            await redis.aclose()

    try:
        return [r.model_dump(mode="json") for r in asyncio.run(read())]
    except RunNotFoundError:
        raise fail(f"no run {run_id!r}") from None
