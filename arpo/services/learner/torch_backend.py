"""The plain-torch learner backend (the CPU default; also one CUDA device).

`update` takes one optimizer step on a mini-batch of sequences: micro-batches (bounded by a token budget)
each add their share of the mini-batch's token-mean loss to the gradients, so the step does not depend
on how the sequences were split (tested). The log-prob of token t comes from the logits at t - 1, at the
rollout temperature, with the exact entropy beside it (`arpo.core.entropy.logprobs_and_entropies`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from arpo.config import RunConfig
from arpo.core.entropy import logprobs_and_entropies
from arpo.core.loss import policy_loss
from arpo.services.learner.batches import TrainSequence, micro_batches


@dataclass(frozen=True)
class UpdateStats:
    """One optimizer step, token means over the mini-batch's loss-mask tokens."""

    loss: float
    clip_fraction: float
    approx_kl: float
    entropy: float
    grad_norm: float
    tokens: int


@dataclass(frozen=True)
class _Rows:
    ids: torch.Tensor
    attention: torch.Tensor
    mask: torch.Tensor
    advantages: torch.Tensor


class TorchLearner:
    def __init__(self, model: Any, config: RunConfig, token_budget: int | None = None) -> None:
        """`token_budget` overrides `config.optim.micro_batch_tokens`."""
        self.model, self.config = model, config
        self.token_budget = token_budget or config.optim.micro_batch_tokens
        self.device = next(model.parameters()).device
        optim = config.optim
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=optim.lr, weight_decay=optim.weight_decay)

    def _rows(self, seqs: Sequence[TrainSequence]) -> _Rows:
        """Right-padded (B, T) tensors; mask and advantages shifted to the predicted positions (T - 1)."""
        width = max(len(s.token_ids) for s in seqs)

        def pad(values: list[Any], fill: Any) -> list[Any]:
            return values + [fill] * (width - len(values))

        ids = torch.tensor([pad(s.token_ids, 0) for s in seqs], device=self.device)
        attention = torch.tensor([pad([1] * len(s.token_ids), 0) for s in seqs], device=self.device)
        mask = torch.tensor([pad(s.loss_mask, 0)[1:] for s in seqs], device=self.device)
        adv = torch.tensor(
            [pad(s.advantages, 0.0)[1:] for s in seqs], device=self.device, dtype=torch.float32
        )
        return _Rows(ids, attention, mask, adv)

    def _logprobs(self, rows: _Rows) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.model(input_ids=rows.ids, attention_mask=rows.attention).logits[:, :-1]
        return logprobs_and_entropies(logits, rows.ids[:, 1:], self.config.rollout.temperature)

    @torch.no_grad()
    def logprobs(self, seqs: Sequence[TrainSequence]) -> list[list[float]]:
        """The current policy's log-prob of every token (0.0 for the first), per sequence."""
        out: list[list[float]] = [[] for _ in seqs]
        for group in micro_batches(seqs, self.token_budget):
            rows = self._rows([seqs[i] for i in group])
            logps, _ = self._logprobs(rows)
            for row, i in enumerate(group):
                out[i] = [0.0, *logps[row, : len(seqs[i].token_ids) - 1].tolist()]
        return out

    def update(self, seqs: Sequence[TrainSequence], old_logprobs: Sequence[list[float]]) -> UpdateStats:
        """One optimizer step on `seqs` against `old_logprobs` (parallel to each sequence's tokens)."""
        total = sum(sum(s.loss_mask[1:]) for s in seqs)
        if total == 0:
            raise ValueError("a mini-batch without any loss-mask token")
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        sums = {"loss": 0.0, "clip": 0.0, "kl": 0.0, "entropy": 0.0}
        params = self.config.loss_params
        for group in micro_batches(seqs, self.token_budget):
            rows = self._rows([seqs[i] for i in group])
            width = rows.ids.shape[1]
            old = torch.tensor(
                [(old_logprobs[i] + [0.0] * (width - len(old_logprobs[i])))[1:] for i in group],
                device=self.device,
            )
            logps, ents = self._logprobs(rows)
            loss, diag = policy_loss(
                logps,
                old,
                rows.advantages,
                rows.mask,
                params,
                entropies=ents if params.entropy_coef else None,
            )
            share = diag.tokens / total  # micro-batch token-mean -> mini-batch token-mean
            (loss * share).backward()  # type: ignore[no-untyped-call]
            for key, value in (
                ("loss", float(loss.detach())),
                ("clip", diag.clip_fraction),
                ("kl", diag.approx_kl),
            ):
                sums[key] += value * share
            sums["entropy"] += float((ents.detach() * rows.mask).sum()) / total
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.optim.grad_clip)
        self.optimizer.step()
        self.model.eval()
        return UpdateStats(sums["loss"], sums["clip"], sums["kl"], sums["entropy"], float(grad_norm), total)
