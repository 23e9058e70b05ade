"""The clipped policy loss and its diagnostics (DESIGN.md §4.5).

Per model token t (loss mask 1), with ratio r = exp(logp - old_logp) and advantage A:

    pg   = max(-A·r, -A·clip(r, 1 - ε_low, 1 + ε_high))        PPO clipped surrogate (clip-higher: ε_high)
    pg   = min(pg, -A·c)            for A < 0                   dual-clip (c = 3)
    loss = token_mean(pg) + kl_coef·token_mean(k3) - entropy_coef·token_mean(H)

token_mean averages over every loss-mask token of the batch (not per sequence first), so long and short
trajectories weigh by their tokens. k3 = exp(ref - logp) - (ref - logp) - 1 is the low-variance,
non-negative KL(π‖π_ref) estimator.

AEPO entropy-balanced clipping: a token with A > 0 whose ratio is above 1 + ε_high normally gets no
gradient. With the option on it keeps the value of the clipped term but the gradient of (1 + ε_high)·r/r̄
(r̄ = r with gradient stopped), i.e. it is still pushed with weight 1 + ε_high. Tokens with low
probability (high entropy) that the policy just started to favour are the ones clipping silences.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import torch


class KLEstimator(StrEnum):
    """Estimators of KL(π‖π_ref) from log-probs of sampled tokens (Schulman's k1, k2, k3)."""

    K1 = "k1"
    K2 = "k2"
    K3 = "k3"


@dataclass(frozen=True)
class LossParams:
    """The knobs of the policy loss (a view of `RunConfig.loss`)."""

    clip_eps_low: float = 0.2
    clip_eps_high: float = 0.2
    dual_clip: float | None = 3.0
    kl_coef: float = 0.0
    kl_estimator: KLEstimator = KLEstimator.K3
    entropy_coef: float = 0.0
    entropy_balanced_clip: bool = False


@dataclass(frozen=True)
class LossDiagnostics:
    """Per-batch statistics of the loss, all token means over loss-mask tokens (detached floats)."""

    policy_loss: float
    clip_fraction: float
    dual_clip_fraction: float
    approx_kl: float
    kl: float
    entropy: float
    ratio_mean: float
    tokens: int


def kl_penalty(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, estimator: KLEstimator) -> torch.Tensor:
    """Per-token estimate of KL(π‖π_ref) from sampled-token log-probs: (B, T), (B, T) -> (B, T)."""
    log_ratio = ref_logprobs - logprobs
    match estimator:
        case KLEstimator.K1:
            return -log_ratio
        case KLEstimator.K2:
            return 0.5 * log_ratio**2
        case KLEstimator.K3:
            return torch.exp(log_ratio) - log_ratio - 1.0


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Token mean of `values` over mask-1 positions: (B, T), (B, T) -> (); 0 when the mask is empty."""
    m = mask.to(values.dtype)
    return (values * m).sum() / m.sum().clamp(min=1.0)


def _check_inputs(**tensors: torch.Tensor | None) -> None:
    shapes = {name: tuple(t.shape) for name, t in tensors.items() if t is not None}
    if len(set(shapes.values())) != 1:
        raise ValueError(f"loss inputs must share one (B, T) shape, got {shapes}")


def policy_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    loss_mask: torch.Tensor,
    params: LossParams,
    ref_logprobs: torch.Tensor | None = None,
    entropies: torch.Tensor | None = None,
) -> tuple[torch.Tensor, LossDiagnostics]:
    """The clipped-surrogate loss over a (B, T) batch -> (scalar loss, diagnostics).

    `logprobs` (and `entropies`, if the entropy bonus is used) carry gradients; `old_logprobs`,
    `advantages` and `ref_logprobs` are constants. `ref_logprobs` is required when `kl_coef` != 0.
    """
    _check_inputs(
        logprobs=logprobs,
        old_logprobs=old_logprobs,
        advantages=advantages,
        loss_mask=loss_mask,
        ref_logprobs=ref_logprobs,
        entropies=entropies,
    )
    if params.kl_coef != 0.0 and ref_logprobs is None:
        raise ValueError("kl_coef != 0 needs ref_logprobs")
    if params.entropy_coef != 0.0 and entropies is None:
        raise ValueError("entropy_coef != 0 needs entropies")
    # Reduced-precision inputs (bf16) are computed in float32: ratios and token sums need the mantissa.
    dtype = torch.promote_types(logprobs.dtype, torch.float32)
    logprobs = logprobs.to(dtype)
    mask = loss_mask.to(dtype)
    adv = advantages.detach().to(dtype)
    log_ratio = logprobs - old_logprobs.detach().to(dtype)
    ratio = torch.exp(log_ratio)
    upper = 1.0 + params.clip_eps_high
    clipped_ratio = torch.clamp(ratio, 1.0 - params.clip_eps_low, upper)
    if params.entropy_balanced_clip:
        keep = (adv > 0) & (ratio > upper)
        clipped_ratio = torch.where(keep, upper * ratio / ratio.detach(), clipped_ratio)
    pg_unclipped = -adv * ratio
    pg_clipped = -adv * clipped_ratio
    pg = torch.maximum(pg_unclipped, pg_clipped)
    clipped = pg_clipped > pg_unclipped
    dual = torch.zeros_like(clipped)
    if params.dual_clip is not None:
        floor = -adv * params.dual_clip
        dual = (adv < 0) & (pg > floor)
        pg = torch.where(dual, floor, pg)
    loss = masked_mean(pg, mask)
    kl = torch.zeros((), dtype=dtype)
    if ref_logprobs is not None:
        kl = masked_mean(kl_penalty(logprobs, ref_logprobs.detach().to(dtype), params.kl_estimator), mask)
        loss = loss + params.kl_coef * kl
    entropy = torch.zeros((), dtype=dtype)
    if entropies is not None:
        entropy = masked_mean(entropies.to(dtype), mask)
        loss = loss - params.entropy_coef * entropy
    with torch.no_grad():
        diagnostics = LossDiagnostics(
            policy_loss=float(masked_mean(pg, mask)),
            clip_fraction=float(masked_mean(clipped.to(mask.dtype), mask)),
            dual_clip_fraction=float(masked_mean(dual.to(mask.dtype), mask)),
            approx_kl=float(masked_mean(kl_penalty(old_logprobs.to(dtype), logprobs, KLEstimator.K3), mask)),
            kl=float(kl),
            entropy=float(entropy),
            ratio_mean=float(masked_mean(ratio, mask)),
            tokens=int(loss_mask.sum()),
        )
    return loss, diagnostics
