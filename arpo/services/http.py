"""What every service's HTTP side shares: 422 errors that name the field, and a JSON client with retries.

Clients work over HTTP (`base_url`) or in-process (`in_process(app)`: httpx's ASGI transport, the same
request and response path without a socket). Every call has a timeout; connection failures are retried
with exponential backoff; a 4xx or 5xx answer raises `ServiceError` carrying the server's explanation
(a 429 or 503 is retried first, honouring Retry-After).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any, Self, TypeVar

import httpx
from fastapi import HTTPException
from pydantic import BaseModel

log = logging.getLogger(__name__)
T = TypeVar("T", bound=BaseModel)
RETRIED = (httpx.ConnectError, httpx.ConnectTimeout, httpx.RemoteProtocolError, httpx.ReadError)
BUSY = (429, 503)


def invalid(loc: Sequence[str | int], message: str, status: int = 422) -> HTTPException:
    """An error in FastAPI's validation format, naming the offending field."""
    return HTTPException(status, detail=[{"loc": ["body", *loc], "msg": message, "type": "value_error"}])


class ServiceError(RuntimeError):
    """A service refused a request or kept failing."""

    def __init__(self, service: str, status_code: int, detail: Any) -> None:
        super().__init__(f"{service} answered {status_code}: {detail}")
        self.status_code = status_code
        self.detail = detail


class JsonClient:
    """Async JSON client of one service; subclasses add the typed calls."""

    service = "service"
    default_url = "http://127.0.0.1:8000"
    local_url = "http://service.local"

    def __init__(
        self,
        base_url: str | None = None,
        timeout_s: float = 600.0,
        retries: int = 3,
        backoff_s: float = 0.5,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        url = base_url or self.default_url
        self._http = httpx.AsyncClient(base_url=url, timeout=timeout_s, transport=transport)
        self._retries = retries
        self._backoff_s = backoff_s

    @classmethod
    def in_process(cls, app: Any, timeout_s: float = 600.0, retries: int = 0) -> Self:
        """A client calling `app` directly (embedded mode and tests)."""
        return cls(
            cls.local_url, timeout_s=timeout_s, retries=retries, transport=httpx.ASGITransport(app=app)
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._http.aclose()

    async def health(self) -> dict[str, Any]:
        response = await self._send("GET", "/healthz", None)
        return dict(response.json())

    async def _post(self, path: str, body: BaseModel, out: type[T]) -> T:
        response = await self._send("POST", path, body.model_dump_json())
        return out.model_validate_json(response.content)

    async def _send(self, method: str, path: str, content: str | None) -> httpx.Response:
        headers = {"content-type": "application/json"} if content is not None else None
        for attempt in range(self._retries + 1):
            last = attempt == self._retries
            delay = self._backoff_s * 2**attempt
            try:
                response = await self._http.request(method, path, content=content, headers=headers)
            except RETRIED as err:
                if last:
                    raise
                log.warning("%s %s %s failed (%s); retrying in %.1fs", self.service, method, path, err, delay)
                await asyncio.sleep(delay)
                continue
            if response.status_code in BUSY and not last:
                retry_after = response.headers.get("retry-after", "")
                await asyncio.sleep(float(retry_after) if retry_after.isdigit() else delay)
                continue
            if response.status_code >= 400:
                try:
                    detail = response.json().get("detail", response.text)
                except ValueError:
                    detail = response.text
                raise ServiceError(self.service, response.status_code, detail)
            return response
        raise AssertionError("unreachable")
