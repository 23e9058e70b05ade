"""OpenAPI documents of the HTTP services, for `arpo schema export` (the committed copy is in proto/)."""

from __future__ import annotations

import json
from collections.abc import Sequence

from redis.asyncio import Redis

from arpo.proto.rollout import GenerateRequest, GenerateResponse
from arpo.services.controller.app import create_app as create_controller_app
from arpo.services.controller.settings import ControllerSettings
from arpo.services.rollout.app import create_app
from arpo.services.rollout.settings import RolloutSettings
from arpo.services.tools.app import create_app as create_tools_app
from arpo.services.tools.sandbox import Plan, Sandbox
from arpo.services.tools.search import Searcher, SearXNG
from arpo.services.tools.settings import IsolationMode, ToolsSettings


class UnloadedEngine:
    """Stands where a real engine would, so an app can be built to read its routes; it generates nothing."""

    policy_version = 0
    model_name = "(schema export: no model loaded)"
    vocab_size = 0
    max_context_tokens = 0

    def _refuse(self, *_: object) -> None:
        raise RuntimeError("UnloadedEngine only serves OpenAPI export; load a real engine to generate")

    def generate(self, requests: Sequence[GenerateRequest]) -> list[GenerateResponse]:
        self._refuse()
        return []

    score = snapshot = load = restore = set_version = encode = decode = chat_prompt = _refuse


def openapi_documents() -> dict[str, str]:
    """File name -> OpenAPI JSON of every HTTP service."""
    rollout = create_app(UnloadedEngine(), RolloutSettings(model="(any)"))  # type: ignore[arg-type]
    # A sandbox that never starts (its plan is given, not probed) and a search backend never called.
    tools_settings = ToolsSettings()
    unstarted = Sandbox(tools_settings, Plan(IsolationMode.NAMESPACES, "python3", root=False, bwrap=None))
    searcher = Searcher({"searxng": SearXNG("http://unused.invalid", 1, 1)}, "searxng", 100)
    tools = create_tools_app(unstarted, searcher, tools_settings)
    # A Redis client connects on first use: building the app to read its routes never does.
    controller = create_controller_app(Redis(), ControllerSettings(auth_disabled=True))
    apps = {"rollout": rollout, "tools": tools, "controller": controller}
    return {
        f"{name}.openapi.json": json.dumps(app.openapi(), indent=2, sort_keys=True) + "\n"
        for name, app in apps.items()
    }
