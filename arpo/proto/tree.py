"""Messages of the ARPO tree rollout: branch requests on the queue, tree nodes, finished trees."""

from __future__ import annotations

from enum import StrEnum
from typing import Self

from pydantic import Field, model_validator

from arpo.core.rewards import AnswerMetric
from arpo.core.tree import Segment, TrajectoryTree
from arpo.proto.base import Id, MaskValue, Message, TokenId, check_parallel
from arpo.proto.rollout import FinishReason
from arpo.proto.tools import ToolCall, ToolResult


class BranchKind(StrEnum):
    """Why a trajectory was started."""

    ROOT = "root"
    FORK = "fork"
    REFILL = "refill"


class BranchRequest(Message):
    """Queue entry: run one trajectory of a prompt's tree from a prefix node until it ends."""

    run_id: Id
    """Run the request belongs to."""
    step: int = Field(ge=0)
    """Training step whose batch the tree belongs to."""
    prompt_id: Id
    """Prompt of the dataset being rolled out."""
    tree_id: Id
    """Tree (one per prompt and step) the trajectory joins."""
    parent_node_id: Id
    """Prefix reference: the trajectory continues the root→parent path stored in the tree."""
    kind: BranchKind
    """root / refill start from the prompt node; fork continues after a tool result."""
    h0: float | None = None
    """Mean entropy of the trajectory's first segment; set for forks, None until measured for roots."""
    consecutive_branches: int = Field(0, ge=0)
    """Forks in a row on the path to this request (AEPO's consecutive-branch penalty)."""
    policy_version: int = Field(ge=0)
    """Policy version the trajectory must be generated with (or newer, within the staleness bound)."""
    attempt: int = Field(0, ge=0)
    """Deliveries that failed before this one; at max_attempts the request goes to the dead letters."""
    request_id: Id
    """Deterministic id, so a redelivered request writes the same nodes (idempotent)."""
    rollout_replica: str | None = None
    """The rollout server that generated the parent (prefix-cache reuse); used when it is healthy."""

    @model_validator(mode="after")
    def _fork_has_h0(self) -> Self:
        if self.kind == BranchKind.FORK and self.h0 is None:
            raise ValueError("h0: a fork inherits its parent's H0 and must carry it")
        return self


class TreeSeed(Message):
    """A prompt to roll out as one tree at one step: what the learner (or a test) enqueues."""

    run_id: Id
    """Run of the tree."""
    step: int = Field(ge=0)
    """Training step."""
    prompt_id: Id
    """Prompt of the dataset."""
    tree_id: Id
    """The tree's id (unique within the run and step)."""
    prompt_token_ids: list[TokenId] = Field(min_length=1)
    """The rendered prompt (chat template applied), the root node's tokens."""
    prompt_text: str = ""
    """The prompt as text, for people and the dashboard."""
    answers: list[str] = Field(min_length=1)
    """Gold answers the reward compares against."""
    metric: AnswerMetric = AnswerMetric.F1
    """How answers are scored."""
    budget: int = Field(ge=1, le=1024)
    """M: trajectories of the tree."""
    initial: int = Field(ge=1)
    """N: trajectories started from the prompt (N = M is GRPO)."""
    policy_version: int = Field(0, ge=0)
    """Policy version the trajectories are generated with."""

    @model_validator(mode="after")
    def _n_le_m(self) -> Self:
        if self.initial > self.budget:
            raise ValueError(f"initial ({self.initial}) must be <= budget ({self.budget})")
        return self


class TreeNode(Message):
    """One segment of a tree: the prompt (root), or one round of a trajectory.

    Per-token arrays are parallel; `logprobs` and `entropies` are 0.0 where `loss_mask` is 0.
    """

    node_id: Id
    """Unique within the tree; derived from the request so rewrites are idempotent."""
    parent_id: Id | None
    """Parent node; None only for the root (prompt) node."""
    token_ids: list[TokenId]
    """Tokens of the segment: model tokens, then the tool result's tokens if a tool was called."""
    loss_mask: list[MaskValue]
    """1 = sampled by the model (trained); 0 = prompt or tool output."""
    logprobs: list[float]
    """Rollout log-prob of each model token."""
    entropies: list[float]
    """Rollout entropy (nats) at each model token."""
    text: str = ""
    """Decoded segment text, for people and the dashboard."""
    policy_version: int | None = Field(None, ge=0)
    """Version that generated the model tokens; None for the root."""
    tool_call: ToolCall | None = None
    """The call this segment ended with, if any."""
    tool_result: ToolResult | None = None
    """The result appended to this segment, if a tool was called."""
    finish_reason: FinishReason | None = None
    """How generation of this segment ended; None for the root."""
    segment_entropy: float | None = Field(None, ge=0)
    """Hbar: mean entropy of the segment's first k model tokens."""
    delta_h: float | None = None
    """Hbar of this segment minus the trajectory's H0 (set for segments that follow a tool result)."""
    forked: int = Field(0, ge=0)
    """Forks admitted after this node's tool result."""

    @model_validator(mode="after")
    def _parallel(self) -> Self:
        check_parallel(self, "token_ids", "loss_mask", "logprobs", "entropies")
        if (self.tool_call is None) != (self.tool_result is None):
            raise ValueError("tool_call and tool_result must be set together")
        return self


class Trajectory(Message):
    """One finished trajectory: a root→leaf path and its reward."""

    leaf_node_id: Id
    """The leaf that ends the trajectory."""
    node_ids: list[Id] = Field(min_length=2)
    """Nodes from the root down to the leaf."""
    tool_calls: int = Field(0, ge=0)
    """Tool calls made on the path."""
    reward: float | None = None
    """Reward once computed."""
    score: float | None = Field(None, ge=0, le=1)
    """Correctness score in [0, 1], before format penalty and bonus."""
    format_ok: bool | None = None
    """Whether the tag format held."""
    answer: str | None = None
    """The extracted final answer."""

    @model_validator(mode="after")
    def _path_ends_at_leaf(self) -> Self:
        if self.node_ids[-1] != self.leaf_node_id:
            raise ValueError("node_ids must end with leaf_node_id")
        return self


class Tree(Message):
    """A prompt's completed trajectory tree: what the learner trains on."""

    run_id: Id
    """Run of the tree."""
    step: int = Field(ge=0)
    """Training step."""
    prompt_id: Id
    """Prompt the tree answers."""
    tree_id: Id
    """The tree's id."""
    budget: int = Field(ge=1)
    """M: trajectories the tree was allowed."""
    nodes: list[TreeNode] = Field(min_length=1)
    """All nodes, parents before children."""
    trajectories: list[Trajectory]
    """One per leaf."""
    dead_letters: int = Field(0, ge=0)
    """Requests given up after max_attempts; the tree completed without them."""

    @model_validator(mode="after")
    def _structure(self) -> Self:
        tree = self.to_core()
        leaves = set(tree.leaves) - {tree.root_id}
        given = [t.leaf_node_id for t in self.trajectories]
        if len(given) != len(set(given)) or set(given) != leaves:
            raise ValueError(f"trajectories must name each leaf once; leaves {sorted(leaves)}, got {given}")
        if len(self.trajectories) > self.budget:
            raise ValueError(f"{len(self.trajectories)} trajectories exceed the budget {self.budget}")
        for t in self.trajectories:
            if tuple(t.node_ids) != tree.path(t.leaf_node_id):
                raise ValueError(f"trajectory {t.leaf_node_id}: node_ids is not the root→leaf path")
        return self

    def to_core(self) -> TrajectoryTree:
        """The algorithm core's view (validates: unique ids, one root, known parents)."""
        return TrajectoryTree(
            Segment(n.node_id, n.parent_id, tuple(n.token_ids), tuple(n.loss_mask)) for n in self.nodes
        )
