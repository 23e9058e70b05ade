"""`arpo bench`: measurements printed as one JSON object per line (DESIGN.md §7).

rollout: tokens/s of the HF engine with per-token log-probs and entropy, the same engine without them,
and transformers' `generate` as the baseline, side by side in one process on the same random model.
Every variant generates exactly `new_tokens` per row (end-of-sequence ignored) from the same prompts.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import torch

from arpo.proto.rollout import GenerateRequest, SamplingParams
from arpo.services.rollout.hf import HFEngine
from arpo.tiny import random_model, tiny_tokenizer

PROMPT_TOKENS = 32


def _timed(fn: Callable[[], object], device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def bench_rollout(
    shape: str,
    batches: list[int],
    new_tokens: int,
    device: str,
    vocab_size: int | None,
    dtype: str,
    repeats: int = 3,
    static_baseline: bool = False,
) -> Iterator[dict[str, Any]]:
    """Yield one record per (variant, batch) and a summary of ratios per batch.

    Each variant runs once to warm up, then `repeats` times; the fastest run counts. With
    `static_baseline`, `generate` with a static KV cache (which transformers compiles) is measured too.
    """
    dev = torch.device(device)
    tokenizer = tiny_tokenizer()
    torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype]
    model: Any = random_model(tokenizer, shape, vocab_size=vocab_size).to(dev, torch_dtype)
    engines = {
        "hf_entropy": HFEngine(model, tokenizer, shape, compute_logprobs=True),
        "hf_plain": HFEngine(model, tokenizer, shape, compute_logprobs=False),
    }
    if dev.type == "cuda":  # the default there is the static, CUDA-graph path; also time the dynamic one
        engines["hf_dynamic"] = HFEngine(model, tokenizer, shape, compute_logprobs=True, static=False)
    gen = torch.Generator().manual_seed(0)
    common = {
        "shape": shape,
        "vocab": model.config.vocab_size,
        "device": device,
        "dtype": dtype,
        "new_tokens": new_tokens,
        "threads": torch.get_num_threads(),
    }
    for batch in batches:
        prompts = torch.randint(1, len(tokenizer), (batch, PROMPT_TOKENS), generator=gen)
        sampling = SamplingParams(max_tokens=new_tokens, stop=[], ignore_eos=True)
        requests = [GenerateRequest(prompt_token_ids=p.tolist(), sampling=sampling) for p in prompts]
        runs: dict[str, Callable[[], object]] = {
            name: partial(e.generate, requests) for name, e in engines.items()
        }
        ids = prompts.to(dev)
        runs["generate"] = partial(
            model.generate,
            ids,
            attention_mask=torch.ones_like(ids),
            do_sample=True,
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            pad_token_id=tokenizer.pad_token_id,
        )
        if static_baseline:
            static: dict[str, Any] = {"cache_implementation": "static"}
            runs["generate_static"] = partial(runs["generate"], **static)
        rates = {}
        for name, run in runs.items():
            _timed(run, dev)  # warm-up (allocator, kernels, compilation)
            seconds = min(_timed(run, dev) for _ in range(repeats))
            rates[name] = batch * new_tokens / seconds
            yield {
                "bench": "rollout",
                "variant": name,
                "batch": batch,
                "seconds": round(seconds, 4),
                "tokens_per_s": round(rates[name], 1),
                **common,
            }
        yield {
            "bench": "rollout",
            "variant": "summary",
            "batch": batch,
            **common,
            "entropy_overhead": round(1 - rates["hf_entropy"] / rates["hf_plain"], 4),
            "speedup_vs_generate": round(rates["hf_entropy"] / rates["generate"], 3),
        }
