"""Learning-curve plots (PNG) of a run: what `arpo run` writes to the run directory as `curves.png`."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from arpo.proto.runs import StepMetrics, ValidationMetrics


def run_curves(
    steps: Sequence[StepMetrics], validations: Sequence[ValidationMetrics], path: Path, title: str = ""
) -> Path:
    """Four panels over training steps: accuracy (validation, greedy; training rollouts, sampled), mean
    reward, tool calls per trajectory, forks per tree."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(10, 7), constrained_layout=True)
    x = [m.step + 1 for m in steps]  # step s's metrics describe the policy trained through s + 1 steps
    vx = [v.step for v in validations]
    panels: tuple[tuple[str, list[float], list[float]], ...] = (
        ("accuracy", [v.accuracy for v in validations], [m.accuracy for m in steps]),
        ("mean reward", [v.reward_mean for v in validations], [m.reward_mean for m in steps]),
        (
            "tool calls per trajectory",
            [v.tool_calls_per_question for v in validations],
            [m.tool_calls_per_trajectory for m in steps],
        ),
        ("forks per tree (entropy branching)", [], [m.branches_per_tree for m in steps]),
    )
    for ax, (name, validated, trained) in zip(axes.flat, panels, strict=True):
        if validated:
            ax.plot(vx, validated, "o-", label="validation (held-out)")
        ax.plot(x, trained, ".-", alpha=0.6, label="training rollouts")
        ax.set(title=name, xlabel="steps trained")
        if validated:
            ax.legend()
    axes.flat[0].set_ylim(0, 1)
    if title:
        fig.suptitle(title)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
