"""Entropy: chunked exact computation against the naive formula; the top-K estimator's guarantees."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from arpo.core.entropy import (
    MAX_CHUNK_ELEMENTS,
    TailMode,
    auto_chunk,
    entropy_from_logits,
    entropy_from_topk,
    logprobs_and_entropies,
    segment_entropy,
    step_distribution,
    step_statistics,
)


def naive_entropy(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    p = torch.softmax(logits.double() / temperature, dim=-1)
    return -(p * torch.log(p)).sum(-1)


@pytest.mark.parametrize("shape", [(7,), (3, 50), (2, 5, 333), (1, 1, 1, 4097)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("chunk_size", [1, 64, 8192])
def test_exact_matches_naive(shape: tuple[int, ...], dtype: torch.dtype, chunk_size: int) -> None:
    logits = (torch.randn(shape, generator=torch.Generator().manual_seed(1)) * 4).to(dtype)
    got = entropy_from_logits(logits, chunk_size=chunk_size)
    want = naive_entropy(logits.float())
    assert got.shape == shape[:-1]
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("temperature", [0.3, 1.0, 2.5])
def test_temperature_scales_logits(temperature: float) -> None:
    logits = torch.randn(4, 6, 100, generator=torch.Generator().manual_seed(2)) * 3
    torch.testing.assert_close(
        entropy_from_logits(logits, temperature, chunk_size=17).double(),
        naive_entropy(logits, temperature),
        rtol=1e-5,
        atol=1e-5,
    )


def test_known_values() -> None:
    uniform = torch.zeros(10)
    assert float(entropy_from_logits(uniform)) == pytest.approx(math.log(10), rel=1e-6)
    peaked = torch.tensor([0.0, -1e4, -1e4])
    assert float(entropy_from_logits(peaked)) == pytest.approx(0.0, abs=1e-6)


def test_masked_logits_are_finite_with_finite_gradient() -> None:
    logits = torch.tensor([[0.0, 1.0, float("-inf"), 2.0]], requires_grad=True)
    h = entropy_from_logits(logits, chunk_size=2)
    want = naive_entropy(torch.tensor([[0.0, 1.0, 2.0]]))
    torch.testing.assert_close(h.double(), want, rtol=1e-6, atol=1e-6)
    h.sum().backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_logprobs_and_entropies_match_log_softmax(dtype: torch.dtype) -> None:
    g = torch.Generator().manual_seed(3)
    logits = (torch.randn(3, 9, 257, generator=g) * 2).to(dtype).requires_grad_(True)
    ids = torch.randint(0, 257, (3, 9), generator=g)
    logps, ents = logprobs_and_entropies(logits, ids, temperature=0.7, chunk_size=64)
    ref_logp = torch.log_softmax(logits.float() / 0.7, -1).gather(-1, ids.unsqueeze(-1)).squeeze(-1)
    torch.testing.assert_close(logps, ref_logp, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(
        ents.double(), naive_entropy(logits.detach().float(), 0.7), rtol=1e-5, atol=1e-5
    )
    # Gradients through the chunked path equal the naive formula's.
    (logps.sum() + ents.sum()).backward()
    chunked_grad = logits.grad.clone()  # type: ignore[union-attr]
    logits.grad = None
    p = torch.softmax(logits.float() / 0.7, -1)
    ref_logp = torch.log_softmax(logits.float() / 0.7, -1).gather(-1, ids.unsqueeze(-1)).squeeze(-1)
    (ref_logp.sum() - (p * torch.log(p)).sum()).backward()
    atol = 1e-4 if dtype == torch.float32 else 2e-2  # bf16 gradients: a couple of ulps
    torch.testing.assert_close(chunked_grad, logits.grad, rtol=1e-3, atol=atol)


def test_auto_chunk_bounds_temporaries_and_matches() -> None:
    small = torch.randn(4, 50)
    assert auto_chunk(small) == 50  # one chunk for a decode step
    big = torch.empty(0).new_empty((64, 2048, 151936), device="meta")
    chunk = auto_chunk(big)
    assert chunk * 64 * 2048 <= MAX_CHUNK_ELEMENTS or chunk == 1024
    logits = torch.randn(3, 7, 3000, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(entropy_from_logits(logits), entropy_from_logits(logits, chunk_size=100))


def test_bad_temperature_and_chunk() -> None:
    with pytest.raises(ValueError, match="temperature"):
        entropy_from_logits(torch.zeros(3), temperature=0.0)
    with pytest.raises(ValueError, match="chunk_size"):
        entropy_from_logits(torch.zeros(3), chunk_size=0)


def _topk(logits: torch.Tensor, k: int) -> torch.Tensor:
    return torch.log_softmax(logits.double(), -1).topk(k, dim=-1).values


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10_000), vocab=st.integers(2, 300), scale=st.floats(0.1, 8.0))
def test_topk_brackets_exact_and_converges(seed: int, vocab: int, scale: float) -> None:
    logits = torch.randn(vocab, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * scale
    exact = float(naive_entropy(logits))
    prev_bucket, prev_uniform = -math.inf, math.inf
    for k in sorted(k for k in {1, 2, 5, vocab // 2 or 1, vocab} if k <= vocab):
        lp = _topk(logits, k)
        bucket = float(entropy_from_topk(lp, vocab, TailMode.BUCKET))
        uniform = float(entropy_from_topk(lp, vocab, TailMode.UNIFORM))
        tol = 1e-4
        # Grouping the tail never raises entropy; spreading it uniformly maximizes it.
        assert bucket <= exact + tol <= uniform + 2 * tol
        # More of the distribution known: the bounds tighten monotonically.
        assert bucket >= prev_bucket - tol and uniform <= prev_uniform + tol
        prev_bucket, prev_uniform = bucket, uniform
    assert prev_bucket == pytest.approx(exact, abs=1e-4)
    assert prev_uniform == pytest.approx(exact, abs=1e-4)


def test_topk_without_tail_is_biased_low() -> None:
    logits = torch.zeros(100, dtype=torch.float64)  # uniform: H = ln 100
    lp = _topk(logits, 10)
    head_only = float(-(lp.exp() * lp).sum())
    assert head_only < float(entropy_from_topk(lp, 100, TailMode.BUCKET)) < math.log(100)
    assert float(entropy_from_topk(lp, 100, TailMode.UNIFORM)) == pytest.approx(math.log(100), abs=1e-6)


def test_topk_handles_zero_probabilities_and_batches() -> None:
    lp = torch.tensor([[0.0, float("-inf")], [math.log(0.5), math.log(0.5)]])
    got = entropy_from_topk(lp, vocab_size=5)
    torch.testing.assert_close(got, torch.tensor([0.0, math.log(2)]))
    with pytest.raises(ValueError, match="K <= vocab_size"):
        entropy_from_topk(torch.zeros(4), vocab_size=3)


def test_segment_entropy_is_mean_of_first_k() -> None:
    assert segment_entropy([1.0, 2.0, 3.0, 100.0], window=3) == pytest.approx(2.0)
    assert segment_entropy([4.0], window=20) == pytest.approx(4.0)  # short segment: not penalized
    assert segment_entropy(torch.tensor([1.0, 3.0]), window=5) == pytest.approx(2.0)
    assert segment_entropy([math.log(4)], window=1, vocab_size=16) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="empty segment"):
        segment_entropy([], window=3)
    with pytest.raises(ValueError, match="window"):
        segment_entropy([1.0], window=0)


def test_step_distribution_and_statistics_match_naive() -> None:
    logits = torch.randn(5, 300, generator=torch.Generator().manual_seed(9)) * 3
    logits[0, :10] = float("-inf")  # masked vocabulary entries
    temps = torch.tensor([0.5, 1.0, 1.0, 2.0, 0.9])[:, None]
    probs = step_distribution(logits, temps)
    torch.testing.assert_close(probs, torch.softmax(logits / temps, -1))
    tokens = torch.tensor([12, 0, 299, 150, 7])
    logps, ents = step_statistics(probs, tokens)
    want_logps = torch.log_softmax(logits / temps, -1).gather(-1, tokens[:, None]).squeeze(-1)
    torch.testing.assert_close(logps, want_logps, rtol=1e-5, atol=1e-5)
    want = torch.stack(
        [naive_entropy(logits[i : i + 1, 10 if i == 0 else 0 :], float(temps[i])) for i in range(5)]
    )
    torch.testing.assert_close(ents.double(), want.squeeze(-1), rtol=1e-5, atol=1e-5)
    _, scalar = step_statistics(step_distribution(logits[1:], 1.0), tokens[1:])
    torch.testing.assert_close(scalar, entropy_from_logits(logits[1:]), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="temperature"):
        step_distribution(logits, 0.0)
