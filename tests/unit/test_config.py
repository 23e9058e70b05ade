"""RunConfig: the defaults of DESIGN.md §4, file loading, and errors that name the field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from arpo.config import ConfigError, RunConfig, load_config, parse_config
from arpo.core.advantages import AdvantageMode
from arpo.core.branching import BranchingMode
from arpo.core.loss import KLEstimator

CONFIGS = sorted((Path(__file__).parents[2] / "configs").glob("*.yaml"))


def test_defaults_are_the_papers() -> None:
    c = RunConfig()
    b, loss, o = c.branching, c.loss, c.optim
    assert (b.group_size, b.initial_rollouts, b.fork_width, b.entropy_window) == (16, 8, 1, 20)
    assert (b.alpha, b.beta, b.mode, b.threshold) == (0.5, 0.2, BranchingMode.STOCHASTIC, 0.5)
    assert loss.advantage_mode == AdvantageMode.SOFT
    assert (loss.clip_eps_low, loss.clip_eps_high, loss.dual_clip) == (0.2, 0.2, 3.0)
    assert (loss.kl_coef, loss.kl_estimator, loss.entropy_coef) == (0.0, KLEstimator.K3, 0.0)
    assert not (loss.entropy_balanced_clip or b.dynamic_budget) and loss.entropy_advantage_coef == 0.0
    assert (o.lr, o.weight_decay, o.grad_clip, o.ppo_epochs) == (1e-6, 0.01, 1.0, 1)
    assert (o.batch_prompts, o.mini_batch_prompts) == (128, 16)
    assert (c.rollout.max_tool_calls, c.rollout.max_response_tokens, c.rollout.entropy_topk) == (3, 4096, 20)
    assert (c.reward.format_penalty, c.reward.multi_tool_bonus) == (-1.0, 0.1)
    assert not b.is_grpo
    assert (
        c.branch_rule.alpha == 0.5
        and c.loss_params.dual_clip == 3.0
        and c.reward_params.multi_tool_bonus == 0.1
    )


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_example_configs_load(path: Path) -> None:
    load_config(path)


def test_grpo_example_is_grpo() -> None:
    assert load_config(Path(CONFIGS[0]).parent / "grpo.yaml").branching.is_grpo


def test_json_and_yaml(tmp_path: Path) -> None:
    (tmp_path / "c.json").write_text(json.dumps({"branching": {"group_size": 4, "initial_rollouts": 2}}))
    assert load_config(tmp_path / "c.json").branching.group_size == 4
    (tmp_path / "empty.yaml").write_text("")
    assert load_config(tmp_path / "empty.yaml") == RunConfig()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            {"branching": {"initial_rollouts": 20}},
            "branching.initial_rollouts: must be <= branching.group_size (16), got 20",
        ),
        (
            {"branching": {"fork_width": 0}},
            "branching.fork_width: Input should be greater than or equal to 1 (got 0)",
        ),
        (
            {"branching": {"mode": "sometimes"}},
            "branching.mode: Input should be 'stochastic' or 'threshold' (got 'sometimes')",
        ),
        ({"loss": {"advantage_mode": "medium"}}, "loss.advantage_mode: Input should be 'soft' or 'hard'"),
        ({"loss": {"clip_eps": 0.2}}, "loss.clip_eps: Extra inputs are not permitted"),
        ({"optim": {"lr": -1}}, "optim.lr: Input should be greater than 0 (got -1)"),
        (
            {"optim": {"mini_batch_prompts": 256}},
            "optim.mini_batch_prompts: must be <= optim.batch_prompts (128)",
        ),
        (
            {"optim": {"batch_prompts": 100}},
            "optim.batch_prompts: must be a multiple of optim.mini_batch_prompts",
        ),
        (
            {"rollout": {"max_response_tokens": 8}},
            "branching.entropy_window: must be <= rollout.max_response_tokens (8)",
        ),
        ({"seed": "abc"}, "seed: Input should be a valid integer"),
        ({"branchin": {}}, "branchin: Extra inputs are not permitted"),
        ([1, 2], "expected a mapping"),
    ],
)
def test_errors_name_field_and_value(data: object, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(data, "run.yaml")
    assert message in str(err.value)
    assert str(err.value).startswith("run.yaml")


def test_every_problem_is_reported() -> None:
    with pytest.raises(ConfigError) as err:
        parse_config({"optim": {"lr": 0}, "loss": {"kl_coef": -1}})
    assert "optim.lr" in str(err.value) and "loss.kl_coef" in str(err.value)


def test_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "missing.yaml")
    (tmp_path / "bad.yaml").write_text("branching: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(tmp_path / "bad.yaml")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_config(tmp_path / "bad.json")


def test_frozen() -> None:
    with pytest.raises(ValueError, match="frozen"):
        RunConfig().seed = 3  # type: ignore[misc]
