"""`arpo compare`: ARPO and GRPO runs from one checkpoint, test evaluations and the report."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from arpo.compare import compare, method_spec
from arpo.localredis import LocalRedis
from arpo.proto.runs import RunSpec

SPEC = RunSpec.model_validate(
    {
        "name": "compare-test",
        "model": {"name_or_path": "arpo:tiny", "dtype": "float32"},
        "dataset": {"path_or_name": "arpo:arith", "metric": "exact_match"},
        "validation": {"split": "train", "questions": 2, "every_steps": 1},
        "config": {
            "rollout": {"max_response_tokens": 16, "max_tool_calls": 1},
            "branching": {"group_size": 4, "initial_rollouts": 2, "entropy_window": 4, "beta": 5.0},
            "optim": {"lr": 1e-4, "batch_prompts": 2, "mini_batch_prompts": 2, "total_steps": 1},
        },
    }
)


def test_grpo_starts_the_whole_budget_at_the_root_and_arpo_keeps_the_spec() -> None:
    grpo, arpo = method_spec(SPEC, "grpo", 3), method_spec(SPEC, "arpo", 3)
    assert (grpo.config.branching.initial_rollouts, grpo.config.branching.group_size) == (4, 4)
    assert arpo.config.branching == SPEC.config.branching and arpo.config.seed == grpo.config.seed == 3
    with pytest.raises(ValueError, match="method"):
        method_spec(SPEC, "ppo", 0)


def test_compare_trains_both_methods_evaluates_and_writes_the_report(
    tmp_path: Path, redis_server: LocalRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REDIS_URL", redis_server.url)
    outcomes = asyncio.run(compare(SPEC, tmp_path, [0], "train", 3, log=lambda _: None))
    assert [(o.method, o.seed) for o in outcomes] == [("start", None), ("arpo", 0), ("grpo", 0)]
    assert all(o.test.questions == 3 and o.test.failed == 0 for o in outcomes)
    arpo, grpo = outcomes[1], outcomes[2]
    assert [v["step"] for v in arpo.validations] == [0, 1] and grpo.generated_tokens > 0
    assert all(m["branches_per_tree"] == 0 for m in grpo.steps)  # no fork budget
    results = json.loads((tmp_path / "results.json").read_text())
    assert len(results["outcomes"]) == 3 and results["test_questions"] == 3
    report = (tmp_path / "report.md").read_text()
    assert "| arpo | 1 |" in report and "| grpo | 1 |" in report and "fork probability" in report
    assert all(0 <= p["fork_probability"] <= 1 for p in grpo.branch_points.values())
    for png in ("validation.png", "entropy.png"):
        assert (tmp_path / png).read_bytes().startswith(b"\x89PNG")
    assert len((tmp_path / "records" / "grpo-s0.jsonl").read_text().splitlines()) == 3


def test_compare_trains_only_the_methods_asked_for(
    tmp_path: Path, redis_server: LocalRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REDIS_URL", redis_server.url)
    outcomes = asyncio.run(compare(SPEC, tmp_path, [1], "train", 2, log=lambda _: None, methods=["arpo"]))
    assert [(o.method, o.seed) for o in outcomes] == [("start", None), ("arpo", 1)]
    report = (tmp_path / "report.md").read_text()
    assert "| arpo | 1 |" in report and "grpo" not in report
    assert sorted(p.name for p in (tmp_path / "records").iterdir()) == ["arpo-s1.jsonl", "start.jsonl"]
