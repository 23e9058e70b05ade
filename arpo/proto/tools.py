"""Messages of the tool service: a tool call and its result, search requests and hits."""

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
    exit_code: int | None = None
    """python: the process's exit status (negative: killed by that signal); None when it timed out or
    for search."""
    duration_ms: float = Field(0.0, ge=0)
    """Wall-clock time the call took, in milliseconds."""
    isolation: str | None = None
    """python: how the code was confined (`namespaces` or `rlimits`, see the tool service's docs)."""

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


class PythonRequest(Message):
    """POST /v1/python: run code in the sandbox."""

    code: str = Field(min_length=1, max_length=100_000)
    """The program; when its last statement is a bare expression, its value is printed."""
    timeout_s: float | None = Field(None, gt=0)
    """Wall-clock limit; None = the service's default; above the service's maximum is refused."""

    @model_validator(mode="after")
    def _not_blank(self) -> Self:
        if not self.code.strip():
            raise ValueError("code is blank")
        return self


class SearchRequest(Message):
    """POST /v1/search: one query against the service's backend (or a named one)."""

    query: str = Field(min_length=1, max_length=2_000)
    """The search query."""
    k: int = Field(5, ge=1, le=50)
    """How many hits to return."""
    backend: str | None = None
    """Which configured backend: `local` (BM25) or a web backend; None = the service's default."""

    @model_validator(mode="after")
    def _not_blank(self) -> Self:
        if not self.query.strip():
            raise ValueError("query is blank")
        return self


class SearchResponse(Message):
    """The hits of one search and the text the model sees."""

    hits: list[SearchHit]
    """Best first."""
    result: ToolResult
    """The hits formatted as numbered pages (`Page 1: title\ntext`), or the error."""
    cached: bool = False
    """Served from the result cache."""


class ToolBatch(Message):
    """POST /v1/batch: several calls, run concurrently."""

    calls: list[ToolCall] = Field(min_length=1, max_length=256)
    """The calls; results come back in the same order."""


class ToolBatchResponse(Message):
    """The results of a ToolBatch, in call order."""

    results: list[ToolResult]
    """One per call."""
