"""Per-process wiring of a rollout server, read from `ARPO_ROLLOUT_*` environment variables."""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict, Field

from arpo.core.entropy import TailMode
from arpo.services.rollout.engine import EngineKind
from arpo.services.settings import settings_from_env

ENV_PREFIX = "ARPO_ROLLOUT_"


class RolloutSettings(BaseModel):
    """Settings of one rollout server (field `x` comes from `ARPO_ROLLOUT_X`)."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    model: str = Field(min_length=1)
    """Hugging Face hub name or local path of the policy."""
    engine: EngineKind = EngineKind.HF
    """hf (transformers + torch) or vllm."""
    revision: str | None = None
    """Hub revision of the model."""
    dtype: str = Field("auto", pattern="^(auto|float32|bfloat16|float16)$")
    """Weights dtype; auto = bfloat16 on GPU, float32 on CPU."""
    device: str | None = None
    """torch device for the hf engine (default: cuda if available, else cpu)."""
    host: str = "127.0.0.1"
    """Address to listen on."""
    port: int = Field(8001, ge=1, le=65535)
    """Port to listen on."""
    max_batch_rows: int = Field(256, ge=1)
    """Most samples (sum of n) generated together; larger requests are refused with 422."""
    batch_wait_ms: float = Field(2.0, ge=0)
    """How long the batcher waits for more requests to join a batch."""
    seed: int = Field(0, ge=0)
    """Seed of unseeded sampling."""
    trust_remote_code: bool = False
    """Allow the model repository's own code to run."""
    max_model_len: int | None = Field(None, ge=16)
    """vllm: context length to allocate for (default: the model's)."""
    memory_fraction: float = Field(0.9, gt=0, le=1)
    """vllm: fraction of GPU memory (on CPU: of the NUMA node's memory) vLLM may take."""
    enforce_eager: bool = False
    """vllm: no CUDA graphs / compilation (faster start, slower decode)."""
    entropy_topk: int = Field(20, ge=1, le=20)
    """vllm: K top log-probs the entropy estimate uses."""
    entropy_tail: TailMode = TailMode.BUCKET
    """vllm: how the estimate accounts for the mass outside the top K."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> RolloutSettings:
        return settings_from_env(cls, ENV_PREFIX, environ)
