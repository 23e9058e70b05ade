"""Messages of the tool service: a tool call and its result, search hits."""

from __future__ import annotations

from typing import Self

from pydantic import Field, model_validator

from arpo.core.tags import ToolName
from arpo.proto.base import Message


class ToolCall(Message):
    """One call of a tool by a trajectory."""

    tool: ToolName
    """Which tool: python or search."""
    content: str = Field(max_length=100_000)
    """Code to run or the search query: the text between the tool's tags."""
    timeout_s: float | None = Field(None, gt=0, le=600)
    """Wall-clock limit of this call; None = the service's default."""


class ToolResult(Message):
    """What a tool call returned. Failures are results the model sees, never dropped."""

    ok: bool
    """The call ran to completion without error."""
    output: str
    """Text shown to the model inside <result> (stdout, or formatted search hits)."""
    error: str | None = None
    """Why the call failed, e.g. 'TimeoutError after 10s'; set exactly when ok is false."""
    timed_out: bool = False
    """The call hit its wall-clock limit."""
    truncated: bool = False
    """Output was cut at the service's size cap."""
    duration_s: float = Field(0.0, ge=0)
    """Wall-clock time the call took."""

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.ok == bool(self.error):
            raise ValueError("error must be set exactly when ok is false")
        if self.timed_out and self.ok:
            raise ValueError("a timed-out call cannot be ok")
        return self


class SearchHit(Message):
    """One document returned by a search."""

    doc_id: str = Field(min_length=1)
    """The document's id in its index (or its URL for web search)."""
    title: str
    """Document title."""
    text: str
    """The passage shown to the model."""
    score: float
    """Relevance score; higher is better, comparable within one response only."""
    url: str | None = None
    """Source URL, for web results."""
