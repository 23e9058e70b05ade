"""Plots (PNG): a run's learning curves (`curves.png` in the run directory) and the figures of the
ARPO-vs-GRPO report (`arpo compare`)."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any, BinaryIO

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


Curves = tuple[Sequence[StepMetrics], Sequence[ValidationMetrics]]
"""One run's per-step metrics and validations."""


def _series(steps: Sequence[StepMetrics], *names: str) -> list[tuple[str, list[float], list[float]]]:
    """(label, x, y) of each named StepMetrics field, its missing values left out."""
    out = []
    for name in names:
        pairs = [(float(m.step + 1), float(getattr(m, name))) for m in steps if getattr(m, name) is not None]
        label = name.removeprefix("time_").removesuffix("_s")
        out.append((label, [x for x, _ in pairs], [y for _, y in pairs]))
    return out


def run_curves(runs: dict[str, Curves], out: Path | BinaryIO, title: str = "") -> None:
    """Eight panels over training steps, one colour per run (the dashboard overlays ARPO and GRPO runs):
    accuracy (validation, held out; training rollouts), reward, policy entropy, token entropy after tool
    results vs elsewhere, tool calls per trajectory, forks per tree, response tokens, step time split."""
    plt = _pyplot()
    fig, axes = plt.subplots(2, 4, figsize=(16, 7), constrained_layout=True)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for (label, (steps, validations)), color in zip(runs.items(), colors, strict=False):
        prefix = f"{label}: " if len(runs) > 1 else ""
        vx = [v.step for v in validations]
        panels: list[tuple[str, list[float], list[tuple[str, list[float], list[float]]]]] = [
            ("accuracy", [v.accuracy for v in validations], _series(steps, "accuracy")),
            ("mean reward", [v.reward_mean for v in validations], _series(steps, "reward_mean")),
            ("policy entropy (learner, nats)", [], _series(steps, "policy_entropy")),
            (
                "token entropy: after tools vs elsewhere",
                [],
                _series(steps, "entropy_after_tool_mean", "entropy_elsewhere_mean"),
            ),
            (
                "tool calls per trajectory",
                [v.tool_calls_per_question for v in validations],
                _series(steps, "tool_calls_per_trajectory"),
            ),
            ("forks per tree (entropy branching)", [], _series(steps, "branches_per_tree")),
            ("response tokens per trajectory", [], _series(steps, "response_tokens_mean")),
            (
                "step time split (s)",
                [],
                _series(steps, "time_generate_s", "time_tool_wait_s", "time_train_s", "time_publish_s"),
            ),
        ]
        for ax, (name, validated, series) in zip(axes.flat, panels, strict=True):
            if validated:
                ax.plot(vx, validated, "o-", color=color, label=f"{prefix}validation (held-out)")
            styles = ["-", "--", ":", "-."]
            for (sub, xs, ys), style in zip(series, styles, strict=False):
                what = "training rollouts" if len(series) == 1 else sub.replace("_mean", "").replace("_", " ")
                ax.plot(xs, ys, style, marker=".", color=color, alpha=0.7, label=f"{prefix}{what}")
            ax.set(title=name, xlabel="steps trained")
            if ax.lines:
                ax.legend(fontsize=7)
    axes.flat[0].set_ylim(0, 1)
    if title:
        fig.suptitle(title)
    if isinstance(out, Path):
        _save(fig, out)
        return
    fig.savefig(out, format="png", dpi=80)
    plt.close(fig)


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
