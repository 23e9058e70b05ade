"""The DeepSpeed backend on CPU (gloo): same updates as the torch backend, exact resume, two ranks."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from arpo.core.advantages import AdvantageMode
from arpo.localredis import free_port
from arpo.services.learner import checkpoint
from arpo.services.learner.batches import tree_batch
from arpo.services.learner.deepspeed_backend import (
    DeepSpeedLearner,
    DeepSpeedOptions,
    deepspeed_config,
)
from arpo.services.learner.torch_backend import TorchLearner
from tests.integration.learner_helpers import config, make_tree

pytest.importorskip("deepspeed", reason="DeepSpeed is a dev dependency: scripts/bootstrap.sh installs it")

ROOT = Path(__file__).parents[2]


def two_steps(learner: TorchLearner) -> float:
    seqs = tree_batch(make_tree(branching=True), AdvantageMode.SOFT)
    for _ in range(2):
        stats = learner.update(seqs, learner.logprobs(seqs))
    return stats.loss


def test_the_config_comes_from_the_run_config() -> None:
    cfg = config()
    ds = deepspeed_config(cfg, DeepSpeedOptions(zero_stage=3, bf16=True), world_size=4)
    assert ds["zero_optimization"]["stage"] == 3 and ds["bf16"] == {"enabled": True}
    assert ds["gradient_clipping"] == cfg.optim.grad_clip and ds["train_batch_size"] == 4
    assert "optimizer" not in ds  # a named optimizer would be JIT-compiled: ours is torch's AdamW
    with pytest.raises(ValueError, match="zero_stage: must be 0, 1, 2 or 3, got 4"):
        deepspeed_config(cfg, DeepSpeedOptions(zero_stage=4), world_size=1)


@pytest.mark.parametrize("stage", [1, 2, 3])
def test_updates_match_the_torch_backend(model: torch.nn.Module, stage: int) -> None:
    reference = TorchLearner(copy.deepcopy(model), config(lr=1e-3), token_budget=20)
    want_loss = two_steps(reference)
    learner = DeepSpeedLearner(
        copy.deepcopy(model), config(lr=1e-3), DeepSpeedOptions(zero_stage=stage), token_budget=20
    )
    assert two_steps(learner) == pytest.approx(want_loss, abs=1e-6)
    got, want = learner.weights(), reference.weights()
    assert sorted(got) == sorted(want)  # tied weights included, gathered under ZeRO-3
    moved = max(float((want[k] - model.state_dict()[k]).abs().max()) for k in want)
    assert moved > 1e-4
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=0, atol=2e-5)


@pytest.mark.parametrize("stage", [2, 3])
def test_resume_gives_the_same_weights_as_running_straight(
    model: torch.nn.Module, tmp_path: Path, stage: int
) -> None:
    seqs = tree_batch(make_tree(branching=True), AdvantageMode.SOFT)

    def learner() -> DeepSpeedLearner:
        return DeepSpeedLearner(copy.deepcopy(model), config(lr=1e-3), DeepSpeedOptions(zero_stage=stage))

    straight = learner()
    for _ in range(2):
        straight.update(seqs, straight.logprobs(seqs))
    first = learner()
    first.update(seqs, first.logprobs(seqs))
    checkpoint.save(tmp_path, 1, 1, 4, first)
    del first
    resumed = learner()
    assert checkpoint.load(tmp_path, resumed) == checkpoint.Resumed(1, 1, 4)
    resumed.update(seqs, resumed.logprobs(seqs))
    got, want = resumed.weights(), straight.weights()
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=0, atol=0)


@pytest.mark.parametrize("stage", [2, 3])
def test_two_ranks_train_like_one(
    model: torch.nn.Module, tiny_model_dir: Path, tmp_path: Path, stage: int
) -> None:
    reference = TorchLearner(copy.deepcopy(model), config(lr=1e-3), token_budget=20)
    want_loss = two_steps(reference)
    out = tmp_path / "weights.safetensors"
    launcher = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
    env = {k: v for k, v in os.environ.items() if k not in launcher}
    env |= {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
    cmd += ["--master_port", str(free_port())]  # (with port 0 the workers never meet)
    done = subprocess.run(
        [*cmd, str(ROOT / "tests/integration/ds_ranks.py"), str(tiny_model_dir), str(stage), str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert float((tmp_path / "weights.safetensors.loss").read_text()) == pytest.approx(want_loss, abs=1e-6)
    got, want = load_file(str(out)), reference.weights()
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=0, atol=2e-5)
