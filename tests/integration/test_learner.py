"""The learner's torch backend on the tiny random model: batches from trees, one update, invariances."""

from __future__ import annotations

import asyncio
import copy
import random
from pathlib import Path

import pytest
import torch

from arpo.config import RunConfig
from arpo.core.advantages import AdvantageMode, leaf_advantages, tree_sequences
from arpo.services.learner import checkpoint
from arpo.services.learner.batches import (
    TrainSequence,
    micro_batches,
    tree_batch,
    with_entropy_aware_advantages,
)
from arpo.services.learner.publish import probe, publish
from arpo.services.learner.step import train_on_trees
from arpo.services.learner.torch_backend import TorchLearner
from arpo.services.rollout.app import create_app
from arpo.services.rollout.client import RolloutClient
from arpo.services.rollout.hf import HFEngine
from arpo.services.rollout.settings import RolloutSettings
from tests.integration.learner_helpers import config, make_tree


def grads(model: torch.nn.Module) -> list[torch.Tensor]:
    return [p.grad.clone() for p in model.parameters() if p.grad is not None]


def test_tree_batch_and_micro_batches() -> None:
    seqs = tree_batch(make_tree(branching=True), AdvantageMode.SOFT)
    assert [s.leaf_id for s in seqs] == ["a1", "a2", "b"]
    assert all(len(s.token_ids) == len(s.loss_mask) == len(s.rollout_logprobs) for s in seqs)
    assert seqs[0].loss_mask[:6] == [0] * 6 and seqs[0].rollout_logprobs[6] == -1.0
    groups = micro_batches(seqs, token_budget=26)  # lengths 15, 14, 13
    assert groups == [[0], [1], [2]] and micro_batches(seqs, 45) == [[0, 1, 2]]
    assert micro_batches(seqs, 30) == [[0, 1], [2]]


def test_one_update_lowers_the_loss_on_its_batch(model: torch.nn.Module) -> None:
    learner = TorchLearner(model, config(lr=1e-3))
    seqs = tree_batch(make_tree(branching=True), AdvantageMode.SOFT)
    old = learner.logprobs(seqs)
    first = learner.update(seqs, old)
    assert first.tokens == sum(sum(s.loss_mask[1:]) for s in seqs) and first.grad_norm > 0
    assert abs(first.approx_kl) < 1e-6  # the policy is the old policy at the first step
    second = learner.update(seqs, old)
    assert second.loss < first.loss
    new = learner.logprobs(seqs)
    assert any(abs(a - b) > 1e-6 for x, y in zip(old, new, strict=True) for a, b in zip(x, y, strict=True))


def test_soft_and_hard_give_the_same_gradients_without_branching(model: torch.nn.Module) -> None:
    tree = make_tree(branching=False)
    out = []
    for mode in (AdvantageMode.SOFT, AdvantageMode.HARD):
        m = copy.deepcopy(model)
        learner = TorchLearner(m, config())
        seqs = tree_batch(tree, mode)
        learner.update(seqs, learner.logprobs(seqs))
        out.append(grads(m))
    for a, b in zip(*out, strict=True):
        torch.testing.assert_close(a, b)


def test_a_packed_tree_trains_exactly_like_its_hard_leaf_sequences(model: torch.nn.Module) -> None:
    tree = make_tree(branching=True)
    packed = tree_batch(tree, AdvantageMode.HARD)
    assert len(packed) == 1 and packed[0].packing is not None
    assert len(packed[0].token_ids) == sum(len(n.token_ids) for n in tree.nodes)  # no prefix twice
    core = tree.to_core()
    leaf_adv = leaf_advantages(core, {t.leaf_node_id: float(t.reward or 0) for t in tree.trajectories})
    by_leaf = [
        TrainSequence("t", s.leaf_id, s.token_ids, s.loss_mask, s.advantages, [0.0] * len(s.token_ids), [])
        for s in tree_sequences(core, leaf_adv, AdvantageMode.HARD)
    ]
    out = []
    for seqs in (packed, by_leaf):
        m = copy.deepcopy(model)
        learner = TorchLearner(m, config())
        old = learner.logprobs(seqs)
        stats = learner.update(seqs, [[lp - 0.1 for lp in row] for row in old])  # ratios away from 1
        out.append((stats, grads(m), old))
    (packed_stats, packed_grads, packed_old), (leaf_stats, leaf_grads, leaf_old) = out
    assert packed_stats.tokens == leaf_stats.tokens == core.count_model_tokens()
    assert packed_stats.loss == pytest.approx(leaf_stats.loss, rel=1e-5)
    # The packed row's log-prob of a node's token equals its log-prob in the leaf sequence owning it.
    a1 = [lp for lp, m in zip(leaf_old[0], by_leaf[0].loss_mask, strict=True) if m]
    a2 = [lp for lp, m in zip(leaf_old[1], by_leaf[1].loss_mask, strict=True) if m]
    b = [lp for lp, m in zip(leaf_old[2], by_leaf[2].loss_mask, strict=True) if m]
    mine = [lp for lp, m in zip(packed_old[0], packed[0].loss_mask, strict=True) if m]
    assert mine == pytest.approx(a1 + a2 + b, abs=1e-5)  # preorder: r, a, a1, a2, b
    for x, y in zip(packed_grads, leaf_grads, strict=True):
        torch.testing.assert_close(x, y, rtol=1e-4, atol=1e-6)


def test_a_kl_reference_is_the_initial_policy(model: torch.nn.Module) -> None:
    cfg = RunConfig.model_validate({"optim": {"lr": 1e-3, "weight_decay": 0.0}, "loss": {"kl_coef": 0.1}})
    learner = TorchLearner(model, cfg)
    seqs = tree_batch(make_tree(branching=True), AdvantageMode.SOFT)
    assert learner.reference_logprobs(seqs) == learner.logprobs(seqs)
    with pytest.raises(ValueError, match="needs the reference log-probs"):
        learner.update(seqs, learner.logprobs(seqs))
    first = learner.update(seqs, learner.logprobs(seqs), learner.reference_logprobs(seqs))
    assert first.ref_kl == pytest.approx(0.0, abs=1e-7)
    second = learner.update(seqs, learner.logprobs(seqs), learner.reference_logprobs(seqs))
    assert second.ref_kl > 1e-6  # the policy moved, the reference did not
    assert TorchLearner(copy.deepcopy(model), config()).reference is None  # off by default


def test_the_step_does_not_depend_on_the_micro_batching(model: torch.nn.Module) -> None:
    seqs = tree_batch(make_tree(branching=True), AdvantageMode.HARD)
    out = []
    for budget in (10_000, 1):  # everything together, or one sequence per micro-batch
        m = copy.deepcopy(model)
        learner = TorchLearner(m, config(), token_budget=budget)
        learner.update(seqs, learner.logprobs(seqs))
        out.append(grads(m))
    for a, b in zip(*out, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


def test_publish_a_version_the_rollout_server_serves_exactly(
    model: torch.nn.Module, tiny_model_dir: Path, tmp_path: Path
) -> None:
    learner = TorchLearner(model, config(lr=1e-2))
    seqs = tree_batch(make_tree(branching=True), AdvantageMode.SOFT)
    learner.update(seqs, learner.logprobs(seqs))  # the learner's weights now differ from the server's
    server = HFEngine.from_pretrained(str(tiny_model_dir), dtype="float32", device="cpu", static=False)
    probe_ids = seqs[0].token_ids
    before = server.score(probe_ids)

    async def go() -> None:
        app = create_app(server, RolloutSettings(model="tiny"))
        async with RolloutClient.in_process(app, timeout_s=60) as client:
            statuses = await publish(learner, 1, tmp_path / "weights", {"local": client}, probe_ids)
            assert statuses["local"].accepted and statuses["local"].policy_version == 1
            assert (await client.health())["policy_version"] == 1
            with pytest.raises(FileExistsError):  # a version is written once
                await publish(learner, 1, tmp_path / "weights", {"local": client}, probe_ids)

    asyncio.run(go())
    want = probe(model, probe_ids).logprobs
    after = server.score(probe_ids)
    assert max(abs(a - b) for a, b in zip(after, want, strict=True)) < 1e-4
    assert max(abs(a - b) for a, b in zip(before, want, strict=True)) > 1e-3
    assert not list((tmp_path / "weights").glob(".v*"))  # no temporary directory left


def test_resume_gives_the_same_weights_as_running_straight(model: torch.nn.Module, tmp_path: Path) -> None:
    seqs = tree_batch(make_tree(branching=True), AdvantageMode.SOFT)
    straight = TorchLearner(copy.deepcopy(model), config(lr=1e-3))
    for _ in range(2):
        straight.update(seqs, straight.logprobs(seqs))
    first = TorchLearner(copy.deepcopy(model), config(lr=1e-3))
    first.update(seqs, first.logprobs(seqs))
    checkpoint.save(tmp_path, 1, 1, 8, first)
    del first  # the learner "dies"
    resumed = TorchLearner(copy.deepcopy(model), config(lr=1e-3))
    state = checkpoint.load(tmp_path, resumed)
    assert state == checkpoint.Resumed(step=1, policy_version=1, data_position=8)
    resumed.update(seqs, resumed.logprobs(seqs))
    for a, b in zip(straight.model.parameters(), resumed.model.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_a_damaged_checkpoint_is_refused_by_name_and_the_previous_kept(
    model: torch.nn.Module, tmp_path: Path
) -> None:
    learner = TorchLearner(model, config())
    assert checkpoint.load(tmp_path, learner) is None
    checkpoint.save(tmp_path, 1, 1, 0, learner)

    class Broken(TorchLearner):
        def save_state(self, directory: Path) -> None:
            (directory / "model.safetensors").write_bytes(b"half")
            raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):  # a save that dies half-way...
        checkpoint.save(tmp_path, 2, 2, 0, Broken(model, config()))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest", "step-1"]  # ...leaves the previous
    assert checkpoint.load(tmp_path, learner) == checkpoint.Resumed(1, 1, 0)
    second = checkpoint.save(tmp_path, 2, 2, 0, learner)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest", "step-2"]
    with (second / "optimizer.pt").open("r+b") as f:
        f.truncate(10)
    with pytest.raises(checkpoint.CheckpointError, match=r"step-2/optimizer.pt: missing or truncated"):
        checkpoint.load(tmp_path, learner)


def test_train_on_trees_reports_the_step(model: torch.nn.Module) -> None:
    trees = [make_tree(branching=True), make_tree(branching=False).model_copy(update={"tree_id": "t2"})]
    cfg = RunConfig.model_validate(
        {"optim": {"lr": 1e-4, "batch_prompts": 2, "mini_batch_prompts": 1, "ppo_epochs": 2}}
    )
    reference = TorchLearner(copy.deepcopy(model), cfg)
    seqs = [s for t in trees for s in tree_batch(t, cfg.loss.advantage_mode)]
    before = reference.logprobs(seqs)
    want = [
        abs(-1.0 - lp)
        for s, lps in zip(seqs, before, strict=True)
        for lp, m in zip(lps, s.loss_mask, strict=True)
        if m
    ]
    metrics = train_on_trees(
        TorchLearner(model, cfg), trees, cfg, step=3, policy_version=2, rng=random.Random(0)
    )
    assert (metrics.step, metrics.policy_version, metrics.trees, metrics.trajectories) == (3, 2, 2, 6)
    assert metrics.reward_mean == pytest.approx(0.5)
    assert metrics.logprob_mismatch == pytest.approx(sum(want) / len(want))
    assert metrics.policy_loss is not None and metrics.grad_norm is not None and metrics.grad_norm > 0
    assert metrics.approx_kl is not None and metrics.approx_kl >= 0  # the second epoch moved away from old


def test_entropy_aware_advantages_scale_by_the_steps_entropy_z_score() -> None:
    tree = make_tree(branching=True)
    entropic = tree.model_copy(
        update={
            "nodes": [
                n.model_copy(update={"entropies": [float(i % 3) for i in range(len(n.token_ids))]})
                for n in tree.nodes
            ]
        }
    )
    seqs = tree_batch(entropic, AdvantageMode.SOFT)
    assert with_entropy_aware_advantages(seqs, 0.0) == seqs
    scaled = with_entropy_aware_advantages(seqs, 0.5)
    hs = [h for s in seqs for h, m in zip(s.rollout_entropies, s.loss_mask, strict=True) if m]
    mean = sum(hs) / len(hs)
    std = (sum((h - mean) ** 2 for h in hs) / len(hs)) ** 0.5
    for before, after in zip(seqs, scaled, strict=True):
        for a, b, h, m in zip(
            before.advantages, after.advantages, before.rollout_entropies, before.loss_mask, strict=True
        ):
            want = a * (1 + 0.5 * (h - mean) / (std + 1e-6)) if m else 0.0
            assert b == pytest.approx(want)
    assert any(
        a != b
        for s, t in zip(seqs, scaled, strict=True)
        for a, b in zip(s.advantages, t.advantages, strict=True)
    )
