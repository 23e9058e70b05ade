"""The client the agent workers and the learner use to reach a rollout server (see `arpo.services.http`)."""

from __future__ import annotations

from collections.abc import Sequence

from arpo.proto.rollout import (
    GenerateBatch,
    GenerateBatchResponse,
    GenerateRequest,
    GenerateResponse,
    WeightsStatus,
    WeightsUpdate,
)
from arpo.services.http import JsonClient, ServiceError

RolloutError = ServiceError
"""What a refused rollout request raises (status code and the server's detail)."""


class RolloutClient(JsonClient):
    """Async client of one rollout server."""

    service = "rollout server"
    default_url = "http://127.0.0.1:8001"
    local_url = "http://rollout.local"

    async def generate(self, requests: Sequence[GenerateRequest]) -> list[GenerateResponse]:
        batch = GenerateBatch(requests=list(requests))
        return (await self._post("/v1/generate", batch, GenerateBatchResponse)).responses

    async def update_weights(self, update: WeightsUpdate) -> WeightsStatus:
        return await self._post("/v1/weights", update, WeightsStatus)
