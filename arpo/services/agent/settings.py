"""Per-process wiring of an agent worker, read from `ARPO_AGENT_*` environment variables."""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict, Field

from arpo.proto.base import Id
from arpo.services.settings import settings_from_env, split_urls

ENV_PREFIX = "ARPO_AGENT_"


def _consumer() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class AgentSettings(BaseModel):
    """Settings of one agent worker (field `x` comes from `ARPO_AGENT_X`)."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    run_id: Id | None = None
    """The run whose branch requests this worker serves; unset: follow the registry (the oldest running
    run, then the next one when it ends)."""
    poll_s: float = Field(2.0, gt=0)
    """How often an idle worker (or one following the registry) checks the runs' states."""
    rollout_urls: str = "http://127.0.0.1:8001"
    """Rollout servers, comma-separated."""
    tools_url: str = "http://127.0.0.1:8002"
    """The tool service."""
    tokenizer: str | None = None
    """Tokenizer (hub name or path) for tool results; default: the run's model."""
    config: str | None = None
    """RunConfig file; default: the config of the run's spec in Redis."""
    redis_url: str | None = None
    """Redis (default: REDIS_URL, else 127.0.0.1:6379 or a local server)."""
    host: str = "127.0.0.1"
    """Address of GET /healthz (with `port`)."""
    port: int | None = Field(None, ge=1, le=65535)
    """Port of GET /healthz (liveness and readiness: event loop responsive, Redis answers); unset: none."""
    consumer: str = Field(default_factory=_consumer, min_length=1)
    """This worker's name in the consumer group (default: host-pid)."""
    max_inflight: int = Field(32, ge=1, le=4096)
    """Trajectories running at once in this process."""
    idle_timeout_s: float = Field(10.0, gt=0, le=300)
    """A request unacknowledged this long is reclaimed by another worker (its worker died)."""
    max_attempts: int = Field(3, ge=1)
    """Deliveries of one request before it goes to the dead-letter stream."""
    grace_s: float = Field(30.0, ge=0)
    """On SIGTERM: how long running trajectories may take to finish."""

    @property
    def rollouts(self) -> list[str]:
        return split_urls(self.rollout_urls)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> AgentSettings:
        return settings_from_env(cls, ENV_PREFIX, environ)
