"""Publishing a policy version to the rollout servers (DESIGN.md §4.6; the weight-sync guard of 2/10).

The full state dict (tied weights written as their own tensors: vLLM otherwise keeps its old output
layer) goes to `<directory>/v<version>/model.safetensors`, written to a temporary directory first and
renamed, so a server never sees half a version. Each server gets the path and a probe: the learner's
log-probs of a fixed sequence, which the server must reproduce after loading or it keeps the old
version. Servers are called concurrently; a failed call is retried; any server that refuses or keeps
failing is named in `PublishError` (the caller excludes it from routing until it catches up).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx
import torch

from arpo.proto.rollout import ProbeSequence, WeightsStatus, WeightsUpdate
from arpo.services.http import ServiceError
from arpo.services.learner.files import atomic_directory, save_weights
from arpo.services.learner.torch_backend import WEIGHTS_FILE, TorchLearner
from arpo.services.rollout.client import RolloutClient


class PublishError(RuntimeError):
    """Some rollout servers did not take the new version: `failed` maps each to why."""

    def __init__(self, version: int, failed: dict[str, str]) -> None:
        super().__init__(f"policy version {version} not taken by {sorted(failed)}: {failed}")
        self.failed = failed


def write_weights(weights: Mapping[str, torch.Tensor], directory: Path, version: int) -> Path:
    """Write version `version` atomically; returns its directory. An existing version is an error."""
    target = directory / f"v{version:06d}"
    with atomic_directory(target) as tmp:
        save_weights(weights, tmp / WEIGHTS_FILE)
    return target


@torch.no_grad()
def probe(model: Any, token_ids: Sequence[int]) -> ProbeSequence:
    """The model's log-probs of `token_ids` at temperature 1 (what the rollout server's score returns)."""
    device = next(model.parameters()).device
    ids = torch.tensor([list(token_ids)], device=device)
    logits = model(input_ids=ids).logits[0, :-1].float()
    logps = torch.log_softmax(logits, dim=-1).gather(-1, ids[0, 1:, None]).squeeze(-1)
    return ProbeSequence(token_ids=list(token_ids), logprobs=[float(x) for x in logps.tolist()])


async def _push(client: RolloutClient, update: WeightsUpdate, retries: int) -> WeightsStatus:
    for attempt in range(retries + 1):
        try:
            return await client.update_weights(update)
        except (httpx.TransportError, ServiceError) as err:
            if attempt == retries or (isinstance(err, ServiceError) and err.status_code < 500):
                raise
            await asyncio.sleep(0.5 * 2**attempt)
    raise AssertionError("unreachable")


async def publish(
    learner: TorchLearner,
    version: int,
    directory: Path,
    servers: dict[str, RolloutClient],
    probe_ids: Sequence[int],
    retries: int = 2,
) -> dict[str, WeightsStatus]:
    """Write `version` and have every server load it; PublishError names the servers that did not."""
    path = await asyncio.to_thread(write_weights, learner.weights(), directory, version)
    update = WeightsUpdate(path=str(path), policy_version=version, probe=probe(learner.model, probe_ids))
    names = list(servers)
    results = await asyncio.gather(
        *(_push(servers[n], update, retries) for n in names), return_exceptions=True
    )
    statuses: dict[str, WeightsStatus] = {}
    failed: dict[str, str] = {}
    for name, result in zip(names, results, strict=True):
        if isinstance(result, BaseException):
            failed[name] = str(result)
        elif not result.accepted or result.policy_version != version:
            failed[name] = f"kept version {result.policy_version}: {result.reason or 'refused'}"
        else:
            statuses[name] = result
    if failed:
        raise PublishError(version, failed)
    return statuses
