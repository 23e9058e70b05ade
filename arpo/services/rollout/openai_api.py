"""`/v1/completions` and `/v1/chat/completions`: the OpenAI-compatible subset (see `arpo.proto.openai`).

Requests are translated into GenerateRequests and go through the same batcher and engine as
`/v1/generate`; responses follow OpenAI's layout. Unlike `/v1/generate` (which keeps stop strings, as the
agent loop needs the closing tool tag), the text returned here ends before the stop sequence, as
OpenAI's does.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Literal

from fastapi import APIRouter

from arpo.proto.openai import (
    ChatChoice,
    ChatLogprobs,
    ChatMessage,
    ChatRequest,
    ChatResponse,
    ChatTokenLogprob,
    ChatTopLogprob,
    CompletionChoice,
    CompletionLogprobs,
    CompletionRequest,
    CompletionResponse,
    Usage,
)
from arpo.proto.rollout import Completion, FinishReason, GenerateRequest, GenerateResponse, SamplingParams
from arpo.services.http import invalid
from arpo.services.rollout.engine import Engine
from arpo.services.rollout.settings import RolloutSettings
from arpo.services.rollout.validation import check_batch

Submit = Callable[[list[GenerateRequest]], Awaitable[list[GenerateResponse]]]
DEFAULT_COMPLETION_TOKENS = 16


def _sampling(body: CompletionRequest | ChatRequest, max_tokens: int, top_logprobs: int) -> SamplingParams:
    return SamplingParams(
        n=body.n,
        temperature=body.temperature,
        top_p=body.top_p,
        max_tokens=max_tokens,
        stop=body.stops,
        seed=body.seed,
        top_logprobs=top_logprobs,
    )


def _finish(c: Completion) -> tuple[str, Literal["stop", "length"]]:
    """OpenAI's text (cut before the stop sequence) and finish reason."""
    text = c.text
    if c.finish_reason == FinishReason.STOP and c.stop_string:
        text = text[: text.find(c.stop_string)] if c.stop_string in text else text
    return text, "length" if c.finish_reason == FinishReason.LENGTH else "stop"


def _usage(responses: Sequence[GenerateResponse]) -> Usage:
    prompt = sum(r.prompt_tokens for r in responses)
    generated = sum(len(c.token_ids) for r in responses for c in r.completions)
    return Usage(prompt_tokens=prompt, completion_tokens=generated, total_tokens=prompt + generated)


def _prompt_ids(engine: Engine, prompt: str | list[int] | list[str]) -> list[list[int]]:
    if isinstance(prompt, str):
        prompts = [engine.encode(prompt)]
    elif all(isinstance(p, int) for p in prompt):
        prompts = [[int(p) for p in prompt]]
    else:
        prompts = [engine.encode(str(p)) for p in prompt]
    if any(not p for p in prompts):
        raise invalid(["prompt"], "a prompt encodes to no tokens")
    return prompts


def _legacy_logprobs(engine: Engine, c: Completion) -> CompletionLogprobs:
    pieces = [engine.decode([t]) for t in c.token_ids]
    offsets = [sum(len(p) for p in pieces[:i]) for i in range(len(pieces))]
    top = None
    if c.top_logprobs is not None:
        top = [{engine.decode([a.token_id]): a.logprob for a in alts} for alts in c.top_logprobs]
    return CompletionLogprobs(tokens=pieces, token_logprobs=c.logprobs, top_logprobs=top, text_offset=offsets)


def _chat_logprobs(engine: Engine, c: Completion) -> ChatLogprobs:
    def entry(token_id: int, logprob: float) -> ChatTopLogprob:
        text = engine.decode([token_id])
        return ChatTopLogprob(token=text, logprob=logprob, bytes=list(text.encode()))

    content = []
    for i, (t, lp) in enumerate(zip(c.token_ids, c.logprobs, strict=True)):
        alts = [entry(a.token_id, a.logprob) for a in c.top_logprobs[i]] if c.top_logprobs else []
        content.append(ChatTokenLogprob(**entry(t, lp).model_dump(), top_logprobs=alts))
    return ChatLogprobs(content=content)


def openai_router(engine: Engine, settings: RolloutSettings, submit: Submit) -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["openai"])

    @router.post("/completions")
    async def completions(body: CompletionRequest) -> CompletionResponse:
        sampling = _sampling(body, body.max_tokens or DEFAULT_COMPLETION_TOKENS, body.logprobs or 0)
        requests = [
            GenerateRequest(prompt_token_ids=p, sampling=sampling) for p in _prompt_ids(engine, body.prompt)
        ]
        check_batch(engine, settings, requests)
        responses = await submit(requests)
        choices: list[CompletionChoice] = []
        for r in responses:
            for c in r.completions:
                text, reason = _finish(c)
                lp = _legacy_logprobs(engine, c) if body.logprobs is not None else None
                choices.append(
                    CompletionChoice(index=len(choices), text=text, finish_reason=reason, logprobs=lp)
                )
        return CompletionResponse(
            id=f"cmpl-{uuid.uuid4().hex}",
            created=int(time.time()),
            model=engine.model_name,
            choices=choices,
            usage=_usage(responses),
        )

    @router.post("/chat/completions")
    async def chat(body: ChatRequest) -> ChatResponse:
        prompt = engine.chat_prompt([m.model_dump() for m in body.messages])
        room = engine.max_context_tokens - len(prompt)
        if room < 1:
            raise invalid(["messages"], f"{len(prompt)} prompt tokens leave no room in the context")
        max_tokens = min(body.max_completion_tokens or body.max_tokens or room, room)
        sampling = _sampling(body, max_tokens, body.top_logprobs or 0)
        requests = [GenerateRequest(prompt_token_ids=prompt, sampling=sampling)]
        check_batch(engine, settings, requests)
        responses = await submit(requests)
        choices: list[ChatChoice] = []
        for c in responses[0].completions:
            text, reason = _finish(c)
            message = ChatMessage(role="assistant", content=text)
            lp = _chat_logprobs(engine, c) if body.logprobs else None
            choices.append(ChatChoice(index=len(choices), message=message, finish_reason=reason, logprobs=lp))
        return ChatResponse(
            id=f"chatcmpl-{uuid.uuid4().hex}",
            created=int(time.time()),
            model=engine.model_name,
            choices=choices,
            usage=_usage(responses),
        )

    return router
