"""Token entropy, the signal ARPO branches on (DESIGN.md §4.2).

`H_t = -sum_j p_tj log p_tj` with `p = softmax(logits / temperature)`.

- `entropy_from_logits` and `logprobs_and_entropies` are exact. They walk the vocabulary in chunks, so
  the float32 temporaries never exceed `MAX_CHUNK_ELEMENTS` whatever the (B, T, V) shape (bf16 logits are
  upcast a chunk at a time); a small tensor, such as one decode step's (B, V), is done in one chunk,
  which keeps the number of kernel launches per step low on GPUs. The HF engine and the learner compute
  entropy this way, from the logits they sample or train on.
- `entropy_from_topk` estimates H from the K largest log-probs, which is all vLLM returns. The mass
  outside the top K, `r = 1 - sum(top-K p)`, is accounted for in one of two ways (`TailMode`):
  `BUCKET` (default) treats it as one extra outcome and adds `-r log r`; `UNIFORM` spreads it evenly over
  the V - K other tokens and adds `-r log(r / (V - K))`. Grouping outcomes never raises entropy and the
  uniform spread maximizes it, so BUCKET <= exact <= UNIFORM: the two bracket the truth and meet as K -> V.
  The reference code used K = 10 and no tail term, which is biased low for every token.
- `segment_entropy` is the mean over a segment's first k tokens (the reference code summed, which made
  short segments look certain).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from enum import StrEnum

import torch

MAX_CHUNK_ELEMENTS = 1 << 26
"""Largest float32 temporary (elements) a chunk may create: 256 MiB."""
MIN_VOCAB_CHUNK = 1024


class TailMode(StrEnum):
    """How `entropy_from_topk` accounts for the probability mass outside the top K."""

    BUCKET = "bucket"
    UNIFORM = "uniform"


def _chunks(vocab_size: int, chunk_size: int) -> range:
    if chunk_size <= 0:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    return range(0, vocab_size, chunk_size)


def auto_chunk(logits: torch.Tensor) -> int:
    """The widest vocabulary chunk whose float32 temporaries stay within MAX_CHUNK_ELEMENTS."""
    vocab = logits.shape[-1]
    rows = max(1, logits.numel() // max(vocab, 1))
    return min(vocab, max(MIN_VOCAB_CHUNK, MAX_CHUNK_ELEMENTS // rows))


def _logsumexp_chunked(logits: torch.Tensor, temperature: float, chunk_size: int) -> torch.Tensor:
    """(..., V) -> (...) float32 log-sum-exp of logits / temperature."""
    parts = [
        torch.logsumexp(logits[..., s : s + chunk_size].float() / temperature, dim=-1)
        for s in _chunks(logits.shape[-1], chunk_size)
    ]
    return parts[0] if len(parts) == 1 else torch.logsumexp(torch.stack(parts, dim=-1), dim=-1)


def _entropy_chunked(
    logits: torch.Tensor, lse: torch.Tensor, temperature: float, chunk_size: int
) -> torch.Tensor:
    """(..., V), (...) -> (...): sum_j p_j * (-log p_j), a vocabulary chunk at a time."""
    total: torch.Tensor | None = None
    for s in _chunks(logits.shape[-1], chunk_size):
        logp = logits[..., s : s + chunk_size].float() / temperature - lse.unsqueeze(-1)
        p = torch.exp(logp)
        # 0 * log 0 = 0 for masked (-inf) logits, without a NaN in either branch's gradient.
        logp = torch.where(p > 0, logp, torch.zeros_like(logp))
        part = -(p * logp).sum(dim=-1)
        total = part if total is None else total + part
    assert total is not None  # a vocabulary has at least one entry
    return total


def _check_temperature(temperature: float) -> None:
    if not temperature > 0 or not math.isfinite(temperature):
        raise ValueError(f"temperature must be a positive finite number, got {temperature}")


def entropy_from_logits(
    logits: torch.Tensor, temperature: float = 1.0, chunk_size: int | None = None
) -> torch.Tensor:
    """Exact entropy of softmax(logits / temperature): (..., V) -> (...), float32, in nats."""
    _check_temperature(temperature)
    chunk = auto_chunk(logits) if chunk_size is None else chunk_size
    lse = _logsumexp_chunked(logits, temperature, chunk)
    return _entropy_chunked(logits, lse, temperature, chunk)


def logprobs_and_entropies(
    logits: torch.Tensor,
    token_ids: torch.Tensor,
    temperature: float = 1.0,
    chunk_size: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-prob of `token_ids` and the entropy, from the same logits in one chunked walk.

    logits (..., V), token_ids (...) int64 -> (logprobs (...), entropies (...)), both float32.
    Differentiable with respect to `logits` (the learner backpropagates through the log-probs).
    """
    _check_temperature(temperature)
    chunk = auto_chunk(logits) if chunk_size is None else chunk_size
    lse = _logsumexp_chunked(logits, temperature, chunk)
    picked = logits.gather(-1, token_ids.unsqueeze(-1)).squeeze(-1).float() / temperature
    return picked - lse, _entropy_chunked(logits, lse, temperature, chunk)


def step_distribution(logits: torch.Tensor, temperature: float | torch.Tensor = 1.0) -> torch.Tensor:
    """One decode step's full distribution: (B, V) logits -> (B, V) float32 probabilities.

    Unchunked, for a sampler that needs the probabilities anyway: a (B, V) step is small, and fewer
    kernels per step matter on GPUs. `temperature` is a positive number or a positive (B, 1) tensor (the
    caller checks tensors: reading them back would stall a GPU every step).
    """
    if not isinstance(temperature, torch.Tensor):
        _check_temperature(temperature)
    return torch.softmax(logits.float() / temperature, dim=-1)


def step_statistics(probs: torch.Tensor, token_ids: torch.Tensor) -> torch.Tensor:
    """(B, V) probabilities of one step, (B,) drawn tokens -> (2, B): the tokens' log-probs and the entropy.

    From the probabilities alone, so a sampler pays two passes over the vocabulary (entropy terms, their
    sum) on top of its softmax. A drawn token has p > 0; the clamp only guards a caller's mistake.
    """
    picked = probs.gather(-1, token_ids.unsqueeze(-1)).squeeze(-1)
    logps = torch.log(picked.clamp_min(torch.finfo(probs.dtype).tiny))
    return torch.stack([logps, torch.special.entr(probs).sum(dim=-1)])


def entropy_from_topk(
    topk_logprobs: torch.Tensor, vocab_size: int, tail: TailMode = TailMode.BUCKET
) -> torch.Tensor:
    """Entropy estimate from the log-probs of the K most likely tokens: (..., K) -> (...), float32.

    `topk_logprobs` are normalized log-probs of K distinct tokens (any order; -inf entries allowed for
    tokens with zero probability). `vocab_size` is V, needed by the UNIFORM tail and to check K <= V.
    """
    k = topk_logprobs.shape[-1]
    if not 0 < k <= vocab_size:
        raise ValueError(f"need 0 < K <= vocab_size, got K={k}, vocab_size={vocab_size}")
    logp = topk_logprobs.float()
    p = torch.exp(logp)
    head = -torch.where(p > 0, p * logp, torch.zeros_like(p)).sum(dim=-1)
    rest = torch.clamp(1.0 - p.sum(dim=-1), min=0.0)
    safe_rest = torch.where(rest > 0, rest, torch.ones_like(rest))
    bucket = -rest * torch.log(safe_rest)
    match tail:
        case TailMode.BUCKET:
            return head + bucket
        case TailMode.UNIFORM:
            others = vocab_size - k
            spread = rest * math.log(others) if others > 0 else torch.zeros_like(rest)
            return head + bucket + spread


def segment_entropy(
    entropies: Sequence[float] | torch.Tensor, window: int, vocab_size: int | None = None
) -> float:
    """Hbar: mean entropy of a segment's first `window` tokens (k in the paper).

    With `vocab_size`, the result is divided by ln V so it lies in [0, 1] (the normalization option).
    A segment always holds at least one generated token (even an immediate end-of-sequence has an
    entropy), so an empty one is a caller bug and raises.
    """
    if window <= 0:
        raise ValueError(f"window must be positive, got {window}")
    values = [float(h) for h in entropies[:window]]
    if not values:
        raise ValueError("segment_entropy of an empty segment: a segment has at least one generated token")
    mean = sum(values) / len(values)
    if vocab_size is not None:
        if vocab_size < 2:
            raise ValueError(f"vocab_size must be >= 2 to normalize, got {vocab_size}")
        mean /= math.log(vocab_size)
    return mean
