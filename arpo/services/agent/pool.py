"""The rollout servers a worker talks to, with prefix-cache affinity.

A fork continues its parent's prefix, which the replica that generated the parent may still hold in its
prefix cache (vLLM), so requests name a preferred replica and go there while it is healthy. A replica
that fails a call is skipped for `cooldown_s`; others are taken in turn.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Sequence

import httpx

from arpo.proto.rollout import GenerateRequest, GenerateResponse
from arpo.services.rollout.client import RolloutClient


class RolloutPool:
    def __init__(self, clients: dict[str, RolloutClient], cooldown_s: float = 10.0) -> None:
        if not clients:
            raise ValueError("a rollout pool needs at least one server")
        self.clients, self.cooldown_s = clients, cooldown_s
        self._down_until: dict[str, float] = {}
        self._turn = itertools.cycle(list(clients))

    @classmethod
    def from_urls(cls, urls: Sequence[str], timeout_s: float = 600.0) -> RolloutPool:
        return cls({url: RolloutClient(url, timeout_s=timeout_s) for url in urls})

    def _healthy(self, url: str) -> bool:
        return self._down_until.get(url, 0.0) <= time.monotonic()

    def choose(self, preferred: str | None) -> str:
        """The preferred replica if it is known and healthy, else the next healthy one in turn."""
        if preferred in self.clients and self._healthy(preferred):
            return preferred
        for _ in range(len(self.clients)):
            url = next(self._turn)
            if self._healthy(url):
                return url
        return next(self._turn)  # all cooling down: try anyway

    async def generate(
        self, requests: Sequence[GenerateRequest], replica: str | None = None
    ) -> list[GenerateResponse]:
        url = self.choose(replica)
        try:
            return await self.clients[url].generate(requests)
        except httpx.TransportError:
            self._down_until[url] = time.monotonic() + self.cooldown_s
            raise

    async def close(self) -> None:
        for client in self.clients.values():
            await client.close()
