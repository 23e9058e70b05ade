"""Evaluation datasets: every supported layout from fixture files the tests write, in each file format."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from arpo.core.rewards import AnswerMetric
from arpo.datasets import detect, gsm8k_answer, last_boxed, load_eval
from arpo.services.learner.data import DatasetError

# One or two rows per layout, with the fields the public releases use.
LAYOUTS: dict[str, tuple[list[dict[str, Any]], list[list[str]], AnswerMetric]] = {
    "gsm8k": (
        [
            {"question": "Tom has 3 apples and buys 4. How many?", "answer": "3 + 4 = 7\n#### 7"},
            {"question": "A car costs 1,200 and tax adds 300.", "answer": "1200+300=1500\n#### 1,500"},
        ],
        [["7"], ["1500"]],
        AnswerMetric.MATH,
    ),
    "math": (
        [
            {"problem": "Simplify 2/4.", "solution": "It is $\\boxed{\\frac{1}{2}}$.", "level": "Level 1"},
            {
                "problem": "1+1?",
                "solution": "so \\boxed{3} no, \\boxed{2}",
                "answer": "2",
                "unique_id": "m/2",
            },
        ],
        [["\\frac{1}{2}"], ["2"]],
        AnswerMetric.MATH,
    ),
    "aime": ([{"ID": "2024-I-1", "Problem": "Find x.", "Answer": 204}], [["204"]], AnswerMetric.MATH),
    "hotpotqa": (
        [
            {
                "_id": "5a8b",
                "question": "Which city hosts X?",
                "answer": "Paris",
                "type": "bridge",
                "level": "hard",
            }
        ],
        [["Paris"]],
        AnswerMetric.F1,
    ),
    "musique": (
        [{"id": "2hop__1", "question": "Who?", "answer": "Ada Lovelace", "answer_aliases": ["Ada King"]}],
        [["Ada Lovelace", "Ada King"]],
        AnswerMetric.F1,
    ),
    "bamboogle": ([{"Question": "Who was president?", "Answer": "Lincoln"}], [["Lincoln"]], AnswerMetric.F1),
    "gaia": (
        [
            {"task_id": "g1", "Question": "What year?", "Final answer": "1969", "file_name": "", "Level": 1},
            {"task_id": "g2", "Question": "Read the file.", "Final answer": "42", "file_name": "data.xlsx"},
        ],
        [["1969"]],
        AnswerMetric.EXACT_MATCH,
    ),
    "hle": (
        [
            {"id": "h1", "question": "Q?", "answer": "B", "answer_type": "multipleChoice", "image": ""},
            {
                "id": "h2",
                "question": "What is shown?",
                "answer": "a cat",
                "answer_type": "exactMatch",
                "image": "data:image/png;base64,AAAA",
            },
        ],
        [["B"]],
        AnswerMetric.EXACT_MATCH,
    ),
    "xbench": (
        [{"id": 1, "prompt": "Which company?", "answer": "Acme"}],
        [["Acme"]],
        AnswerMetric.EXACT_MATCH,
    ),
}


def _write(path: Path, rows: list[dict[str, Any]]) -> Path:
    if path.suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), path)
    elif path.suffix == ".json":
        path.write_text(json.dumps(rows))
    else:
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".parquet"])
def test_each_layout_is_recognised_and_read_in_each_format(layout: str, suffix: str, tmp_path: Path) -> None:
    rows, answers, metric = LAYOUTS[layout]
    data = load_eval(str(_write(tmp_path / f"{layout}{suffix}", rows)))
    assert data.layout == ("qa" if layout == "hotpotqa" else layout)
    assert load_eval(str(tmp_path / f"{layout}{suffix}"), layout=layout).layout == layout
    assert [p.answers for p in data.prompts] == answers
    assert {p.metric for p in data.prompts} == {metric}
    assert data.skipped == len(rows) - len(answers)  # attachments and images are skipped, and counted
    assert data.prompts[0].question == rows[0].get(
        "question",
        rows[0].get("Question", rows[0].get("problem", rows[0].get("Problem", rows[0].get("prompt")))),
    )


def test_question_and_answer_sets_sharing_fields_are_told_apart_by_the_answer(tmp_path: Path) -> None:
    assert detect({"question": "q", "answer": "x\n#### 3"}) == "gsm8k"
    assert detect({"question": "q", "answer": "Paris"}) == "qa"
    named = load_eval(str(_write(tmp_path / "two.jsonl", [{"question": "q", "answer": "a"}])), layout="2wiki")
    assert named.layout == "2wiki" and named.prompts[0].metric is AnswerMetric.F1


def test_generic_fields_lists_of_answers_and_limit(tmp_path: Path) -> None:
    rows = [{"q": f"question {i}", "golds": [str(i), f"#{i}"], "id": f"x{i}"} for i in range(5)]
    path = _write(tmp_path / "mine.jsonl", rows)
    data = load_eval(
        str(path), question_field="q", answer_field="golds", metric=AnswerMetric.EXACT_MATCH, limit=3
    )
    assert data.layout == "generic"
    assert [(p.prompt_id, p.answers) for p in data.prompts] == [
        ("x0", ["0", "#0"]),
        ("x1", ["1", "#1"]),
        ("x2", ["2", "#2"]),
    ]


def test_a_dataset_folder_reads_its_split(tmp_path: Path) -> None:
    (tmp_path / "ds").mkdir()
    _write(tmp_path / "ds" / "validation.jsonl", [{"question": "q", "answer": "v"}])
    assert load_eval(str(tmp_path / "ds"), split="validation").prompts[0].answers == ["v"]
    with pytest.raises(DatasetError, match=r"test\.jsonl: no such file"):
        load_eval(str(tmp_path / "ds"))


def test_duplicate_ids_are_made_unique_for_resuming(tmp_path: Path) -> None:
    rows = [{"id": "same", "question": f"q{i}", "answer": "a"} for i in range(2)]
    data = load_eval(str(_write(tmp_path / "d.jsonl", rows)))
    assert [p.prompt_id for p in data.prompts] == ["same#1", "same#2"]


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([{"question": "", "answer": "a"}], r"d.jsonl:1: no question"),
        (
            [{"question": "q", "answer": "a"}, {"question": "q2", "answer": None}],
            r"d.jsonl:2: no gold answer",
        ),
        ([{"title": "t", "text": "x"}], r"cannot tell the layout from the fields \['text', 'title'\]"),
        ([["not", "an", "object"]], r"d.jsonl:1: a row must be an object"),
    ],
)
def test_bad_rows_are_errors_that_name_the_row_and_field(
    rows: list[Any], message: str, tmp_path: Path
) -> None:
    with pytest.raises(DatasetError, match=message):
        load_eval(str(_write(tmp_path / "d.jsonl", rows)))


def test_bad_sources_are_named(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="no such file"):
        load_eval(str(tmp_path / "missing.jsonl"))
    (tmp_path / "bad.jsonl").write_text("{not json\n")
    with pytest.raises(DatasetError, match=r"bad.jsonl:1: not JSON"):
        load_eval(str(tmp_path / "bad.jsonl"))
    with pytest.raises(DatasetError, match="layout: unknown 'squad'"):
        load_eval(str(tmp_path / "bad.jsonl"), layout="squad")
    with pytest.raises(DatasetError, match="expected hf:NAME:SPLIT"):
        load_eval("hf:only-a-name")
    gaia = _write(tmp_path / "gaia.jsonl", LAYOUTS["gaia"][0][1:])
    with pytest.raises(DatasetError, match=r"no usable questions \(1 skipped\)"):
        load_eval(str(gaia))


def test_answer_extraction() -> None:
    assert gsm8k_answer("work\n#### 1,234") == "1234"
    assert gsm8k_answer("no marker") is None
    assert last_boxed("a \\boxed{1} then \\boxed{\\frac{a}{b}}") == "\\frac{a}{b}"
    assert last_boxed("\\boxed{unclosed") is None
    assert last_boxed("none") is None


def test_group_by_a_field_of_the_rows(tmp_path: Path) -> None:
    rows = [{"id": f"q{i}", "question": "q", "answer": "a", "family": f} for i, f in enumerate("xyx")]
    path = _write(tmp_path / "d.jsonl", rows)
    assert load_eval(str(path), group_by="family").groups == {"q0": "x", "q1": "y", "q2": "x"}
    assert load_eval(str(path)).groups == {}
    with pytest.raises(DatasetError, match=r"group_by: no row of .* has the field 'level'"):
        load_eval(str(path), group_by="level")
