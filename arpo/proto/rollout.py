"""Messages of the rollout service: generate continuations with per-token log-probs and entropies."""

from __future__ import annotations

from enum import StrEnum
from typing import Self

from pydantic import Field, model_validator

from arpo.core.tags import STOP_STRINGS
from arpo.proto.base import Id, Message, TokenId, check_parallel


class FinishReason(StrEnum):
    """Why a completion ended."""

    STOP = "stop"
    EOS = "eos"
    LENGTH = "length"


class SamplingParams(Message):
    """How to sample continuations of one prompt."""

    n: int = Field(1, ge=1, le=256)
    """Samples to draw; they share one prefill of the prompt."""
    temperature: float = Field(1.0, gt=0)
    """Softmax temperature; entropies are of the tempered distribution."""
    top_p: float = Field(1.0, gt=0, le=1)
    """Nucleus sampling mass (1.0 = off)."""
    top_k: int = Field(0, ge=0)
    """Sample among the k most likely tokens only (0 = off)."""
    max_tokens: int = Field(512, ge=1)
    """Most tokens to generate per sample."""
    stop: list[str] = Field(default_factory=lambda: list(STOP_STRINGS))
    """Stop strings, detected on decoded text and kept in the output (the tool closing tags)."""
    seed: int | None = Field(None, ge=0)
    """Seed of this request's sampling; None = engine's own stream."""


class GenerateRequest(Message):
    """Continue one token-id prefix."""

    prompt_token_ids: list[TokenId] = Field(min_length=1)
    """The prefix to continue (prompt, and any earlier segments and tool results)."""
    sampling: SamplingParams = SamplingParams()
    """Sampling parameters."""
    request_id: Id | None = None
    """Caller's id for logs and tracing."""


class Completion(Message):
    """One sampled continuation, with one entry per generated token in each array."""

    token_ids: list[TokenId]
    """Generated token ids (stop string and EOS token included)."""
    logprobs: list[float]
    """Log-prob of each generated token under the sampling distribution."""
    entropies: list[float]
    """Entropy (nats) of the distribution each token was sampled from."""
    text: str
    """Decoded text of `token_ids`."""
    finish_reason: FinishReason
    """stop: a stop string was produced; eos: end-of-sequence token; length: max_tokens reached."""
    stop_string: str | None = None
    """The stop string that ended generation, when finish_reason is stop."""

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        check_parallel(self, "token_ids", "logprobs", "entropies")
        if (self.finish_reason == FinishReason.STOP) != (self.stop_string is not None):
            raise ValueError("stop_string must be set exactly when finish_reason is 'stop'")
        if any(lp > 0 for lp in self.logprobs):
            raise ValueError("logprobs must be <= 0")
        if any(h < 0 for h in self.entropies):
            raise ValueError("entropies must be >= 0")
        return self


class GenerateResponse(Message):
    """The completions of one GenerateRequest."""

    completions: list[Completion] = Field(min_length=1)
    """`n` completions, in sample order."""
    policy_version: int = Field(ge=0)
    """Version of the weights that produced every token of this response."""
    prompt_tokens: int = Field(ge=1)
    """Length of the prompt prefix."""
    cached_prompt_tokens: int = Field(0, ge=0)
    """Prompt tokens served from a prefix cache instead of recomputed."""
