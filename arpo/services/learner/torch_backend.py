"""The plain-torch learner backend (the CPU default; also one CUDA device), and the interface of all.

`update` takes one optimizer step on a mini-batch of sequences: micro-batches (bounded by a token budget)
each add their share of the mini-batch's token-mean loss to the gradients, so the step does not depend
on how the sequences were split (tested). Log-probs are token-aligned: entry t is the log-prob of token
t given what precedes it on its root path (0.0 where nothing does), at the rollout temperature, with the
exact entropy beside it (`arpo.core.entropy.logprobs_and_entropies`). A packed tree row (HARD) carries a
4-D attention mask and root-path positions, and its tokens are predicted from `packing.previous`.

With `loss.kl_coef` > 0 a frozen copy of the initial policy is the KL reference (off by default, as in
the paper; it costs one more model in memory and one more forward pass per step).

Backends differ in how gradients are applied (`_backward`, `_step`), how the full weights are read
(`weights`) and how their state is saved (`save_state`, `load_state`); the DeepSpeed backend overrides
exactly these.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from arpo.config import RunConfig
from arpo.core.entropy import logprobs_and_entropies
from arpo.core.loss import policy_loss
from arpo.services.learner.batches import TrainSequence, micro_batches
from arpo.services.learner.files import save_weights

WEIGHTS_FILE = "model.safetensors"
OPTIMIZER_FILE = "optimizer.pt"


@dataclass(frozen=True)
class UpdateStats:
    """One optimizer step, token means over the mini-batch's loss-mask tokens."""

    loss: float
    clip_fraction: float
    approx_kl: float
    ref_kl: float
    entropy: float
    grad_norm: float
    tokens: int


@dataclass(frozen=True)
class _Rows:
    ids: torch.Tensor
    attention: torch.Tensor  # (B, T) for plain rows; (B, 1, T, T) additive for packed trees
    positions: torch.Tensor | None
    previous: torch.Tensor | None  # (B, T) index each token is predicted from, packed rows only
    mask: torch.Tensor  # loss mask, 0 where a token has no prediction
    advantages: torch.Tensor


def _trainable(s: TrainSequence) -> int:
    """Loss-mask tokens that have a prediction (a row's first token has none)."""
    if s.packing is None:
        return sum(s.loss_mask[1:])
    return sum(m for m, p in zip(s.loss_mask, s.packing.previous, strict=True) if p >= 0)


class TorchLearner:
    def __init__(self, model: Any, config: RunConfig, token_budget: int | None = None) -> None:
        """`token_budget` overrides `config.optim.micro_batch_tokens`."""
        self.model, self.config = model, config
        self.token_budget = token_budget or config.optim.micro_batch_tokens
        self.device = next(model.parameters()).device
        self.reference = self._reference(model) if config.loss.kl_coef else None
        self.optimizer = self._optimizer(model)
        self.policy = model  # what forward passes call (a backend may wrap the model)

    def _optimizer(self, model: Any) -> torch.optim.Optimizer:
        optim = self.config.optim
        return torch.optim.AdamW(model.parameters(), lr=optim.lr, weight_decay=optim.weight_decay)

    @staticmethod
    def _reference(model: Any) -> Any:
        reference = copy.deepcopy(model).eval()
        reference.requires_grad_(False)
        return reference

    # --- what a backend overrides -------------------------------------------------------------

    def _backward(self, loss: torch.Tensor, last: bool) -> None:
        """Add `loss`'s gradients; `last`: the mini-batch's final micro-batch."""
        loss.backward()  # type: ignore[no-untyped-call]

    def _zero_grad(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)

    def _step(self) -> float:
        """Clip gradients and step; returns the pre-clip gradient norm."""
        norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.optim.grad_clip)
        self.optimizer.step()
        return float(norm)

    def weights(self) -> dict[str, torch.Tensor]:
        """The full state dict (what is published and served)."""
        return dict(self.model.state_dict())

    def save_state(self, directory: Path) -> None:
        """Model and optimizer into `directory` (a checkpoint's files)."""
        save_weights(self.weights(), directory / WEIGHTS_FILE)
        torch.save(self.optimizer.state_dict(), directory / OPTIMIZER_FILE)

    def load_state(self, directory: Path) -> None:
        from safetensors.torch import load_file

        self.model.load_state_dict(load_file(str(directory / WEIGHTS_FILE)), strict=True)
        self.optimizer.load_state_dict(torch.load(directory / OPTIMIZER_FILE, weights_only=True))

    def plan(self, seqs: Sequence[TrainSequence]) -> list[tuple[list[int], float]]:
        """This process's micro-batches of a mini-batch, each with the factor its loss is scaled by."""
        return [(group, 1.0) for group in micro_batches(seqs, self.token_budget)]

    def _sum_over_ranks(self, values: list[float]) -> list[float]:
        return values

    # --- shared --------------------------------------------------------------------------------

    def _rows(self, seqs: Sequence[TrainSequence]) -> _Rows:
        """Right-padded (B, T) tensors, all token-aligned."""
        width = max(len(s.token_ids) for s in seqs)

        def pad(values: list[Any], fill: Any) -> list[Any]:
            return values + [fill] * (width - len(values))

        def tensor(rows: list[list[Any]], dtype: torch.dtype = torch.long) -> torch.Tensor:
            return torch.tensor(rows, device=self.device, dtype=dtype)

        ids = tensor([pad(s.token_ids, 0) for s in seqs])
        advantages = tensor([pad(s.advantages, 0.0) for s in seqs], torch.float32)
        packed = [s.packing for s in seqs]
        if all(p is None for p in packed):
            mask = tensor([[0, *pad(s.loss_mask, 0)[1:]] for s in seqs])
            attention = tensor([pad([1] * len(s.token_ids), 0) for s in seqs])
            return _Rows(ids, attention, None, None, mask, advantages)
        if any(p is None for p in packed):
            raise ValueError("a micro-batch mixes packed trees and plain sequences")
        visible = torch.zeros(len(seqs), 1, width, width, dtype=torch.bool)
        visible[:, 0] = torch.eye(width, dtype=torch.bool)  # padding sees itself (no empty softmax row)
        previous, positions = [], []
        for row, s in enumerate(seqs):
            assert s.packing is not None
            n = len(s.token_ids)
            visible[row, 0, :n, :n] = s.packing.visible()
            previous.append(pad(s.packing.previous, -1))
            positions.append(pad(s.packing.positions, 0))
        prev = tensor(previous)
        mask = tensor([pad(s.loss_mask, 0) for s in seqs]) * (prev >= 0)
        if getattr(self.model.config, "_attn_implementation", None) == "sdpa":
            attention = visible  # SDPA takes a boolean mask: a quarter of the memory of a float one
        else:
            dtype = next(self.model.parameters()).dtype
            attention = torch.zeros(visible.shape, dtype=dtype).masked_fill(~visible, torch.finfo(dtype).min)
        return _Rows(ids, attention.to(self.device), tensor(positions), prev, mask, advantages)

    def _forward(self, model: Any, rows: _Rows) -> tuple[torch.Tensor, torch.Tensor]:
        """Token-aligned (B, T) log-probs and entropies (0.0 where a token has no prediction)."""
        logits = model(input_ids=rows.ids, attention_mask=rows.attention, position_ids=rows.positions).logits
        temperature = self.config.rollout.temperature
        if rows.previous is None:
            logps, ents = logprobs_and_entropies(logits[:, :-1], rows.ids[:, 1:], temperature)
            zero = logps.new_zeros(logps.shape[0], 1)
            return torch.cat([zero, logps], 1), torch.cat([zero, ents], 1)
        source = rows.previous.clamp(min=0)
        picked = logits.gather(1, source[..., None].expand(-1, -1, logits.shape[-1]))
        logps, ents = logprobs_and_entropies(picked, rows.ids, temperature)
        has = rows.previous >= 0
        return logps * has, ents * has

    def _aligned(self, values: Sequence[list[float]], picked: list[int], rows: _Rows) -> torch.Tensor:
        width = rows.ids.shape[1]
        return torch.tensor(
            [values[i] + [0.0] * (width - len(values[i])) for i in picked], device=self.device
        )

    @torch.no_grad()
    def _logprobs_of(self, model: Any, seqs: Sequence[TrainSequence]) -> list[list[float]]:
        out: list[list[float]] = [[] for _ in seqs]
        for group in micro_batches(seqs, self.token_budget):
            logps, _ = self._forward(model, self._rows([seqs[i] for i in group]))
            for row, i in enumerate(group):
                out[i] = logps[row, : len(seqs[i].token_ids)].tolist()
        return out

    def logprobs(self, seqs: Sequence[TrainSequence]) -> list[list[float]]:
        """The current policy's log-prob of every token, per sequence (token-aligned)."""
        return self._logprobs_of(self.policy, seqs)

    def reference_logprobs(self, seqs: Sequence[TrainSequence]) -> list[list[float]] | None:
        """The KL reference's log-probs, or None without a reference (kl_coef 0)."""
        return None if self.reference is None else self._logprobs_of(self.reference, seqs)

    def update(
        self,
        seqs: Sequence[TrainSequence],
        old_logprobs: Sequence[list[float]],
        ref_logprobs: Sequence[list[float]] | None = None,
    ) -> UpdateStats:
        """One optimizer step on `seqs` against `old_logprobs` (and `ref_logprobs` when kl_coef > 0),
        each parallel to its sequence's tokens."""
        total = sum(_trainable(s) for s in seqs)
        if total == 0:
            raise ValueError("a mini-batch without any loss-mask token")
        if self.config.loss.kl_coef and ref_logprobs is None:
            raise ValueError("loss.kl_coef > 0 needs the reference log-probs")
        self.model.train()
        self._zero_grad()
        sums = {"loss": 0.0, "clip": 0.0, "kl": 0.0, "ref_kl": 0.0, "entropy": 0.0}
        params = self.config.loss_params
        plan = self.plan(seqs)
        for n, (picked, scale) in enumerate(plan):
            rows = self._rows([seqs[i] for i in picked])
            logps, ents = self._forward(self.policy, rows)
            loss, diag = policy_loss(
                logps,
                self._aligned(old_logprobs, picked, rows),
                rows.advantages,
                rows.mask,
                params,
                ref_logprobs=None if ref_logprobs is None else self._aligned(ref_logprobs, picked, rows),
                entropies=ents if params.entropy_coef else None,
            )
            share = diag.tokens / total  # micro-batch token-mean -> mini-batch token-mean
            self._backward(loss * share * scale, last=n == len(plan) - 1)
            if scale == 0.0:
                continue  # a rank's filler pass (data parallel): no tokens of its own
            for key, value in (
                ("loss", float(loss.detach())),
                ("clip", diag.clip_fraction),
                ("kl", diag.approx_kl),
                ("ref_kl", diag.kl),
            ):
                sums[key] += value * share
            sums["entropy"] += float((ents.detach() * rows.mask).sum()) / total
        grad_norm = self._step()
        self.model.eval()
        summed = dict(zip(sums, self._sum_over_ranks(list(sums.values())), strict=True))
        return UpdateStats(
            summed["loss"],
            summed["clip"],
            summed["kl"],
            summed["ref_kl"],
            summed["entropy"],
            grad_norm,
            total,
        )
