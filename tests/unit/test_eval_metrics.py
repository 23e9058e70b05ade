"""The evaluation harness's arithmetic: pass@k, per-answer metrics, the summary's tool-call accounting,
records round-tripping (resume), and the entropy profile of records and trees."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from arpo.analysis import (
    delta_h_by_tool,
    entropy_profile,
    file_segments,
    summary_line,
    table_rows,
    tree_segments,
)
from arpo.core.rewards import AnswerMetric
from arpo.evaluate import Record, Segment
from arpo.harness import load_records, parse_verdict, pass_at_k, scores, solved, summarize
from arpo.proto.tools import ToolCall, ToolName, ToolResult
from arpo.proto.tree import Trajectory, Tree, TreeNode
from arpo.services.learner.data import Prompt


def test_pass_at_k_against_hand_computed_values() -> None:
    assert pass_at_k(5, 0, 1) == 0.0
    assert pass_at_k(5, 5, 3) == 1.0
    assert pass_at_k(4, 1, 1) == pytest.approx(0.25)
    assert pass_at_k(4, 1, 2) == pytest.approx(1 - math.comb(3, 2) / math.comb(4, 2))  # 0.5
    assert pass_at_k(10, 3, 5) == pytest.approx(1 - 21 / 252)  # C(7,5)/C(10,5)


def test_scores_give_every_metric_that_applies() -> None:
    assert scores("the Eiffel Tower", ["Eiffel Tower"], AnswerMetric.F1) == {"exact_match": 1.0, "f1": 1.0}
    qa = scores("Paris France", ["Paris"], AnswerMetric.F1)
    assert qa["exact_match"] == 0.0 and qa["f1"] == pytest.approx(2 / 3)  # precision 1/2, recall 1
    assert scores("\\frac{1}{2}", ["0.5"], AnswerMetric.MATH) == {"math": 1.0}
    assert scores(None, ["0.5"], AnswerMetric.MATH) == {"math": 0.0}
    assert scores("", ["x"], AnswerMetric.EXACT_MATCH) == {"exact_match": 0.0, "f1": 0.0}


def _record(pid: str, sample: int, em: float, calls: dict[str, int], **kw: object) -> Record:
    r = Record(pid, "q", ["a"], answer="a" if em else "b", sample=sample, tool_calls=calls, tokens=10)
    r.scores = {"exact_match": em, "f1": em}
    for k, v in kw.items():
        setattr(r, k, v)
    return r


def test_summary_accounts_for_tool_calls_and_pass_at_k() -> None:
    prompts = [Prompt(p, "q", ["a"], AnswerMetric.EXACT_MATCH) for p in ("p1", "p2")]
    records = [
        _record("p1", 0, 1.0, {"search": 2}),
        _record("p1", 1, 0.0, {"search": 1, "python": 1}, tool_limit_hits=1),
        _record("p2", 0, 0.0, {}),
        _record("p2", 1, 0.0, {"python": 3}),
        Record("p2", "q", ["a"], sample=2, error="ServiceError: tools down"),
    ]
    s = summarize(records, prompts, samples=2)
    assert s["records"] == 4 and s["failed"] == 1
    assert s["accuracy"] == pytest.approx(1 / 4)
    assert s["tool_calls_per_question"] == pytest.approx(7 / 4)
    assert s["tool_calls_per_solved"] == 2.0
    assert s["tool_calls_by_tool"] == {"python": 1.0, "search": 0.75}
    assert s["tool_limit_hits"] == 1
    assert s["pass@1"] == pytest.approx((0.5 + 0.0) / 2)
    assert s["pass@2"] == pytest.approx((1.0 + 0.0) / 2)


def test_a_judge_verdict_overrides_the_string_metric_unless_the_judge_failed() -> None:
    r = _record("p", 0, 0.0, {}, judge="correct")
    assert solved(r, AnswerMetric.EXACT_MATCH)
    r.judge = "error: ConnectError"
    assert not solved(r, AnswerMetric.EXACT_MATCH)
    r.judge = "unclear: maybe"
    assert not solved(r, AnswerMetric.EXACT_MATCH)


def test_records_round_trip_and_a_torn_or_failed_line_is_redone(tmp_path: Path) -> None:
    r = _record("p1", 0, 1.0, {"python": 1}, segments=[Segment("python", [0.5, 0.25])])
    failed = Record("p2", "q", ["a"], error="boom")
    path = tmp_path / "records.jsonl"
    path.write_text(r.to_json() + "\n" + failed.to_json() + "\n" + r.to_json()[:40])
    done = load_records(path)
    assert list(done) == ["p1/0"] and done["p1/0"] == r


def test_entropy_profile_separates_positions_after_each_tool_from_the_rest() -> None:
    segments = [Segment(None, [1.0, 1.0]), Segment("python", [3.0, 2.0, 5.0]), Segment("search", [4.0])] * 2
    profile = entropy_profile(segments, positions=2)
    assert profile["after"] == {"python": [3.0, 2.0], "search": [4.0, None]}
    assert profile["counts"] == {"python": [2, 2], "search": [2, 0]}
    assert profile["elsewhere"] == pytest.approx((1.0 + 1.0 + 5.0) / 3)
    assert table_rows(profile, every=1) == [["0", "3.000 (2)", "4.000 (2)"], ["1", "2.000 (2)", "-"]]
    assert "after python results 2.500" in summary_line(profile, first=2)


def test_delta_h_is_what_the_branch_rule_sees_after_each_tool_result() -> None:
    from arpo.compare import branch_points
    from arpo.config import RunConfig

    first, after_python, after_search = [1.0, 1.0, 9.0], [1.5, 2.5, 0.0], [3.0]
    records = [
        Record("a", "q", ["x"], segments=[Segment(None, first), Segment("python", after_python)]),
        Record("b", "q", ["x"], segments=[Segment(None, [0.5]), Segment("search", after_search)]),
        Record("c", "q", ["x"], segments=[Segment(None, [0.5])]),  # no tool call: no branch point
    ]
    # window 2: H0 = 1.0 (the 9.0 lies outside it), Hbar after python = 2.0; H0 = 0.5 and 3.0 after search
    assert delta_h_by_tool(records, 2) == {"python": [1.0], "search": [2.5]}
    config = RunConfig.model_validate({"branching": {"entropy_window": 2, "alpha": 0.5, "beta": 0.2}})
    points = branch_points(records, config)
    assert points["python"] == {"points": 1, "delta_h": 1.0, "fork_probability": pytest.approx(0.7)}
    assert points["search"]["fork_probability"] == pytest.approx(1.0)  # 0.5 + 0.2 * 2.5, clipped
    threshold = RunConfig.model_validate(
        {"branching": {"entropy_window": 2, "alpha": 0.5, "beta": 0.2, "mode": "threshold", "threshold": 0.8}}
    )
    assert {t: p["fork_probability"] for t, p in branch_points(records, threshold).items()} == {
        "python": 0.0,
        "search": 1.0,
    }


def _node(
    node_id: str, parent: str | None, entropies: list[float], mask: list[int], **kw: object
) -> TreeNode:
    n = len(entropies)
    return TreeNode.model_validate(
        {
            "node_id": node_id,
            "parent_id": parent,
            "token_ids": list(range(n)),
            "loss_mask": mask,
            "logprobs": [0.0] * n,
            "entropies": entropies,
        }
        | kw
    )


def test_tree_segments_count_shared_prefixes_once_and_skip_tool_result_tokens(tmp_path: Path) -> None:
    call = {
        "tool_call": ToolCall(tool=ToolName.SEARCH, content="x"),
        "tool_result": ToolResult(ok=True, output="y"),
    }
    nodes = [
        _node("root", None, [0.0], [0]),
        _node("a", "root", [0.2, 0.4, 0.0, 0.0], [1, 1, 0, 0], **call),  # 2 model tokens, then the result
        _node("a1", "a", [2.0, 1.0], [1, 1]),
        _node("a2", "a", [3.0], [1]),
    ]
    tree = Tree(
        run_id="r",
        step=0,
        prompt_id="p",
        tree_id="t",
        budget=2,
        nodes=nodes,
        trajectories=[Trajectory(leaf_node_id=x, node_ids=["root", "a", x]) for x in ("a1", "a2")],
    )
    segments = tree_segments([tree])
    assert [(s.after, s.entropies) for s in segments] == [
        (None, [0.2, 0.4]),
        ("search", [2.0, 1.0]),
        ("search", [3.0]),
    ]
    trees_file = tmp_path / "trees.json"
    trees_file.write_text(json.dumps([tree.model_dump(mode="json")]))
    assert file_segments(trees_file) == segments
    (tmp_path / "other.jsonl").write_text('{"x": 1}\n')
    with pytest.raises(ValueError, match="neither evaluation records"):
        file_segments(tmp_path / "other.jsonl")


def test_by_group_says_whether_tools_pay_off_when_chosen() -> None:
    prompts = [Prompt(p, "q", ["a"], AnswerMetric.EXACT_MATCH) for p in ("c1", "c2", "d1")]
    records = [
        _record("c1", 0, 1.0, {"python": 1}),
        _record("c2", 0, 0.0, {"python": 2}),
        _record("c2", 1, 0.0, {}),
        _record("d1", 0, 1.0, {}),
    ]
    groups = {"c1": "compute", "c2": "compute", "d1": "direct"}
    s = summarize(records, prompts, samples=1, groups=groups)["by_group"]
    assert s["compute"] == {
        "records": 3,
        "accuracy": pytest.approx(1 / 3),
        "tool_use_rate": pytest.approx(2 / 3),
        "tool_calls_per_question": 1.0,
        "accuracy_with_tools": 0.5,
        "accuracy_without_tools": 0.0,
    }
    assert s["direct"]["accuracy_with_tools"] is None and s["direct"]["accuracy_without_tools"] == 1.0


@pytest.mark.parametrize(
    ("reply", "verdict"),
    [
        ("Correct.", "correct"),
        ("**Incorrect** - the year differs", "incorrect"),
        ("The answer is not correct.", "incorrect"),
        ("I think it is correct", "correct"),
        ("maybe", "unclear: maybe"),
    ],
)
def test_judge_replies_are_read_by_their_first_word_then_by_phrase(reply: str, verdict: str) -> None:
    assert parse_verdict(reply) == verdict
