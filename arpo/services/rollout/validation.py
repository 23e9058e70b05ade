"""Request checks that need the engine or the server's limits; errors in FastAPI's 422 format."""

from __future__ import annotations

from collections.abc import Sequence

from arpo.proto.rollout import GenerateRequest
from arpo.services.http import invalid
from arpo.services.rollout.engine import Engine
from arpo.services.rollout.settings import RolloutSettings


def check_batch(engine: Engine, settings: RolloutSettings, requests: Sequence[GenerateRequest]) -> None:
    """What pydantic cannot know: the model's context and vocabulary, the server's batch limit."""
    rows = sum(r.sampling.n for r in requests)
    if rows > settings.max_batch_rows:
        raise invalid(
            ["requests"],
            f"{rows} samples (sum of n) exceed this server's max_batch_rows {settings.max_batch_rows}",
        )
    for i, req in enumerate(requests):
        if len(req.prompt_token_ids) >= engine.max_context_tokens:
            raise invalid(
                ["requests", i, "prompt_token_ids"],
                f"{len(req.prompt_token_ids)} tokens do not fit "
                f"the model context of {engine.max_context_tokens}",
            )
        bad = next((t for t in req.prompt_token_ids if t >= engine.vocab_size), None)
        if bad is not None:
            raise invalid(
                ["requests", i, "prompt_token_ids"],
                f"token id {bad} is outside the vocabulary (size {engine.vocab_size})",
            )
