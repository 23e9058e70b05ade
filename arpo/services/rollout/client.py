"""The client the agent workers and the learner use to reach a rollout server.

Over HTTP (`RolloutClient(base_url=...)`) or in-process (`RolloutClient.in_process(app)`, httpx's ASGI
transport: the same request and response path without a socket). Every call has a timeout; connection
failures are retried with exponential backoff; a 4xx answer raises `RolloutError` carrying the server's
explanation and is never retried.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel

from arpo.proto.rollout import (
    GenerateBatch,
    GenerateBatchResponse,
    GenerateRequest,
    GenerateResponse,
    WeightsStatus,
    WeightsUpdate,
)

log = logging.getLogger(__name__)
T = TypeVar("T", bound=BaseModel)
RETRIED = (httpx.ConnectError, httpx.ConnectTimeout, httpx.RemoteProtocolError, httpx.ReadError)


class RolloutError(RuntimeError):
    """The rollout server refused a request (4xx) or kept failing."""

    def __init__(self, status_code: int, detail: Any) -> None:
        super().__init__(f"rollout server answered {status_code}: {detail}")
        self.status_code = status_code
        self.detail = detail


class RolloutClient:
    """Async client of one rollout server."""

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8001",
        timeout_s: float = 600.0,
        retries: int = 3,
        backoff_s: float = 0.5,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._http = httpx.AsyncClient(base_url=base_url, timeout=timeout_s, transport=transport)
        self._retries = retries
        self._backoff_s = backoff_s

    @classmethod
    def in_process(cls, app: Any, timeout_s: float = 600.0) -> RolloutClient:
        """A client calling `app` directly (embedded mode and tests)."""
        return cls("http://rollout.local", timeout_s, retries=0, transport=httpx.ASGITransport(app=app))

    async def __aenter__(self) -> RolloutClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._http.aclose()

    async def generate(self, requests: Sequence[GenerateRequest]) -> list[GenerateResponse]:
        batch = GenerateBatch(requests=list(requests))
        return (await self._post("/v1/generate", batch, GenerateBatchResponse)).responses

    async def update_weights(self, update: WeightsUpdate) -> WeightsStatus:
        return await self._post("/v1/weights", update, WeightsStatus)

    async def health(self) -> dict[str, Any]:
        response = await self._send("GET", "/healthz", None)
        return dict(response.json())

    async def _post(self, path: str, body: BaseModel, out: type[T]) -> T:
        response = await self._send("POST", path, body.model_dump_json())
        return out.model_validate_json(response.content)

    async def _send(self, method: str, path: str, content: str | None) -> httpx.Response:
        headers = {"content-type": "application/json"} if content is not None else None
        for attempt in range(self._retries + 1):
            try:
                response = await self._http.request(method, path, content=content, headers=headers)
            except RETRIED as err:
                if attempt == self._retries:
                    raise
                delay = self._backoff_s * 2**attempt
                log.warning("rollout %s %s failed (%s); retrying in %.1fs", method, path, err, delay)
                await asyncio.sleep(delay)
                continue
            if response.status_code >= 400:
                try:
                    detail = response.json().get("detail", response.text)
                except ValueError:
                    detail = response.text
                raise RolloutError(response.status_code, detail)
            return response
        raise AssertionError("unreachable")
