"""Token sampling: exact frequencies, filters, and seeds that do not depend on the batch."""

from __future__ import annotations

import pytest
import torch

from arpo.services.rollout.sampling import draw, filter_probs


def test_draw_frequencies_match_probabilities() -> None:
    probs = torch.tensor([[0.1, 0.0, 0.6, 0.3]]).repeat(40_000, 1)
    tokens = draw(probs, [None] * 40_000, torch.Generator().manual_seed(0))
    freq = torch.bincount(tokens, minlength=4).double() / 40_000
    assert freq[1] == 0.0  # a zero-probability token is never drawn
    torch.testing.assert_close(
        freq, torch.tensor([0.1, 0.0, 0.6, 0.3], dtype=torch.float64), atol=0.01, rtol=0
    )


def test_unnormalized_and_one_hot_rows() -> None:
    probs = torch.tensor([[0.0, 0.0, 5.0], [2.0, 0.0, 0.0]])
    assert draw(probs, [None, None], None).tolist() == [2, 0]


def test_seeded_rows_ignore_their_neighbours() -> None:
    probs = torch.softmax(torch.randn(3, 50, generator=torch.Generator().manual_seed(1)), -1)
    alone = draw(probs[1:2], [torch.Generator().manual_seed(7)], None)
    together = draw(probs, [None, torch.Generator().manual_seed(7), None], torch.Generator().manual_seed(3))
    assert int(together[1]) == int(alone[0])


@pytest.mark.parametrize(
    ("top_k", "top_p", "kept"), [(2, 1.0, [0, 1]), (0, 0.5, [0]), (0, 0.75, [0, 1]), (0, 1.0, [0, 1, 2, 3])]
)
def test_filter_probs(top_k: int, top_p: float, kept: list[int]) -> None:
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    out = filter_probs(probs, torch.tensor([top_k]), torch.tensor([top_p]))
    assert (out[0] > 0).nonzero().flatten().tolist() == kept
