"""The client the agent workers use to reach a tool service (see `arpo.services.http`)."""

from __future__ import annotations

from collections.abc import Sequence

from arpo.proto.tools import (
    PythonRequest,
    SearchRequest,
    SearchResponse,
    ToolBatch,
    ToolBatchResponse,
    ToolCall,
    ToolResult,
)
from arpo.services.http import JsonClient


class ToolsClient(JsonClient):
    """Async client of one tool service (a 429 is retried after its Retry-After)."""

    service = "tool service"
    default_url = "http://127.0.0.1:8002"
    local_url = "http://tools.local"

    async def python(self, code: str, timeout_s: float | None = None) -> ToolResult:
        return await self._post("/v1/python", PythonRequest(code=code, timeout_s=timeout_s), ToolResult)

    async def search(self, query: str, k: int = 5, backend: str | None = None) -> SearchResponse:
        return await self._post(
            "/v1/search", SearchRequest(query=query, k=k, backend=backend), SearchResponse
        )

    async def batch(self, calls: Sequence[ToolCall]) -> list[ToolResult]:
        return (await self._post("/v1/batch", ToolBatch(calls=list(calls)), ToolBatchResponse)).results
