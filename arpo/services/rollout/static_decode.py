"""Decoding with a static KV cache and a compiled, CUDA-graph-replayed step (the HF engine's GPU path).

With a dynamic cache every decode step re-enters Python for each layer: a 0.5B model at batch 64 spends
most of a step launching kernels. Here shapes never change during a batch: the batch is padded to a
power of two, the cache to a multiple of 256 positions, and the attention mask is one (B, L) buffer
updated in place. The step is `torch.compile(mode="reduce-overhead")`, which records CUDA graphs and
replays them. Rows that finish stay in the batch (their outputs are ignored) so shapes stay fixed.

Costs: a compilation per (batch bucket, length bucket) the first time it is seen (tens of seconds,
then cached in the process), and wasted work on finished rows at the tail of a batch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

LENGTH_BUCKET = 256


def _bucket_batch(rows: int) -> int:
    return 1 << max(0, (rows - 1).bit_length())


class StaticDecoder:
    """Runs a batch to completion; sampling and bookkeeping stay with the caller."""

    def __init__(self, model: Any, cache_arg: str, pad_id: int, compile_step: bool) -> None:
        self.model = model
        self.cache_arg = cache_arg
        self.pad_id = pad_id
        self.step = model.forward
        if compile_step:
            # One compiled step per model, shared by every engine around it (compilation is the slow part).
            if getattr(model, "_arpo_compiled_step", None) is None:
                model._arpo_compiled_step = torch.compile(
                    model.forward, mode="reduce-overhead", fullgraph=True
                )
            self.step = model._arpo_compiled_step

    def run(
        self,
        prompts: Sequence[Sequence[int]],
        max_new: int,
        sample: Callable[[list[int], torch.Tensor], tuple[torch.Tensor, list[int]]],
        finished: Callable[[int, int], bool],
    ) -> None:
        """Decode until every row is finished.

        `sample(active_rows, logits)` draws for the given rows from their (len(active), V) logits;
        `finished(row, token)` records a token and says whether the row is done.
        """
        from transformers import StaticCache

        device = next(self.model.parameters()).device
        rows, width = len(prompts), max(len(p) for p in prompts)
        batch = _bucket_batch(rows)
        length = -(-(width + max_new) // LENGTH_BUCKET) * LENGTH_BUCKET
        ids = torch.full((batch, width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((batch, length), dtype=torch.long)
        for i, p in enumerate(prompts):
            ids[i, width - len(p) :] = torch.tensor(list(p))
            mask[i, width - len(p) : width] = 1
        mask[rows:, width - 1] = 1  # padding rows attend to one position, so no row is fully masked
        ids, mask = ids.to(device), mask.to(device)
        positions = (mask[:, :width].cumsum(-1) - 1).clamp(min=0)
        cache = StaticCache(config=self.model.config, max_cache_len=length)
        out = self.model(
            input_ids=ids,
            attention_mask=mask[:, :width],
            position_ids=positions,
            cache_position=torch.arange(width, device=device),
            use_cache=True,
            **{self.cache_arg: cache},
        )
        logits = out.logits[:, -1]
        position = positions[:, -1:]
        active = list(range(rows))
        for t in range(max_new):
            index = torch.tensor(active, device=device)
            tokens, token_list = sample(active, logits[index])
            active = [r for r, tok in zip(active, token_list, strict=True) if not finished(r, tok)]
            if not active or width + t + 1 >= length:
                return
            step_tokens = torch.full((batch, 1), self.pad_id, dtype=torch.long, device=device)
            step_tokens[index, 0] = tokens
            mask[:, width + t] = 1
            position = position + 1
            out = self.step(
                input_ids=step_tokens,
                attention_mask=mask,
                position_ids=position,
                cache_position=torch.tensor([width + t], device=device),
                use_cache=True,
                **{self.cache_arg: cache},
            )
            logits = out.logits[:, -1].clone()  # a graph replay overwrites its outputs
