"""Messages of the controller: what a run is, its state, and its per-step metrics."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Literal

from pydantic import Field

from arpo.config import RunConfig
from arpo.core.rewards import AnswerMetric
from arpo.proto.base import Id, Message


class ModelRef(Message):
    """The policy to train: any Hugging Face causal LM by hub name or local path."""

    name_or_path: str = Field(min_length=1)
    """Hub name (e.g. Qwen/Qwen2.5-3B-Instruct) or a local directory."""
    revision: str | None = None
    """Hub revision (branch, tag or commit); None = default branch."""
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    """Weights dtype; auto = bfloat16 on GPU, float32 on CPU."""
    trust_remote_code: bool = False
    """Allow the model repository's own Python code to run."""


class DatasetRef(Message):
    """Where a run's prompts and gold answers come from."""

    path_or_name: str = Field(min_length=1)
    """A local JSONL/parquet file, a built-in task name, or a Hugging Face dataset name."""
    split: str = "train"
    """Split to read."""
    question_field: str = "question"
    """Field holding the question."""
    answer_field: str = "answer"
    """Field holding the gold answer (a string or a list of strings)."""
    metric: AnswerMetric | None = None
    """Scoring of answers; None = the run's reward.default_metric."""


class ValidationSpec(Message):
    """Held-out questions the run answers with its current policy every few steps (no training on them):
    one trajectory each through the same agent loop and tools, greedy by default."""

    split: str = "validation"
    """Split of the run's dataset to read (a dataset folder's `<split>.jsonl`)."""
    questions: int = Field(100, ge=1, le=100_000)
    """Questions used: the split's first ones."""
    every_steps: int = Field(5, ge=1)
    """Validate the initial policy, every this many steps, and the final one."""
    temperature: float = Field(0.0, ge=0)
    """Sampling temperature; 0 = greedy."""


class RunSpec(Message):
    """Everything needed to launch a run."""

    name: str | None = Field(None, max_length=200)
    """Human-readable name."""
    model: ModelRef
    """Policy to train."""
    dataset: DatasetRef
    """Training data."""
    config: RunConfig = RunConfig()
    """Every algorithm knob."""
    validation: ValidationSpec | None = None
    """Periodic validation; None = none (needs the tool service: embedded, or ARPO_LEARNER_TOOLS_URL)."""


class RunState(StrEnum):
    """Life cycle of a run."""

    PENDING = "pending"
    RUNNING = "running"
    STOPPING = "stopping"
    FINISHED = "finished"
    FAILED = "failed"


class StepMetrics(Message):
    """What one training step measured. Optional fields are absent where a stage did not run."""

    step: int = Field(ge=0)
    """Training step."""
    policy_version: int = Field(ge=0)
    """Version the step's rollouts were generated with."""
    trees: int = Field(ge=0)
    """Trees (prompts) in the step."""
    trajectories: int = Field(ge=0)
    """Finished trajectories (leaves) in the step."""
    reward_mean: float
    """Mean leaf reward."""
    reward_std: float = Field(0.0, ge=0)
    """Standard deviation of the leaf rewards."""
    accuracy: float = Field(ge=0, le=1)
    """Fraction of leaves whose answer scored 1."""
    format_ok_rate: float = Field(ge=0, le=1)
    """Fraction of leaves with a valid tag format."""
    tool_calls_per_trajectory: float = Field(ge=0)
    """Mean tool calls per leaf."""
    branches_per_tree: float = Field(ge=0)
    """Mean forks admitted per tree."""
    entropy_mean: float | None = None
    """Mean token entropy of model tokens."""
    entropy_after_tool_mean: float | None = None
    """Mean entropy of the first k tokens after tool results."""
    entropy_elsewhere_mean: float | None = None
    """Mean entropy of the other model tokens."""
    response_tokens_mean: float = Field(0.0, ge=0)
    """Mean response length (tokens after the prompt, tool results included) per leaf."""
    response_tokens_max: int = Field(0, ge=0)
    """Longest response of the step."""
    generated_tokens: int = Field(0, ge=0)
    """Tokens the model generated in the step (tree nodes once each: a shared prefix counts once)."""
    advantage_mean: float | None = None
    """Mean advantage over the trained tokens."""
    advantage_std: float | None = None
    """Standard deviation of the advantages over the trained tokens."""
    policy_entropy: float | None = None
    """Learner-side entropy of the policy on the trained tokens (during the update)."""
    policy_loss: float | None = None
    """Clipped-surrogate loss."""
    clip_fraction: float | None = None
    """Fraction of tokens whose ratio was clipped."""
    approx_kl: float | None = None
    """KL(old‖new) estimate over the update."""
    ref_kl: float | None = None
    """KL(policy‖reference) estimate (only with loss.kl_coef > 0)."""
    grad_norm: float | None = None
    """Gradient norm before clipping."""
    logprob_mismatch: float | None = None
    """Mean |rollout log-prob - learner log-prob| over model tokens."""
    dead_letters: int = Field(0, ge=0)
    """Branch requests given up in this step."""
    time_generate_s: float | None = None
    """Seconds spent generating."""
    time_tool_wait_s: float | None = None
    """Seconds spent waiting on tools."""
    time_train_s: float | None = None
    """Seconds spent in forward/backward/optimizer."""
    time_publish_s: float | None = None
    """Seconds spent publishing weights."""
    time_step_s: float | None = None
    """Wall-clock seconds of the whole step."""
    train_tokens_per_s: float | None = None
    """Tokens through the learner's forward/backward passes per second of training."""


class ValidationMetrics(Message):
    """One validation of a policy version on the run's held-out questions."""

    step: int = Field(ge=0)
    """Training steps done when the policy was validated (0 = the initial policy)."""
    policy_version: int = Field(ge=0)
    """Policy version validated."""
    questions: int = Field(ge=0)
    """Questions answered."""
    accuracy: float = Field(ge=0, le=1)
    """Mean answer score (exact match: share of questions answered correctly)."""
    reward_mean: float
    """Mean reward."""
    format_ok_rate: float = Field(ge=0, le=1)
    """Share of answers in a valid tag format."""
    tool_calls_per_question: float = Field(ge=0)
    """Mean tool calls per question."""
    tool_calls_per_solved: float = Field(ge=0)
    """Mean tool calls per solved question (0 when none is)."""
    response_tokens_mean: float = Field(ge=0)
    """Mean tokens the model wrote per question (tool results excluded)."""
    failed: int = Field(0, ge=0)
    """Questions whose trajectory failed (engine or tools down); scored 0."""
    time_s: float = Field(ge=0)
    """Wall-clock seconds of the validation."""


class RunStatus(Message):
    """A run as the controller reports it."""

    run_id: Id
    """The run's id."""
    name: str | None = None
    """Human-readable name from the RunSpec."""
    state: RunState
    """Where the run is in its life cycle."""
    reason: str | None = None
    """Why the run failed or stopped, when it did."""
    step: int = Field(0, ge=0)
    """Steps completed."""
    policy_version: int = Field(0, ge=0)
    """Latest published policy version."""
    created_at: datetime
    """When the run was submitted (UTC)."""
    updated_at: datetime
    """Last state change or metrics update (UTC)."""
    metrics: StepMetrics | None = None
    """Metrics of the latest completed step."""
    services_seen: list[str] = Field(default_factory=list)
    """Services that reported for this run (e.g. 'learner-0', 'agent-3')."""
