"""The OpenAI-compatible subset the rollout server speaks, so the official `openai` client works.

Only what evaluating and debugging a checkpoint needs: completions and chat completions with
max_tokens, temperature, top_p, n, stop, seed and (top) log-probs. Unsupported options are refused by
name (streaming, echo, penalties) rather than silently ignored.
"""

from __future__ import annotations

from typing import Literal, Self

from pydantic import Field, model_validator

from arpo.proto.base import Message, TokenId


class _Options(Message):
    """Sampling options common to both endpoints."""

    model: str | None = None
    """Ignored beyond logging: the server serves one model."""
    max_tokens: int | None = Field(None, ge=1)
    """Most tokens to generate (default 16 for completions, the context for chat)."""
    temperature: float = Field(1.0, ge=0, le=2)
    """Sampling temperature; 0 = greedy."""
    top_p: float = Field(1.0, gt=0, le=1)
    """Nucleus sampling mass."""
    n: int = Field(1, ge=1, le=128)
    """Choices per prompt."""
    stop: str | list[str] | None = None
    """Up to 4 stop sequences; the returned text ends before them."""
    seed: int | None = Field(None, ge=0)
    """Seed for reproducible sampling."""
    stream: bool = False
    """Streaming is not supported; must be false."""
    presence_penalty: float = 0.0
    """Not supported; must be 0."""
    frequency_penalty: float = 0.0
    """Not supported; must be 0."""
    user: str | None = None
    """Ignored."""

    @model_validator(mode="after")
    def _supported(self) -> Self:
        if self.stream:
            raise ValueError("stream: streaming responses are not supported; send stream=false")
        if self.presence_penalty or self.frequency_penalty:
            raise ValueError("presence_penalty / frequency_penalty: penalties are not supported; send 0")
        if isinstance(self.stop, list) and len(self.stop) > 4:
            raise ValueError("stop: at most 4 stop sequences")
        return self

    @property
    def stops(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])


class CompletionRequest(_Options):
    """POST /v1/completions."""

    prompt: str | list[TokenId] | list[str] = Field(min_length=1)
    """A prompt, a list of token ids, or a list of prompts."""
    logprobs: int | None = Field(None, ge=0, le=20)
    """Return log-probs of the chosen tokens and of this many alternatives."""
    echo: bool = False
    """Not supported; must be false."""

    @model_validator(mode="after")
    def _no_echo(self) -> Self:
        if self.echo:
            raise ValueError("echo: echoing the prompt is not supported; send echo=false")
        return self


class Usage(Message):
    """Token counts of a response."""

    prompt_tokens: int
    """Prompt tokens (per prompt, counted once)."""
    completion_tokens: int
    """Generated tokens over all choices."""
    total_tokens: int
    """Their sum."""


class CompletionLogprobs(Message):
    """Legacy completions log-prob layout."""

    tokens: list[str]
    """Text of each generated token."""
    token_logprobs: list[float]
    """Log-prob of each generated token."""
    top_logprobs: list[dict[str, float]] | None
    """Per token, the alternatives' text -> log-prob."""
    text_offset: list[int]
    """Character offset of each token in the choice's text."""


class CompletionChoice(Message):
    """One generated continuation."""

    index: int
    """Position among all choices (prompt-major)."""
    text: str
    """Generated text, ending before any stop sequence."""
    finish_reason: Literal["stop", "length"]
    """stop: a stop sequence or end of sequence; length: max_tokens."""
    logprobs: CompletionLogprobs | None = None
    """Log-probs, when requested."""


class CompletionResponse(Message):
    """Response of /v1/completions."""

    id: str
    """Response id."""
    object: Literal["text_completion"] = "text_completion"
    """Object type."""
    created: int
    """Unix time."""
    model: str
    """Model served."""
    choices: list[CompletionChoice]
    """The choices."""
    usage: Usage
    """Token counts."""


class ChatMessage(Message):
    """One chat turn."""

    role: Literal["system", "user", "assistant", "tool"]
    """Speaker."""
    content: str
    """Text."""


class ChatRequest(_Options):
    """POST /v1/chat/completions."""

    messages: list[ChatMessage] = Field(min_length=1)
    """The conversation so far."""
    max_completion_tokens: int | None = Field(None, ge=1)
    """Newer name of max_tokens."""
    logprobs: bool = False
    """Return log-probs of the chosen tokens."""
    top_logprobs: int | None = Field(None, ge=0, le=20)
    """Alternatives per token (needs logprobs=true)."""

    @model_validator(mode="after")
    def _top_needs_logprobs(self) -> Self:
        if self.top_logprobs and not self.logprobs:
            raise ValueError("top_logprobs: requires logprobs=true")
        return self


class ChatTopLogprob(Message):
    """An alternative token."""

    token: str
    """Its text."""
    logprob: float
    """Its log-prob."""
    bytes: list[int]
    """UTF-8 bytes of its text."""


class ChatTokenLogprob(ChatTopLogprob):
    """A chosen token with its alternatives."""

    top_logprobs: list[ChatTopLogprob]
    """The most likely alternatives at that step."""


class ChatLogprobs(Message):
    """Chat log-probs."""

    content: list[ChatTokenLogprob]
    """One entry per generated token."""


class ChatChoice(Message):
    """One assistant reply."""

    index: int
    """Position among the choices."""
    message: ChatMessage
    """The reply."""
    finish_reason: Literal["stop", "length"]
    """stop: a stop sequence or end of sequence; length: max_tokens."""
    logprobs: ChatLogprobs | None = None
    """Log-probs, when requested."""


class ChatResponse(Message):
    """Response of /v1/chat/completions."""

    id: str
    """Response id."""
    object: Literal["chat.completion"] = "chat.completion"
    """Object type."""
    created: int
    """Unix time."""
    model: str
    """Model served."""
    choices: list[ChatChoice]
    """The choices."""
    usage: Usage
    """Token counts."""
