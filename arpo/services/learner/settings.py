"""Per-process wiring of a learner, read from `ARPO_LEARNER_*` environment variables."""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from arpo.proto.base import Id
from arpo.services.settings import settings_from_env, split_urls

ENV_PREFIX = "ARPO_LEARNER_"


class LearnerSettings(BaseModel):
    """Settings of one learner (field `x` comes from `ARPO_LEARNER_X`)."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    run_id: Id | None = None
    """The run to train; unset: claim pending runs from the controller's registry, one after another."""
    name: str = Field(default_factory=lambda: f"learner-{socket.gethostname()}-{os.getpid()}")
    """This learner's name in the runs' `services_seen`."""
    host: str = "127.0.0.1"
    """Address of GET /healthz (with `port`)."""
    port: int | None = Field(None, ge=1, le=65535)
    """Port of GET /healthz (liveness and readiness: event loop responsive, Redis answers); unset: none."""
    max_runs: int | None = Field(None, ge=1)
    """Exit after training this many claimed runs (a Kubernetes Job: 1); unset: keep claiming."""
    poll_s: float = Field(2.0, gt=0)
    """How often an idle learner looks for a pending run."""
    spec: str | None = None
    """RunSpec file (JSON or YAML); default: the run's spec in Redis."""
    rollout_urls: str = "http://127.0.0.1:8001"
    """Rollout servers to publish weights to, comma-separated (empty: none)."""
    tools_url: str = ""
    """The tool service, for runs with a `validation` block (empty: such runs train without validating)."""
    directory: str = "arpo-runs"
    """Where `<run_id>/weights` and `<run_id>/checkpoints` go (shared with the rollout servers)."""
    device: str | None = None
    """torch device (default: cuda if available, else cpu)."""
    redis_url: str | None = None
    """Redis (default: REDIS_URL, else 127.0.0.1:6379 or a local server)."""
    step_timeout_s: float = Field(3600.0, gt=0)
    """Longest wait for a step's trees."""
    backend: Literal["torch", "deepspeed"] = "torch"
    """torch (one device; the CPU default) or deepspeed (ZeRO; bf16 when the model's dtype is bf16)."""
    zero_stage: int = Field(2, ge=0, le=3)
    """DeepSpeed ZeRO stage."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass (less memory, about a third more compute)."""
    tensorboard: bool = True
    """Write each step's metrics as TensorBoard scalars to `<directory>/<run_id>/tensorboard`."""

    @property
    def rollouts(self) -> list[str]:
        return split_urls(self.rollout_urls)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> LearnerSettings:
        return settings_from_env(cls, ENV_PREFIX, environ)
