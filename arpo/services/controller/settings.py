"""Per-process wiring of the controller, read from `ARPO_CONTROLLER_*` environment variables."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from arpo.services.settings import settings_from_env

ENV_PREFIX = "ARPO_CONTROLLER_"


class ControllerSettings(BaseModel):
    """Settings of the controller (field `x` comes from `ARPO_CONTROLLER_X`)."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    host: str = "127.0.0.1"
    """Address to listen on."""
    port: int = Field(8000, ge=1, le=65535)
    """Port to listen on."""
    token: str | None = Field(None, min_length=16)
    """Bearer token required on every mutating request (and on reads unless public_reads)."""
    auth_disabled: bool = False
    """Serve without a token (local use only: anyone who reaches the port can launch runs)."""
    public_reads: bool = False
    """Let GET requests through without the token."""
    redis_url: str | None = None
    """Redis (default: REDIS_URL, else 127.0.0.1:6379 or a local server)."""

    @model_validator(mode="after")
    def _token_or_disabled(self) -> Self:
        if self.token is None and not self.auth_disabled:
            raise ValueError(
                "token: set ARPO_CONTROLLER_TOKEN (16+ characters), or ARPO_CONTROLLER_AUTH_DISABLED=true "
                "for local use"
            )
        return self

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ControllerSettings:
        return settings_from_env(cls, ENV_PREFIX, environ)
