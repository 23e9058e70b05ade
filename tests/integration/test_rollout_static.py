"""The static-cache decode path (the HF engine's GPU default) gives what the dynamic path gives."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from arpo.proto.rollout import GenerateRequest, SamplingParams
from arpo.services.rollout.hf import HFEngine

TEXTS = ["<", "<think>I should compute", "The quick brown fox jumps over"]


@pytest.fixture
def engines(tiny_model_dir: Path) -> tuple[HFEngine, HFEngine]:
    device = os.environ.get("ARPO_TEST_DEVICE", "cpu")
    dynamic = HFEngine.from_pretrained(str(tiny_model_dir), dtype="float32", device=device, static=False)
    # ARPO_TEST_COMPILE=1 also compiles the step (CUDA graphs on a GPU); slow, so off by default.
    compiled = os.environ.get("ARPO_TEST_COMPILE") == "1"
    static = HFEngine(dynamic.model, dynamic.tokenizer, "static", static=True, compile_step=compiled)
    return dynamic, static


@pytest.mark.parametrize("sampling", [{"temperature": 0}, {"seed": 4}, {"seed": 5, "top_p": 0.8}])
def test_static_matches_dynamic(engines: tuple[HFEngine, HFEngine], sampling: dict[str, object]) -> None:
    dynamic, static = engines
    requests = [
        GenerateRequest(
            prompt_token_ids=dynamic.encode(t),
            sampling=SamplingParams.model_validate(
                {"n": 2, "max_tokens": 15, "stop": ["</python>"], **sampling}
            ),
        )
        for t in TEXTS
    ]
    for a, b in zip(dynamic.generate(requests), static.generate(requests), strict=True):
        for c, d in zip(a.completions, b.completions, strict=True):
            assert c.token_ids == d.token_ids
            assert c.finish_reason == d.finish_reason
            assert c.logprobs == pytest.approx(d.logprobs, abs=1e-4)
            assert c.entropies == pytest.approx(d.entropies, abs=1e-4)


def test_static_rows_of_different_lengths_finish_independently(engines: tuple[HFEngine, HFEngine]) -> None:
    _, static = engines
    requests = [
        GenerateRequest(prompt_token_ids=[5, 6], sampling=SamplingParams(max_tokens=3, stop=[])),
        GenerateRequest(prompt_token_ids=[7, 8, 9], sampling=SamplingParams(max_tokens=11, stop=[], n=3)),
    ]
    short, long = static.generate(requests)
    assert [len(c.token_ids) for c in short.completions] == [3]
    assert [len(c.token_ids) for c in long.completions] == [11, 11, 11]
