"""RunConfig: every algorithm knob of a run, typed, with exactly one default each (DESIGN.md §4).

Sections follow the algorithm: `rollout` (sampling and tools), `branching` (§4.3), `loss` (§4.5),
`optim`, `reward` (§4.4). Values the algorithm core needs are handed to it as small views
(`branch_rule`, `loss_params`, `reward_params`), so the core never imports this module's pydantic
models. Per-process wiring (URLs, ports, paths) is not here: each service reads its own `Settings`.

Load with `load_config(path)` (YAML or JSON; unknown keys are errors). Every error names the field path
and the offending value, e.g. `branching.initial_rollouts: must be <= branching.group_size (16), got 20`.
"""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Any, Self

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from arpo.core.advantages import AdvantageMode
from arpo.core.branching import BranchingMode, BranchRule
from arpo.core.entropy import TailMode
from arpo.core.loss import KLEstimator, LossParams
from arpo.core.rewards import AnswerMetric, RewardParams


class ToolLimitBehavior(StrEnum):
    """What happens to a tool call beyond `max_tool_calls`."""

    RESULT = "result"
    END = "end"


class OldLogprobSource(StrEnum):
    """Where the PPO ratio's old log-probs come from."""

    LEARNER = "learner"
    ROLLOUT = "rollout"


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


class RolloutConfig(Section):
    """Sampling and the agent loop (DESIGN.md §4.1, §4.2)."""

    temperature: float = Field(1.0, gt=0)
    """Sampling temperature; entropies are of softmax(logits / temperature)."""
    top_p: float = Field(1.0, gt=0, le=1)
    """Nucleus sampling mass (1.0 = off)."""
    top_k: int = Field(0, ge=0)
    """Sample only among the k most likely tokens (0 = off)."""
    max_response_tokens: int = Field(4096, ge=1)
    """Token budget of one trajectory's response, tool results included (deep search: 8192)."""
    max_tool_calls: int = Field(3, ge=0)
    """Tool calls allowed per trajectory (paper: 3 for reasoning, 6 for deep search)."""
    tool_limit: ToolLimitBehavior = ToolLimitBehavior.RESULT
    """Beyond the limit: answer the call with a 'limit reached' result, or end the trajectory."""
    tool_timeout_s: float = Field(10.0, gt=0)
    """Wall-clock limit of one tool call."""
    entropy_topk: int = Field(20, ge=1)
    """K top log-probs requested from engines that cannot report exact entropy (vLLM)."""
    entropy_tail: TailMode = TailMode.BUCKET
    """How the top-K entropy estimate accounts for the mass outside the top K."""


class BranchingConfig(Section):
    """Entropy-based adaptive rollout (DESIGN.md §4.3). GRPO is initial_rollouts == group_size."""

    group_size: int = Field(16, ge=1)
    """M: trajectories per prompt, the group advantages are computed over."""
    initial_rollouts: int = Field(8, ge=1)
    """N: trajectories started from the prompt before any fork."""
    fork_width: int = Field(1, ge=1)
    """Z: trajectories one fork asks for."""
    entropy_window: int = Field(20, ge=1)
    """k: a segment's entropy is the mean over its first k tokens."""
    normalize_entropy: bool = False
    """Divide segment entropies by ln V before comparing them."""
    alpha: float = Field(0.5, ge=0, le=1)
    """Base branch probability."""
    beta: float = Field(0.2, ge=0)
    """Weight of the entropy change ΔH in the branch probability (paper's ablation peaks at 0.4)."""
    mode: BranchingMode = BranchingMode.STOCHASTIC
    """stochastic: fork with probability clip(α + β·ΔH, 0, 1); threshold: fork iff α + β·ΔH > threshold."""
    threshold: float = 0.5
    """τ of threshold mode."""
    consecutive_penalty: float = Field(0.0, ge=0, le=1)
    """AEPO: branch probability times (1 - penalty·c), c = consecutive forks on the path (0 = off)."""
    dynamic_budget: bool = False
    """AEPO: choose N per prompt from root vs post-tool entropy instead of using initial_rollouts."""

    @model_validator(mode="after")
    def _n_le_m(self) -> Self:
        if self.initial_rollouts > self.group_size:
            raise ValueError(
                f"branching.initial_rollouts: must be <= branching.group_size ({self.group_size}), "
                f"got {self.initial_rollouts}"
            )
        return self

    @property
    def is_grpo(self) -> bool:
        """No budget left for forks: plain trajectory-level sampling."""
        return self.initial_rollouts == self.group_size and not self.dynamic_budget


class LossConfig(Section):
    """Advantages and the policy loss (DESIGN.md §4.5)."""

    advantage_mode: AdvantageMode = AdvantageMode.SOFT
    """soft: each leaf is a GRPO sample, prefix included; hard: nodes get their leaves' mean advantage."""
    clip_eps_low: float = Field(0.2, ge=0, lt=1)
    """Lower PPO clip: ratios below 1 - eps_low are clipped."""
    clip_eps_high: float = Field(0.2, ge=0)
    """Upper PPO clip (clip-higher: raise above eps_low)."""
    dual_clip: float | None = Field(3.0, gt=1)
    """Dual-clip constant c for negative advantages (null = off)."""
    kl_coef: float = Field(0.0, ge=0)
    """Weight of KL to the reference model (0 = no reference model is loaded)."""
    kl_estimator: KLEstimator = KLEstimator.K3
    """KL estimator from sampled-token log-probs."""
    entropy_coef: float = Field(0.0, ge=0)
    """Weight of the entropy bonus."""
    entropy_balanced_clip: bool = False
    """AEPO: keep a (1 + eps_high) gradient on upper-clipped tokens with positive advantage."""
    entropy_advantage_coef: float = Field(0.0, ge=0)
    """AEPO: scale advantages by (1 + coef·zscore(token entropy)) (0 = off)."""
    old_logprobs: OldLogprobSource = OldLogprobSource.LEARNER
    """Recompute old log-probs on the learner (default) or use the rollout's."""


class OptimConfig(Section):
    """Optimizer and batching (paper defaults)."""

    lr: float = Field(1e-6, gt=0)
    """AdamW learning rate (constant schedule)."""
    weight_decay: float = Field(0.01, ge=0)
    """AdamW weight decay."""
    grad_clip: float = Field(1.0, gt=0)
    """Global gradient-norm clip."""
    ppo_epochs: int = Field(1, ge=1)
    """Passes over each step's trajectories."""
    micro_batch_tokens: int = Field(8192, ge=1)
    """Padded tokens (rows x longest row) per forward/backward pass: bounds the learner's memory."""
    batch_prompts: int = Field(128, ge=1)
    """Prompts per training step."""
    mini_batch_prompts: int = Field(16, ge=1)
    """Prompts per optimizer step."""
    total_steps: int = Field(100, ge=1)
    """Training steps of the run."""
    max_staleness: int = Field(0, ge=0)
    """Policy versions a rollout may lag the learner (0 = synchronous, the paper's mode)."""

    @model_validator(mode="after")
    def _mini_le_batch(self) -> Self:
        if self.mini_batch_prompts > self.batch_prompts:
            raise ValueError(
                f"optim.mini_batch_prompts: must be <= optim.batch_prompts ({self.batch_prompts}), "
                f"got {self.mini_batch_prompts}"
            )
        if self.batch_prompts % self.mini_batch_prompts:
            raise ValueError(
                f"optim.batch_prompts: must be a multiple of optim.mini_batch_prompts "
                f"({self.mini_batch_prompts}), got {self.batch_prompts}"
            )
        return self


class RewardConfig(Section):
    """Verifiable rewards (DESIGN.md §4.4)."""

    format_penalty: float = Field(-1.0, le=0)
    """Reward of a trajectory whose tag format is broken."""
    multi_tool_bonus: float = Field(0.1, ge=0)
    """Added when both tools were used and the answer scores above 0."""
    default_metric: AnswerMetric = AnswerMetric.F1
    """Scoring for samples whose dataset does not name a metric."""


class RunConfig(BaseModel):
    """Every algorithm knob of a run. One default each; `configs/` holds worked examples."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    seed: int = Field(0, ge=0)
    """Seeds sampling, branching draws and data order."""
    rollout: RolloutConfig = RolloutConfig()
    """Sampling and the agent loop."""
    branching: BranchingConfig = BranchingConfig()
    """Entropy-based adaptive rollout."""
    loss: LossConfig = LossConfig()
    """Advantages and the policy loss."""
    optim: OptimConfig = OptimConfig()
    """Optimizer and batching."""
    reward: RewardConfig = RewardConfig()
    """Verifiable rewards."""

    @model_validator(mode="after")
    def _window_fits(self) -> Self:
        if self.branching.entropy_window > self.rollout.max_response_tokens:
            raise ValueError(
                f"branching.entropy_window: must be <= rollout.max_response_tokens "
                f"({self.rollout.max_response_tokens}), got {self.branching.entropy_window}"
            )
        return self

    @property
    def branch_rule(self) -> BranchRule:
        b = self.branching
        return BranchRule(b.alpha, b.beta, b.mode, b.threshold, b.consecutive_penalty)

    @property
    def loss_params(self) -> LossParams:
        c = self.loss
        return LossParams(
            c.clip_eps_low,
            c.clip_eps_high,
            c.dual_clip,
            c.kl_coef,
            c.kl_estimator,
            c.entropy_coef,
            c.entropy_balanced_clip,
        )

    @property
    def reward_params(self) -> RewardParams:
        return RewardParams(self.reward.format_penalty, self.reward.multi_tool_bonus)


class ConfigError(ValueError):
    """A config that cannot be used; the message names every bad field and value."""


def describe_validation_error(err: ValidationError, source: str) -> str:
    """One line per problem: `source: field.path: message (got value)`."""
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"])
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "value_error" and msg.startswith(loc):
            lines.append(f"{source}: {msg}")  # cross-field checks name their own field and value
            continue
        got = "" if e["type"] == "missing" else f" (got {e['input']!r})"
        lines.append(f"{source}: {loc or '(top level)'}: {msg}{got}")
    return "\n".join(lines)


def parse_config(data: Any, source: str = "config") -> RunConfig:
    """Validate a mapping into a RunConfig, raising ConfigError with every bad field named."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping of sections, got {type(data).__name__}")
    try:
        return RunConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(describe_validation_error(err, source)) from None


def load_config(path: str | Path) -> RunConfig:
    """Read a RunConfig from a YAML (.yaml/.yml) or JSON (.json) file."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: no such config file")
    text = p.read_text()
    try:
        data = json.loads(text) if p.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as err:
        raise ConfigError(f"{p}: not valid {'JSON' if p.suffix == '.json' else 'YAML'}: {err}") from None
    return parse_config(data, str(p))
