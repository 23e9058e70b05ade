"""The embedded run (`arpo run SPEC`): every service of the platform in one process, on CPU.

The rollout engine (HF), the tool service and the agent worker are the real services; the rollout and
tool apps are called in-process through httpx's ASGI transport, so every request crosses the same HTTP
contract as in a deployment. Redis is REDIS_URL, else 127.0.0.1:6379 when it answers, else a private
server child on a free port (stopped at exit). The learner is `learner.service.train_run`, the run is
registered like a controller's (so `arpo status` sees it), and its weights, checkpoints and TensorBoard
logs go under `<directory>/<run_id>/`. Same code as the services, different wiring.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from redis.asyncio import Redis

from arpo.builtins import BUILT_INS, PREFIX, resolve_model
from arpo.config import ConfigError
from arpo.localredis import connect_or_start
from arpo.plots import run_curves
from arpo.proto.runs import ModelRef, RunSpec, StepMetrics, ValidationMetrics
from arpo.services.agent.pool import RolloutPool
from arpo.services.agent.store import TreeStore
from arpo.services.agent.trajectory import Context
from arpo.services.agent.worker import Worker
from arpo.services.controller.registry import ENDED, RunNotFoundError, RunRegistry
from arpo.services.learner.loop import StepLoop
from arpo.services.learner.service import train_run
from arpo.services.learner.settings import LearnerSettings
from arpo.services.rollout.app import create_app as create_rollout_app
from arpo.services.rollout.client import RolloutClient
from arpo.services.rollout.engine import TokenizedEngine
from arpo.services.rollout.hf import HFEngine
from arpo.services.rollout.settings import RolloutSettings
from arpo.services.tools.__main__ import build_app as build_tools_app
from arpo.services.tools.client import ToolsClient
from arpo.services.tools.settings import IsolationMode, ToolsSettings
from arpo.sft import SEARCH_K


@dataclass(frozen=True)
class EmbeddedOptions:
    directory: Path = Path("runs")
    """Where `<run_id>/` (weights, checkpoints, tensorboard) goes."""
    run_id: str | None = None
    """Resume or name a run (default: a new id from the spec's name)."""
    agents: int = 1
    """Agent workers (coroutines) growing the trees."""


def tools_settings(dataset: str, index: str | None = None) -> ToolsSettings:
    """ARPO_TOOLS_* as the service reads them, with embedded defaults: isolation `auto` (namespaces when
    the host allows them), `index` or else the built-in index of a built-in dataset (`arpo:agentic`'s
    corpus), else `arpo:facts`, and the pages per search the cold-start demonstrations show."""
    if index is None:
        index = dataset if dataset.removeprefix(PREFIX) in BUILT_INS["index"] else f"{PREFIX}facts"
    env = {
        "ARPO_TOOLS_ISOLATION": IsolationMode.AUTO.value,
        "ARPO_TOOLS_INDEX": index,
        "ARPO_TOOLS_SEARCH_K": str(SEARCH_K),
    }
    return ToolsSettings.from_env(env | {k: v for k, v in os.environ.items() if k.startswith("ARPO_TOOLS_")})


@asynccontextmanager
async def rollout_service(
    model: ModelRef, url: str | None = None, device: str = "cpu"
) -> AsyncIterator[tuple[RolloutClient, TokenizedEngine]]:
    """A rollout server's client and the model's tokenizer: the server at `url`, or the HF engine in this
    process behind the service's app (the engine is then the tokenizer)."""
    tokens: TokenizedEngine
    if url is not None:
        from transformers import AutoTokenizer

        path = resolve_model(model.name_or_path)
        tokens = TokenizedEngine(
            AutoTokenizer.from_pretrained(path, revision=model.revision), model.name_or_path
        )
        client = RolloutClient(url)
    else:
        engine = HFEngine.from_pretrained(
            resolve_model(model.name_or_path), model.revision, model.dtype, device
        )
        app = create_rollout_app(engine, RolloutSettings(model=model.name_or_path))
        tokens, client = engine, RolloutClient.in_process(app)
    async with client:
        yield client, tokens


@asynccontextmanager
async def tool_service(
    settings: ToolsSettings, timeout_s: float, url: str | None = None
) -> AsyncIterator[ToolsClient]:
    """The tool service at `url`, or one in this process with `settings`."""
    if url is not None:
        async with ToolsClient(url, timeout_s=timeout_s) as remote:
            yield remote
        return
    app = build_tools_app(settings)
    async with app.router.lifespan_context(app), ToolsClient.in_process(app, timeout_s=timeout_s) as local:
        yield local


@asynccontextmanager
async def local_services(spec: RunSpec) -> AsyncIterator[tuple[HFEngine, RolloutClient, ToolsClient]]:
    """The rollout service (HF engine on CPU, the spec's model) and the tool service, in this process,
    behind their HTTP contracts: (engine, rollout client, tools client)."""
    timeout = spec.config.rollout.tool_timeout_s + 30
    async with (
        rollout_service(spec.model) as (rollout, engine),
        tool_service(tools_settings(spec.dataset.path_or_name), timeout) as tools,
    ):
        assert isinstance(engine, HFEngine)
        yield engine, rollout, tools


class Embedded:
    """One embedded run; `stop()` finishes the current step (checkpoint included) and returns."""

    def __init__(self, spec: RunSpec, options: EmbeddedOptions) -> None:
        self.spec, self.options = spec, options
        self.loop: StepLoop | None = None
        self.run_id: str | None = None
        self.plot: Path | None = None
        """The learning curves (PNG) written at the end of the run."""
        self.redis_url: str | None = None
        """The Redis that keeps the run after it ended (None when it lived in a private server child)."""
        self.validations: list[ValidationMetrics] = []
        """Every validation of the run (resumed runs included), read at its end."""
        self._stop_requested = False

    def stop(self) -> None:
        self._stop_requested = True
        if self.loop is not None:
            self.loop.stop()

    def _attach(self, loop: StepLoop) -> None:
        self.loop = loop
        if self._stop_requested:
            loop.stop()

    async def run(
        self,
        on_start: Callable[[str, TreeStore], Awaitable[None]] | None = None,
        on_step: Callable[[StepMetrics], Awaitable[None]] | None = None,
        on_validation: Callable[[ValidationMetrics], Awaitable[None]] | None = None,
    ) -> list[StepMetrics]:
        server = connect_or_start()
        redis = Redis.from_url(server.url)
        self.redis_url = None if server.started_here else server.url
        try:
            return await self._run(redis, on_start, on_step, on_validation)
        finally:
            await redis.aclose()
            server.close()

    async def _register(self, registry: RunRegistry) -> str:
        """A new run, or the named one resumed (from its checkpoint); ConfigError if it has ended."""
        run_id = self.options.run_id
        if run_id is not None:
            try:
                status = await registry.get(run_id)
            except RunNotFoundError:
                pass
            else:
                if status.state in ENDED:
                    raise ConfigError(f"--run-id: run {run_id!r} is {status.state.value} ({status.reason})")
                await registry.claim("embedded", run_id)  # pending: now running; running: resumed
                return run_id
        created = await registry.create(self.spec, run_id)
        await registry.claim("embedded", created.run_id)
        return created.run_id

    async def _run(
        self,
        redis: Redis,
        on_start: Callable[[str, TreeStore], Awaitable[None]] | None,
        on_step: Callable[[StepMetrics], Awaitable[None]] | None,
        on_validation: Callable[[ValidationMetrics], Awaitable[None]] | None,
    ) -> list[StepMetrics]:
        spec, config = self.spec, self.spec.config
        self.run_id = run_id = await self._register(RunRegistry(redis))
        store = TreeStore(redis, run_id)
        async with local_services(spec) as (engine, rollout, tools):
            ctx = Context(store, RolloutPool({"embedded": rollout}), tools, engine, config)
            workers = [Worker(ctx, f"embedded-agent-{i}") for i in range(self.options.agents)]
            tasks = [asyncio.create_task(w.run()) for w in workers]
            if on_start is not None:
                await on_start(run_id, store)
            settings = LearnerSettings(
                run_id=run_id, directory=str(self.options.directory), rollout_urls="", name="embedded"
            )
            try:
                done = await train_run(
                    redis,
                    run_id,
                    spec,
                    settings,
                    {"embedded": rollout},
                    "embedded",
                    self._attach,
                    on_step,
                    tools,
                    on_validation,
                )
            finally:
                for w in workers:
                    w.stop()
                await asyncio.gather(*tasks, return_exceptions=True)
        registry = RunRegistry(redis)
        steps, self.validations = await registry.metrics(run_id), await registry.validation(run_id)
        if steps or self.validations:
            path = self.options.directory / run_id / "curves.png"
            run_curves({run_id: (steps, self.validations)}, path, f"run {run_id}")
            self.plot = path
        return done
