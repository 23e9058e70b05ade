"""The DeepSpeed learner backend: ZeRO-1/2/3, bf16, gradient checkpointing, data parallel over ranks.

Same interface and loss as `TorchLearner`; what differs is how gradients are applied (the engine's
backward and step, its gradient clipping), how the full weights are read (gathered under ZeRO-3) and how
the state is saved (DeepSpeed's own checkpoint, partitioned optimizer state included). The DeepSpeed
JSON is generated from the RunConfig (`deepspeed_config`); nobody writes one by hand.

Micro-batches: the engine is told where the mini-batch's gradient-accumulation boundary is (the last
micro-batch), so a mini-batch of any shape is one optimizer step. Across ranks each rank takes every
world-th sequence; ZeRO-2/3 reduce gradients on every backward, so every rank runs as many micro-batches
as the busiest one (extra passes have zero weight) and scales its loss by the world size (the engine
averages gradients over ranks).

No JIT builds: the optimizer is torch's AdamW (fused on CUDA) handed to `deepspeed.initialize`, never
one named in the config (those compile C++/CUDA on first use), and on CPU the shared-memory collective
op is marked unavailable before the first `init_distributed`, so DeepSpeed uses gloo's all-reduce instead
of compiling its shm op (about two minutes per fresh machine; gloo is what a CPU test needs).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from arpo.config import RunConfig
from arpo.localredis import free_port
from arpo.services.learner.batches import TrainSequence, micro_batches
from arpo.services.learner.torch_backend import TorchLearner

TAG = "deepspeed"  # the tag of the engine's checkpoint inside one of our checkpoint directories


@dataclass(frozen=True)
class DeepSpeedOptions:
    """How DeepSpeed runs (per process, not an algorithm knob: see LearnerSettings)."""

    zero_stage: int = 2
    bf16: bool = False
    gradient_checkpointing: bool = False


def deepspeed_config(config: RunConfig, options: DeepSpeedOptions, world_size: int) -> dict[str, Any]:
    """The DeepSpeed JSON for `config`: one engine step per mini-batch, ZeRO at `options.zero_stage`."""
    if options.zero_stage not in (0, 1, 2, 3):
        raise ValueError(f"zero_stage: must be 0, 1, 2 or 3, got {options.zero_stage}")
    return {
        # The engine never sees our batches' shapes: it is told the accumulation boundary explicitly.
        "train_micro_batch_size_per_gpu": 1,
        "gradient_accumulation_steps": 1,
        "train_batch_size": world_size,
        "gradient_clipping": config.optim.grad_clip,
        "bf16": {"enabled": options.bf16},
        "data_types": {"grad_accum_dtype": "fp32"},
        "zero_optimization": {
            "stage": options.zero_stage,
            "contiguous_gradients": True,
            "overlap_comm": False,
            "stage3_gather_16bit_weights_on_model_save": True,
        },
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 2**31 - 1,
        "wall_clock_breakdown": False,
    }


def init_distributed(device: torch.device) -> None:
    """Join the process group (a world of one when no launcher set RANK/WORLD_SIZE)."""
    import deepspeed
    import deepspeed.ops

    if device.type == "cpu":
        # Marks DeepSpeed's CPU shm collective as unavailable, so it is not compiled (see module doc).
        deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
    if "RANK" not in os.environ:
        os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1")
        os.environ.setdefault("MASTER_PORT", str(free_port()))
    deepspeed.init_distributed(dist_backend="gloo" if device.type == "cpu" else "nccl")


class DeepSpeedLearner(TorchLearner):
    def __init__(
        self, model: Any, config: RunConfig, options: DeepSpeedOptions, token_budget: int | None = None
    ) -> None:
        import deepspeed
        import torch.distributed as dist

        device = next(model.parameters()).device
        init_distributed(device)
        self.rank, self.world_size = dist.get_rank(), dist.get_world_size()
        if options.gradient_checkpointing:
            model.gradient_checkpointing_enable()
            model.config.use_cache = False
        super().__init__(model, config, token_budget)
        self.options = options
        engine, optimizer, _, _ = deepspeed.initialize(
            model=model,
            optimizer=self.optimizer,
            config=deepspeed_config(config, options, self.world_size),
        )
        self.engine, self.optimizer = engine, optimizer
        self.policy = engine  # forward passes go through the engine (ZeRO-3 gathers parameters)
        self._boundary = True

    def _optimizer(self, model: Any) -> torch.optim.Optimizer:
        optim = self.config.optim
        fused = next(model.parameters()).is_cuda
        return torch.optim.AdamW(
            model.parameters(), lr=optim.lr, weight_decay=optim.weight_decay, fused=fused
        )

    def plan(self, seqs: Sequence[TrainSequence]) -> list[tuple[list[int], float]]:
        """This rank's micro-batches of a mini-batch, as many as the busiest rank's (zero-weight extras)."""
        w = self.world_size
        ranks = [
            [[i * w + r for i in g] for g in micro_batches(seqs[r::w], self.token_budget)] for r in range(w)
        ]
        longest = max(len(groups) for groups in ranks)
        mine = [(g, float(self.world_size)) for g in ranks[self.rank]]
        return mine + [([0], 0.0)] * (longest - len(mine))

    def _sum_over_ranks(self, values: list[float]) -> list[float]:
        import torch.distributed as dist

        if self.world_size == 1:
            return values
        summed = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(summed)
        return summed.tolist()

    def _zero_grad(self) -> None:
        """The engine clears gradients in its step."""

    def _backward(self, loss: torch.Tensor, last: bool) -> None:
        self.engine.set_gradient_accumulation_boundary(last)
        self.engine.backward(loss)

    def _step(self) -> float:
        self.engine.step()
        norm = self.engine.get_global_grad_norm()
        return float(norm) if norm is not None else 0.0

    def weights(self) -> dict[str, torch.Tensor]:
        """The full state dict; under ZeRO-3 gathered by every rank, returned on rank 0 (others: {})."""
        if self.options.zero_stage == 3:
            return dict(self.engine._zero3_consolidated_16bit_state_dict() or {})
        return dict(self.model.state_dict())

    def save_state(self, directory: Path) -> None:
        self.engine.save_checkpoint(str(directory), tag=TAG)

    def load_state(self, directory: Path) -> None:
        path, _ = self.engine.load_checkpoint(str(directory), tag=TAG)
        if path is None:
            raise RuntimeError(f"{directory}: DeepSpeed found no checkpoint with tag {TAG!r}")
