"""Per-process wiring of a tool service, read from `ARPO_TOOLS_*` environment variables."""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from arpo.services.settings import settings_from_env

ENV_PREFIX = "ARPO_TOOLS_"


class IsolationMode(StrEnum):
    """How much confinement the service insists on (see `arpo.services.tools.sandbox`)."""

    NAMESPACES = "namespaces"
    """bubblewrap namespaces + resource limits; the service refuses to start without them."""
    RLIMITS = "rlimits"
    """Resource limits, own session, empty environment, a separate uid when run as root; no namespaces."""
    AUTO = "auto"
    """namespaces when the host allows them, else rlimits (reported by /healthz and every result)."""


class ToolsSettings(BaseModel):
    """Settings of one tool service (field `x` comes from `ARPO_TOOLS_X`)."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    host: str = "127.0.0.1"
    """Address to listen on."""
    port: int = Field(8002, ge=1, le=65535)
    """Port to listen on."""
    isolation: IsolationMode = IsolationMode.NAMESPACES
    """Required confinement of Python calls: namespaces (default), rlimits or auto."""
    python: str | None = None
    """Interpreter that runs tool code (default: this process's base interpreter, without its venv)."""
    warm: bool = True
    """Keep one sandboxed interpreter per slot and fork a child per call (about 5x faster per call)."""
    max_concurrency: int = Field(4, ge=1, le=256)
    """Calls run at once; also the number of sandbox slots (each has its own uid when run as root)."""
    max_queue: int = Field(64, ge=0)
    """Calls that may wait for a slot; beyond it requests get 429 with Retry-After."""
    uid_base: int = Field(61000, ge=1000, le=2**31 - 256)
    """When run as root: slot i runs tool code as uid/gid uid_base + i."""
    timeout_s: float = Field(10.0, gt=0)
    """Default wall-clock limit of a Python call."""
    max_timeout_s: float = Field(60.0, gt=0)
    """Largest wall-clock limit a request may ask for (more is refused with 422)."""
    max_code_chars: int = Field(20_000, ge=1, le=100_000)
    """Longest program accepted (more is refused with 422)."""
    cpu_s: int = Field(10, ge=1)
    """CPU-seconds limit of a call (RLIMIT_CPU)."""
    memory_mb: int = Field(1024, ge=64)
    """Address-space limit of each process of a call (RLIMIT_AS), MiB."""
    processes: int = Field(32, ge=1)
    """Processes the call's uid may have (RLIMIT_NPROC; a per-slot uid when run as root)."""
    file_mb: int = Field(16, ge=1)
    """Largest file a call may write (RLIMIT_FSIZE), MiB; also the size of its private work and /tmp."""
    open_files: int = Field(64, ge=16)
    """Open file descriptors per process (RLIMIT_NOFILE)."""
    output_kb: int = Field(64, ge=1)
    """Captured stdout and stderr, each, KiB; the rest is dropped and the result marked truncated."""
    index: str | None = None
    """Path of a BM25 index built by `arpo index build` (the `local` search backend)."""
    search_backend: str = "local"
    """Default search backend: local, brave, serper or searxng."""
    searxng_url: str | None = None
    """Base URL of a SearXNG instance (the searxng backend)."""
    snippet_chars: int = Field(500, ge=20)
    """Each search hit's text is cut to this many characters."""
    search_k: int = Field(5, ge=1, le=50)
    """Pages a model's `<search>` call gets (a /v1/search request names its own k)."""
    search_timeout_s: float = Field(10.0, gt=0)
    """Wall-clock limit of one web search request."""
    search_rps: float = Field(5.0, gt=0)
    """Most web search requests per second per backend (a token bucket; callers wait their turn)."""
    cache_ttl_s: int = Field(86_400, ge=0)
    """How long search results stay in the Redis cache; 0 turns the cache off."""
    redis_url: str | None = None
    """Redis for the search cache (default: REDIS_URL; no cache when neither is set)."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ToolsSettings:
        return settings_from_env(cls, ENV_PREFIX, environ)
