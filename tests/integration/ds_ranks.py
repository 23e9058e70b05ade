"""One rank of a two-process DeepSpeed update (run by torchrun from test_learner_deepspeed.py).

argv: model directory, ZeRO stage, output file. Every rank trains on the same mini-batch (each takes
its share); rank 0 writes the resulting weights.
"""

from __future__ import annotations

import sys
from pathlib import Path

from safetensors.torch import save_file

from arpo.core.advantages import AdvantageMode
from arpo.services.learner.batches import tree_batch
from arpo.services.learner.deepspeed_backend import DeepSpeedLearner, DeepSpeedOptions
from arpo.services.rollout.hf import HFEngine
from tests.integration.learner_helpers import config, make_tree


def main(model_dir: str, stage: str, out: str) -> None:
    model = HFEngine.from_pretrained(model_dir, dtype="float32", device="cpu", static=False).model
    learner = DeepSpeedLearner(
        model, config(lr=1e-3), DeepSpeedOptions(zero_stage=int(stage)), token_budget=20
    )
    seqs = tree_batch(make_tree(branching=True), AdvantageMode.SOFT)
    for _ in range(2):
        stats = learner.update(seqs, learner.logprobs(seqs))
    weights = learner.weights()
    if learner.rank == 0:
        save_file({k: v.contiguous().clone() for k, v in weights.items()}, out)
        Path(out + ".loss").write_text(repr(stats.loss))


if __name__ == "__main__":
    main(*sys.argv[1:])
