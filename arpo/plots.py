"""Plots (PNG): a run's learning curves (`curves.png` in the run directory) and the figures of the
ARPO-vs-GRPO report (`arpo compare`)."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from arpo.proto.runs import StepMetrics, ValidationMetrics


def _pyplot() -> Any:
    """matplotlib's pyplot on the file-only Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    _pyplot().close(fig)
    return path


def run_curves(
    steps: Sequence[StepMetrics], validations: Sequence[ValidationMetrics], path: Path, title: str = ""
) -> Path:
    """Four panels over training steps: accuracy (validation, greedy; training rollouts, sampled), mean
    reward, tool calls per trajectory, forks per tree."""
    fig, axes = _pyplot().subplots(2, 2, figsize=(10, 7), constrained_layout=True)
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
    return _save(fig, path)


def validation_curves(runs: dict[str, list[list[dict[str, Any]]]], path: Path) -> Path:
    """Validation accuracy over steps per method: the mean over its runs (seeds) and a ±1 std band."""
    fig, ax = _pyplot().subplots(figsize=(7, 4.5), constrained_layout=True)
    for method, validations in runs.items():
        if not validations:
            continue
        steps = sorted({v["step"] for run in validations for v in run})
        mean, low, high = [], [], []
        for s in steps:
            values = [v["accuracy"] for run in validations for v in run if v["step"] == s]
            m = statistics.fmean(values)
            d = statistics.stdev(values) if len(values) > 1 else 0.0
            mean.append(m)
            low.append(m - d)
            high.append(m + d)
        ax.plot(steps, mean, "o-", label=f"{method} (mean of {len(validations)} seeds)")
        ax.fill_between(steps, low, high, alpha=0.2)
    ax.set(xlabel="training steps", ylabel="validation accuracy (held-out)", ylim=(0, 1))
    ax.legend()
    return _save(fig, path)


def entropy_curves(profiles: dict[str, Any], path: Path) -> Path:
    """Mean token entropy by position after each tool's results, and the mean elsewhere, per policy
    (`arpo.analysis.entropy_profile`)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5), constrained_layout=True)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for (name, profile), color in zip(profiles.items(), colors, strict=False):
        for tool, values in profile["after"].items():
            xs = [k for k, v in enumerate(values) if v is not None]
            style = "-" if tool == "search" else "-."
            ax.plot(xs, [values[k] for k in xs], style, color=color, label=f"{name}: after {tool} result")
        if profile["elsewhere"] is not None:
            ax.axhline(profile["elsewhere"], linestyle=":", color=color, label=f"{name}: elsewhere")
    ax.set(xlabel="token position after the tool result", ylabel="mean token entropy (nats)")
    ax.legend(fontsize=8)
    return _save(fig, path)
