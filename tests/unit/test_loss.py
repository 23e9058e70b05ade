"""The clipped policy loss against a per-token Python reference, and its options one by one."""

from __future__ import annotations

import math

import pytest
import torch

from arpo.core.loss import KLEstimator, LossParams, kl_penalty, masked_mean, policy_loss


def naive_loss(
    logp: list[list[float]],
    old: list[list[float]],
    adv: list[list[float]],
    mask: list[list[int]],
    p: LossParams,
    ref: list[list[float]] | None,
) -> float:
    """Token by token, straight from DESIGN.md §4.5."""
    total, kl_total, n = 0.0, 0.0, 0
    for i in range(len(logp)):
        for t in range(len(logp[i])):
            if not mask[i][t]:
                continue
            r = math.exp(logp[i][t] - old[i][t])
            a = adv[i][t]
            clipped = min(max(r, 1 - p.clip_eps_low), 1 + p.clip_eps_high)
            pg = max(-a * r, -a * clipped)
            if p.dual_clip is not None and a < 0:
                pg = min(pg, -a * p.dual_clip)
            total += pg
            if ref is not None:
                x = ref[i][t] - logp[i][t]
                kl_total += math.exp(x) - x - 1
            n += 1
    return (total + p.kl_coef * kl_total) / max(n, 1)


def random_batch(b: int, t: int, seed: int, dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    old = -torch.rand(b, t, generator=g, dtype=torch.float64) * 3
    logp = old + torch.randn(b, t, generator=g, dtype=torch.float64) * 0.4  # ratios well outside the clip
    adv = torch.randn(b, t, generator=g, dtype=torch.float64)
    mask = (torch.rand(b, t, generator=g) > 0.3).long()
    ref = old + torch.randn(b, t, generator=g, dtype=torch.float64) * 0.2
    return logp.to(dtype), old.to(dtype), adv.to(dtype), mask, ref.to(dtype)


PARAMS = [
    LossParams(),
    LossParams(clip_eps_low=0.2, clip_eps_high=0.28, dual_clip=None),
    LossParams(clip_eps_low=0.1, clip_eps_high=0.1, dual_clip=2.0, kl_coef=0.05),
]


@pytest.mark.parametrize("shape", [(1, 1), (3, 7), (8, 64)])
@pytest.mark.parametrize("params", PARAMS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
def test_matches_naive(shape: tuple[int, int], params: LossParams, dtype: torch.dtype) -> None:
    logp, old, adv, mask, ref = random_batch(*shape, seed=sum(shape), dtype=dtype)
    loss, diag = policy_loss(logp, old, adv, mask, params, ref_logprobs=ref)
    want = naive_loss(
        logp.double().tolist(),
        old.double().tolist(),
        adv.double().tolist(),
        mask.tolist(),
        params,
        ref.double().tolist(),
    )
    tol = {torch.float64: 1e-10, torch.float32: 1e-5, torch.bfloat16: 1e-2}[dtype]
    assert float(loss) == pytest.approx(want, abs=tol, rel=tol)
    assert diag.tokens == int(mask.sum())


def test_gradient_matches_naive_autograd() -> None:
    logp, old, adv, mask, ref = random_batch(4, 16, seed=7)
    params = LossParams(kl_coef=0.1)
    x = logp.clone().requires_grad_(True)
    policy_loss(x, old, adv, mask, params, ref_logprobs=ref)[0].backward()
    got = x.grad
    y = logp.clone().requires_grad_(True)
    ratio = torch.exp(y - old)
    pg = torch.maximum(-adv * ratio, -adv * torch.clamp(ratio, 0.8, 1.2))
    pg = torch.where(adv < 0, torch.minimum(pg, -adv * 3.0), pg)
    k3 = torch.exp(ref - y) - (ref - y) - 1
    ((pg * mask).sum() / mask.sum() + 0.1 * (k3 * mask).sum() / mask.sum()).backward()
    torch.testing.assert_close(got, y.grad)


def one_token(ratio: float, adv: float, params: LossParams) -> tuple[float, float]:
    """Loss and d loss / d logp for a single token."""
    logp = torch.tensor([[math.log(ratio)]], dtype=torch.float64, requires_grad=True)
    old = torch.zeros(1, 1, dtype=torch.float64)
    loss, _ = policy_loss(logp, old, torch.tensor([[adv]], dtype=torch.float64), torch.ones(1, 1), params)
    loss.backward()
    assert logp.grad is not None
    return float(loss.detach()), float(logp.grad)


def test_hand_cases() -> None:
    p = LossParams()
    assert one_token(1.0, 2.0, p) == pytest.approx((-2.0, -2.0))  # on-policy: -A, gradient -A·r
    assert one_token(1.5, 1.0, p) == pytest.approx((-1.2, 0.0))  # A > 0 above 1 + ε: clipped, no gradient
    assert one_token(0.5, 1.0, p) == pytest.approx((-0.5, -0.5))  # A > 0 below 1 - ε: unclipped (pessimistic)
    assert one_token(0.5, -1.0, p) == pytest.approx((0.8, 0.0))  # A < 0 below 1 - ε: clipped
    assert one_token(2.0, -1.0, p) == pytest.approx((2.0, 2.0))  # A < 0 large ratio: unclipped...
    assert one_token(5.0, -1.0, p) == pytest.approx((3.0, 0.0))  # ...until the dual clip c = 3 caps it
    assert one_token(5.0, -1.0, LossParams(dual_clip=None)) == pytest.approx((5.0, 5.0))
    assert one_token(1.25, 1.0, LossParams(clip_eps_high=0.28)) == pytest.approx(
        (-1.25, -1.25)
    )  # clip-higher


def test_entropy_balanced_clip_keeps_gradient_on_upper_clipped_positive_tokens() -> None:
    p = LossParams(clip_eps_high=0.2, entropy_balanced_clip=True)
    loss, grad = one_token(1.5, 1.0, p)
    assert loss == pytest.approx(-1.2)  # value unchanged
    assert grad == pytest.approx(-1.2)  # gradient weight 1 + ε_high instead of 0
    assert one_token(0.5, -1.0, p) == pytest.approx((0.8, 0.0))  # other clipped tokens unchanged
    assert one_token(1.1, 1.0, p) == pytest.approx((-1.1, -1.1))


def test_mask_excludes_tokens_and_token_mean_weighs_by_tokens() -> None:
    logp = torch.zeros(2, 3)
    adv = torch.tensor([[1.0, 1.0, 99.0], [-1.0, 0.0, 0.0]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    loss, diag = policy_loss(logp, logp, adv, mask, LossParams())
    assert float(loss) == pytest.approx(-(1 + 1 - 1) / 3)  # the 99 is masked; mean over 3 tokens
    assert diag.tokens == 3
    assert diag.clip_fraction == 0.0 and diag.ratio_mean == pytest.approx(1.0)
    empty, _ = policy_loss(logp, logp, adv, torch.zeros(2, 3), LossParams())
    assert float(empty) == 0.0


def test_diagnostics() -> None:
    logp = torch.log(torch.tensor([[1.5, 0.5, 1.0, 5.0]]))
    adv = torch.tensor([[1.0, -1.0, 1.0, -1.0]])
    _, d = policy_loss(logp, torch.zeros(1, 4), adv, torch.ones(1, 4), LossParams())
    assert d.clip_fraction == pytest.approx(2 / 4)  # tokens 0 and 1
    assert d.dual_clip_fraction == pytest.approx(1 / 4)  # token 3
    assert d.approx_kl > 0


def test_entropy_bonus_and_kl_requirements() -> None:
    logp, old, adv, mask, _ = random_batch(2, 5, seed=3)
    ents = torch.rand(2, 5, dtype=torch.float64)
    base, _ = policy_loss(logp, old, adv, mask, LossParams(), entropies=ents)
    bonus, d = policy_loss(logp, old, adv, mask, LossParams(entropy_coef=0.5), entropies=ents)
    assert float(base - bonus) == pytest.approx(0.5 * d.entropy)
    with pytest.raises(ValueError, match="ref_logprobs"):
        policy_loss(logp, old, adv, mask, LossParams(kl_coef=0.1))
    with pytest.raises(ValueError, match="entropies"):
        policy_loss(logp, old, adv, mask, LossParams(entropy_coef=0.1))
    with pytest.raises(ValueError, match="share one"):
        policy_loss(logp, old[:, :2], adv, mask, LossParams())


def test_kl_estimators() -> None:
    logp = torch.tensor([-1.0, -2.0, -0.5])
    ref = torch.tensor([-1.5, -1.0, -0.5])
    k3 = kl_penalty(logp, ref, KLEstimator.K3)
    assert (k3 >= 0).all() and float(k3[2]) == 0.0
    torch.testing.assert_close(kl_penalty(logp, ref, KLEstimator.K1), logp - ref)
    torch.testing.assert_close(kl_penalty(logp, ref, KLEstimator.K2), 0.5 * (ref - logp) ** 2)
    # k3 is unbiased for KL(π‖π_ref) when tokens are sampled from π.
    g = torch.Generator().manual_seed(0)
    pi = torch.softmax(torch.randn(6, generator=g, dtype=torch.float64), 0)
    pr = torch.softmax(torch.randn(6, generator=g, dtype=torch.float64), 0)
    exact = float((pi * (pi.log() - pr.log())).sum())
    expectation = float((pi * kl_penalty(pi.log(), pr.log(), KLEstimator.K3)).sum())
    assert expectation == pytest.approx(exact, rel=1e-9)
    assert float(masked_mean(torch.tensor([[1.0, 3.0]]), torch.tensor([[1, 0]]))) == 1.0
