"""What the dashboard's tree viewer reads: a completed tree laid out for display (DESIGN.md §4)."""

from __future__ import annotations

from pydantic import Field

from arpo.proto.base import Id, Message


class TokenView(Message):
    """One generated or tool-result token of a segment, as text."""

    text: str
    """The token decoded alone (the run's tokenizer)."""
    entropy: float
    """Entropy of the policy's distribution the token was sampled from (nats); 0 for tool-result tokens."""
    trained: bool
    """A model token (trained on); false for tool-result tokens."""


class NodeView(Message):
    """One segment of the tree: what the model wrote, the tool it called and what came back."""

    node_id: Id
    """The node's id."""
    parent_id: Id | None
    """Its parent; None for the root (the prompt)."""
    tokens: list[TokenView]
    """The segment's tokens (model tokens, then the tool result's)."""
    tool: str | None = None
    """The tool called at the end of the segment, if any."""
    tool_input: str | None = None
    """The code or query sent to the tool."""
    tool_output: str | None = None
    """What the tool returned (its error, when it failed)."""
    children: int = Field(0, ge=0)
    """Child segments; two or more make a branch point."""
    forked: int = Field(0, ge=0)
    """Partial trajectories forked here after the tool result (entropy rose)."""
    delta_h: float | None = None
    """Normalized entropy change after the tool result that the fork decision used."""
    entropy_mean: float | None = None
    """Mean entropy of the segment's model tokens."""
    advantage: float | None = None
    """Mean advantage of the leaves below (hard attribution); a leaf's own GRPO advantage."""


class LeafView(Message):
    """A finished trajectory."""

    leaf_node_id: Id
    """Its last node."""
    reward: float | None
    """Reward of the trajectory."""
    advantage: float
    """GRPO advantage within the tree's leaves (SOFT attribution gives every token of its path this)."""
    answer: str | None
    """The final answer it gave."""
    score: float | None
    """The answer's score against the gold answers."""
    tool_calls: int
    """Tool calls on its path."""


class TreeView(Message):
    """A completed tree for the viewer."""

    tree_id: Id
    """The tree's id."""
    prompt_id: Id
    """The prompt it answers."""
    step: int = Field(ge=0)
    """Training step."""
    budget: int = Field(ge=1)
    """M: trajectories allowed."""
    nodes: list[NodeView]
    """Every node, parents before children."""
    leaves: list[LeafView]
    """Every finished trajectory."""
    branch_points: int = Field(ge=0)
    """Nodes with two or more children."""
