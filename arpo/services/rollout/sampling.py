"""Token sampling for the HF engine: filtering, per-row seeded draws, and stop-string detection.

Log-probs and entropies are always of the full tempered distribution softmax(logits / T), which is what
the learner recomputes; top-k / top-p only restrict which token is drawn.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch


def filter_probs(probs: torch.Tensor, top_k: torch.Tensor, top_p: torch.Tensor) -> torch.Tensor:
    """Zero what top-k / top-p exclude: (B, V) probabilities, (B,) int, (B,) float -> (B, V), unnormalized.

    top_k = 0 and top_p = 1 switch a row's filter off. The most likely token always survives.
    """
    sorted_probs, order = torch.sort(probs, dim=-1, descending=True)
    vocab = probs.shape[-1]
    ranks = torch.arange(vocab, device=probs.device).expand_as(sorted_probs)
    k = torch.where(top_k > 0, top_k, torch.full_like(top_k, vocab)).unsqueeze(-1)
    drop = ranks >= k
    mass_before = torch.cumsum(sorted_probs, dim=-1) - sorted_probs
    drop |= mass_before >= top_p.unsqueeze(-1)
    drop[:, 0] = False
    return torch.empty_like(probs).scatter_(-1, order, sorted_probs.masked_fill(drop, 0.0))


def draw(
    probs: torch.Tensor, generators: Sequence[torch.Generator | None], shared: torch.Generator | None
) -> torch.Tensor:
    """Sample one token per row of (B, V) probabilities (normalized or not) -> (B,) int64.

    Rows with their own generator (a request seed) draw from it, so a seeded request gives the same
    tokens whatever else shares its batch; the other rows draw together from `shared`. Both methods are
    exact samples from p. On CUDA: argmax(p / E) with E ~ Exp(1) i.i.d. (the trick vLLM uses: no scans,
    graph-friendly). On CPU, where drawing V random numbers per row is the expensive part (~30 ms per
    row for a 152k vocabulary here, as is torch.multinomial), inverse-CDF sampling with one uniform per
    row: the first token whose cumulative probability exceeds u times the total.
    """
    if probs.device.type == "cpu":
        return _draw_inverse_cdf(probs, generators, shared)
    noise = torch.empty_like(probs)
    if all(g is None for g in generators):
        noise.exponential_(generator=shared)
    else:
        for i, g in enumerate(generators):
            noise[i].exponential_(generator=g if g is not None else shared)
    return torch.argmax(probs / noise, dim=-1)


def _draw_inverse_cdf(
    probs: torch.Tensor, generators: Sequence[torch.Generator | None], shared: torch.Generator | None
) -> torch.Tensor:
    uniforms = torch.empty(probs.shape[0], dtype=torch.float64)
    if all(g is None for g in generators):
        uniforms.uniform_(generator=shared)
    else:
        for i, g in enumerate(generators):
            uniforms[i : i + 1].uniform_(generator=g if g is not None else shared)
    cdf = probs.double().cumsum(dim=-1)
    # right=True skips zero-probability tokens (flat stretches of the CDF); u < 1 keeps it in range.
    index = torch.searchsorted(cdf, (uniforms * cdf[:, -1]).unsqueeze(-1), right=True).squeeze(-1)
    return index.clamp(max=probs.shape[-1] - 1)


class StopMatcher:
    """Finds stop strings that end inside the newest token, decoding only a short tail of tokens.

    Most tokens cannot end a stop string: unless the newest token's own text holds the last character
    of some stop string (or an undecodable partial character), nothing more is decoded.
    """

    def __init__(
        self, decode: Callable[[list[int]], str], stops: Sequence[str], piece: Callable[[int], str]
    ) -> None:
        self._decode = decode
        self._piece = piece
        self._stops = [s for s in stops if s]
        self._last_chars = {s[-1] for s in self._stops}
        longest = max((len(s) for s in self._stops), default=0)
        # A token decodes to at least one character, so this many tokens cover the longest stop string.
        self._window = longest + 2

    def match(self, token_ids: list[int]) -> str | None:
        """The stop string completed by the last token of `token_ids`, if any."""
        if not self._stops or not token_ids:
            return None
        piece = self._piece(token_ids[-1])
        if "\ufffd" not in piece and not any(ch in piece for ch in self._last_chars):
            return None
        tail = token_ids[-self._window :]
        before = self._decode(tail[:-1])
        text = self._decode(tail)
        for stop in self._stops:
            start = text.find(stop, max(0, len(before) - len(stop) + 1))
            if start >= 0:
                return stop
        return None
