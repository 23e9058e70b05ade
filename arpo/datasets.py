"""Evaluation datasets in the layouts the paper evaluates on, from local files or the Hugging Face hub.

`load_eval(source)` reads JSONL, a JSON list or parquet (pyarrow), or `hf:NAME[:CONFIG]:SPLIT` through
the `datasets` library (users with the internet), and turns each row into a `Prompt` (question, gold
answers, metric) by its layout. The layout is named (`--layout gsm8k`) or recognised from the first
row's fields; `generic` takes `--question-field` / `--answer-field`. Rows a text-only evaluation cannot
use (GAIA rows with an attached file, HLE rows with an image) are skipped and counted; a row without a
question or an answer is an error that names the file, the row and the field.

| layout | question | answer(s) | metric |
|---|---|---|---|
| gsm8k | question | `answer` after `####` | math |
| math (MATH500, MATH) | problem | `answer`, else the last \\boxed{} of `solution` | math |
| aime | problem / Problem / question | answer / Answer | math |
| qa (recognised), hotpotqa, 2wiki, webwalkerqa | question | answer | f1 |
| musique | question | answer + answer_aliases | f1 |
| bamboogle | Question | Answer | f1 |
| gaia (text-only) | Question | Final answer | exact_match |
| hle (text-only) | question | answer | exact_match |
| xbench | prompt | answer | exact_match |
| generic | --question-field | --answer-field (string or list) | --metric |

xbench-DeepSearch is published encrypted (its README's canary); decrypt it first. Deep-search sets
(GAIA, HLE, WebWalkerQA, xbench) are usually judged by an LLM: `arpo eval --judge-url`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from arpo.builtins import resolve_dataset
from arpo.core.rewards import AnswerMetric
from arpo.jsonl import read_jsonl
from arpo.services.learner.data import DatasetError, Prompt

Row = dict[str, Any]


def _first(row: Row, *names: str) -> Any:
    for name in names:
        if row.get(name) not in (None, ""):
            return row[name]
    return None


def _text(value: Any) -> str | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return str(int(value)) if float(value).is_integer() else str(value)
    if isinstance(value, str):
        return value.strip() or None
    return None


def last_boxed(text: str) -> str | None:
    """The content of the last \\boxed{...} (or \\fbox{...}), braces balanced."""
    start = max(text.rfind("\\boxed{"), text.rfind("\\fbox{"))
    if start < 0:
        return None
    i = text.index("{", start) + 1
    depth, out = 1, list[str]()
    while i < len(text):
        ch = text[i]
        depth += (ch == "{") - (ch == "}")
        if depth == 0:
            return "".join(out).strip()
        out.append(ch)
        i += 1
    return None


def gsm8k_answer(text: str) -> str | None:
    """The final answer of a GSM8K solution: what follows `####`, thousands separators dropped."""
    if "####" not in text:
        return None
    return text.rsplit("####", 1)[1].strip().replace(",", "") or None


@dataclass(frozen=True)
class Layout:
    question: Callable[[Row], Any]
    answers: Callable[[Row], list[Any]]
    metric: AnswerMetric
    keys: frozenset[str]
    """Fields that identify the layout (all present in a row)."""
    usable: Callable[[Row], bool] = lambda row: True
    """False for rows a text-only evaluation skips."""


def _qa(question: str, answer: str, *aliases: str) -> Layout:
    def answers(row: Row) -> list[Any]:
        out: list[Any] = [row.get(answer)]
        for alias in aliases:
            extra = row.get(alias) or []
            out += extra if isinstance(extra, list) else [extra]
        return out

    return Layout(
        lambda r: r.get(question), answers, AnswerMetric.F1, frozenset({question, answer, *aliases})
    )


LAYOUTS: dict[str, Layout] = {
    "gsm8k": Layout(
        lambda r: r.get("question"),
        lambda r: [gsm8k_answer(str(r.get("answer", "")))],
        AnswerMetric.MATH,
        frozenset({"question", "answer"}),
    ),
    "math": Layout(
        lambda r: r.get("problem"),
        lambda r: [_first(r, "answer") or last_boxed(str(r.get("solution", "")))],
        AnswerMetric.MATH,
        frozenset({"problem", "solution"}),
    ),
    "aime": Layout(
        lambda r: _first(r, "problem", "Problem", "question"),
        lambda r: [_first(r, "answer", "Answer")],
        AnswerMetric.MATH,
        frozenset({"Problem", "Answer"}),
    ),
    "qa": _qa("question", "answer"),
    "hotpotqa": _qa("question", "answer"),
    "2wiki": _qa("question", "answer"),
    "webwalkerqa": _qa("question", "answer"),
    "musique": _qa("question", "answer", "answer_aliases"),
    "bamboogle": _qa("Question", "Answer"),
    "gaia": Layout(
        lambda r: r.get("Question"),
        lambda r: [r.get("Final answer")],
        AnswerMetric.EXACT_MATCH,
        frozenset({"Question", "Final answer"}),
        usable=lambda r: not r.get("file_name"),
    ),
    "hle": Layout(
        lambda r: r.get("question"),
        lambda r: [r.get("answer")],
        AnswerMetric.EXACT_MATCH,
        frozenset({"question", "answer", "answer_type"}),
        usable=lambda r: not r.get("image"),
    ),
    "xbench": Layout(
        lambda r: r.get("prompt"),
        lambda r: [r.get("answer")],
        AnswerMetric.EXACT_MATCH,
        frozenset({"prompt"}),
    ),
}
# Recognised from the fields, most specific first; `qa` is every plain question/answer set (HotpotQA,
# 2WikiMultihopQA, WebWalkerQA, arpo:agentic), scored by F1 with exact match beside it.
DETECT = ("gaia", "hle", "musique", "math", "aime", "bamboogle", "xbench", "qa")


def detect(row: Row) -> str:
    for name in DETECT:
        if LAYOUTS[name].keys <= row.keys():
            if name == "qa" and gsm8k_answer(str(row.get("answer", ""))) is not None:
                return "gsm8k"
            return name
    raise DatasetError(
        f"cannot tell the layout from the fields {sorted(row)}; name it (--layout, one of "
        f"{', '.join([*LAYOUTS, 'generic'])}) or give --question-field/--answer-field"
    )


def generic(question_field: str, answer_field: str, metric: AnswerMetric) -> Layout:
    def answers(row: Row) -> list[Any]:
        value = row.get(answer_field)
        return list(value) if isinstance(value, list) else [value]

    return Layout(lambda r: r.get(question_field), answers, metric, frozenset({question_field, answer_field}))


def read_rows(source: str, split: str = "test") -> Iterator[tuple[str, Row]]:
    """(where, row) for every row of a JSONL / JSON / parquet file (a folder: its `<split>.jsonl`, as
    built-in datasets are laid out) or an `hf:` dataset."""
    if source.startswith("hf:"):
        yield from _hub_rows(source)
        return
    path = Path(resolve_dataset(source))
    if path.is_dir():
        path = path / f"{split}.jsonl"
    if not path.is_file():
        raise DatasetError(f"{path}: no such file")
    if path.suffix == ".parquet":
        try:
            import pyarrow.parquet as pq  # type: ignore[import-untyped]
        except ImportError:
            raise DatasetError(f"{path}: reading parquet needs pyarrow (pip install pyarrow)") from None
        for i, row in enumerate(pq.read_table(path).to_pylist(), 1):
            yield f"{path}:row {i}", row
        return
    if path.suffix == ".json":
        try:
            rows = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise DatasetError(f"{path}: not JSON ({err.msg})") from None
        if not isinstance(rows, list):
            raise DatasetError(f"{path}: a JSON dataset must be a list of objects")
        for i, row in enumerate(rows, 1):
            yield f"{path}:item {i}", row
        return
    for number, row in read_jsonl(path, DatasetError):
        yield f"{path}:{number}", row


def _hub_rows(source: str) -> Iterator[tuple[str, Row]]:
    parts = source.removeprefix("hf:").split(":")
    if len(parts) not in (2, 3) or not all(parts):
        raise DatasetError(f"{source}: expected hf:NAME:SPLIT or hf:NAME:CONFIG:SPLIT")
    name, config, split = parts[0], (parts[1] if len(parts) == 3 else None), parts[-1]
    try:
        import datasets  # type: ignore[import-not-found]
    except ImportError:
        raise DatasetError(f"{source}: loading from the hub needs the datasets library") from None
    for i, row in enumerate(datasets.load_dataset(name, config, split=split), 1):
        yield f"{source}:row {i}", dict(row)


@dataclass(frozen=True)
class EvalSet:
    prompts: list[Prompt]
    layout: str
    skipped: int
    """Rows a text-only evaluation cannot use (attachments, images)."""
    groups: dict[str, str] = field(default_factory=dict)
    """prompt id -> the value of the `group_by` field (a family, level or type), when one was asked for."""


def load_eval(
    source: str,
    layout: str | None = None,
    question_field: str | None = None,
    answer_field: str | None = None,
    metric: AnswerMetric | None = None,
    limit: int | None = None,
    split: str = "test",
    group_by: str | None = None,
) -> EvalSet:
    """The questions of `source` (first `limit`), as prompts scored by the layout's metric (or `metric`),
    each with the value of its `group_by` field when that is given."""
    if layout is not None and layout != "generic" and layout not in LAYOUTS:
        raise DatasetError(f"layout: unknown {layout!r}; one of {', '.join([*LAYOUTS, 'generic'])}")
    fields = question_field is not None or answer_field is not None
    prompts: list[Prompt] = []
    groups: list[str] = []
    skipped = 0
    chosen: Layout | None = None
    for where, row in read_rows(source, split):
        if not isinstance(row, dict):
            raise DatasetError(f"{where}: a row must be an object")
        if chosen is None:
            if layout == "generic" or fields:
                layout = "generic"
                chosen = generic(
                    question_field or "question", answer_field or "answer", metric or AnswerMetric.F1
                )
            else:
                layout = layout or detect(row)
                chosen = LAYOUTS[layout]
        if not chosen.usable(row):
            skipped += 1
            continue
        question = _text(chosen.question(row))
        answers = [a for a in (_text(v) for v in chosen.answers(row)) if a]
        if question is None:
            raise DatasetError(f"{where}: no question (layout {layout}: fields {sorted(chosen.keys)})")
        if not answers:
            raise DatasetError(f"{where}: no gold answer (layout {layout}: fields {sorted(chosen.keys)})")
        prompt_id = str(
            _first(row, "id", "_id", "task_id", "qid", "ID", "unique_id") or f"q{len(prompts) + 1}"
        )
        prompts.append(Prompt(prompt_id, question, answers, metric or chosen.metric))
        if group_by is not None:
            groups.append(str(row.get(group_by, "(none)")))
        if limit is not None and len(prompts) >= limit:
            break
    if not prompts:
        raise DatasetError(f"{source}: no usable questions ({skipped} skipped)")
    ids = [p.prompt_id for p in prompts]
    if len(set(ids)) != len(ids):  # ids name records for resuming: they must be unique
        prompts = [
            Prompt(f"{p.prompt_id}#{i}", p.question, p.answers, p.metric) for i, p in enumerate(prompts, 1)
        ]
    if group_by is not None and set(groups) == {"(none)"}:
        raise DatasetError(f"group_by: no row of {source} has the field {group_by!r}")
    by_id = dict(zip((p.prompt_id for p in prompts), groups, strict=True)) if group_by else {}
    return EvalSet(prompts, layout or "generic", skipped, by_id)
