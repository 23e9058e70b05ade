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
    temperature: float = Field(1.0, ge=0)
    """Softmax temperature; 0 = greedy (log-probs and entropies then use temperature 1)."""
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
    ignore_eos: bool = False
    """Keep generating after the end-of-sequence token (benchmarks)."""
    top_logprobs: int = Field(0, ge=0, le=20)
    """Also return the log-probs of the k most likely tokens at each step (0 = off)."""


class GenerateRequest(Message):
    """Continue one token-id prefix."""

    prompt_token_ids: list[TokenId] = Field(min_length=1)
    """The prefix to continue (prompt, and any earlier segments and tool results)."""
    sampling: SamplingParams = SamplingParams()
    """Sampling parameters."""
    request_id: Id | None = None
    """Caller's id for logs and tracing."""


class TopLogprob(Message):
    """One of the most likely tokens at a step."""

    token_id: TokenId
    """The token."""
    logprob: float = Field(le=0)
    """Its log-prob under softmax(logits / temperature)."""


class Completion(Message):
    """One sampled continuation, with one entry per generated token in each array."""

    token_ids: list[TokenId]
    """Generated token ids (stop string and EOS token included)."""
    logprobs: list[float]
    """Log-prob of each token under softmax(logits / temperature) before top-k/top-p (the learner's view)."""
    entropies: list[float]
    """Entropy (nats) of the distribution each token was sampled from."""
    text: str
    """Decoded text of `token_ids` (a stop string ends inside the last token; nothing is cut off)."""
    finish_reason: FinishReason
    """stop: a stop string was produced; eos: end-of-sequence token; length: max_tokens reached."""
    stop_string: str | None = None
    """The stop string that ended generation, when finish_reason is stop."""
    top_logprobs: list[list[TopLogprob]] | None = None
    """Per generated token, the requested most likely alternatives (when top_logprobs > 0)."""

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        check_parallel(self, "token_ids", "logprobs", "entropies")
        if self.top_logprobs is not None and len(self.top_logprobs) != len(self.token_ids):
            raise ValueError("top_logprobs must have one entry per generated token")
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


MAX_BATCH_REQUESTS = 1024


class GenerateBatch(Message):
    """Several prompts generated together (each with its own sampling parameters)."""

    requests: list[GenerateRequest] = Field(min_length=1, max_length=MAX_BATCH_REQUESTS)
    """The prompts to continue."""


class GenerateBatchResponse(Message):
    """One response per request, in request order."""

    responses: list[GenerateResponse]
    """Responses, in the order of `requests`."""


class ProbeSequence(Message):
    """A fixed token sequence and the log-probs the sender's weights give it (the weight-sync guard)."""

    token_ids: list[TokenId] = Field(min_length=2)
    """The sequence to score."""
    logprobs: list[float]
    """log p(token_ids[i+1] | token_ids[:i+1]) at temperature 1, for i = 0 .. len - 2."""

    @model_validator(mode="after")
    def _lengths(self) -> Self:
        if len(self.logprobs) != len(self.token_ids) - 1:
            raise ValueError(
                f"logprobs must have len(token_ids) - 1 = {len(self.token_ids) - 1} entries, "
                f"got {len(self.logprobs)}"
            )
        return self


class WeightsUpdate(Message):
    """Load a new policy version from a directory of safetensors files."""

    path: str = Field(min_length=1)
    """Directory (or single .safetensors file) holding the full state dict, lm_head included."""
    policy_version: int = Field(ge=1)
    """Version the weights become; must be newer than the version served."""
    probe: ProbeSequence | None = None
    """If given, the new weights are refused unless they reproduce these log-probs."""
    tolerance: float = Field(1e-4, gt=0)
    """Largest absolute probe log-prob difference accepted (fp32; use more for bf16)."""


class WeightsStatus(Message):
    """The result of a weight update."""

    accepted: bool
    """The new version is being served."""
    policy_version: int = Field(ge=0)
    """Version served after the call."""
    probe_max_abs_error: float | None = None
    """Largest probe log-prob difference, when a probe was sent."""
    load_s: float = Field(0.0, ge=0)
    """Seconds spent loading and checking."""
    reason: str | None = None
    """Why the update was refused."""
