"""A run's prompts: questions and gold answers from a JSONL file, in a seeded order, resumable.

Each line is an object with the DatasetRef's `question_field` and `answer_field` (a string or a list of
strings) and optionally `id`. Errors name the file, the line and the field. The order is a fixed
permutation per pass (seeded by the run seed and the pass number), so `position` alone (saved in the
checkpoint) resumes the same sequence of prompts.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from arpo.builtins import resolve_dataset
from arpo.core.rewards import AnswerMetric
from arpo.jsonl import read_jsonl
from arpo.proto.runs import DatasetRef


class DatasetError(ValueError):
    """A dataset that cannot be used; the message names the file, line and field."""


@dataclass(frozen=True)
class Prompt:
    prompt_id: str
    question: str
    answers: list[str]
    metric: AnswerMetric


def load_prompts(ref: DatasetRef, default_metric: AnswerMetric) -> list[Prompt]:
    path = Path(resolve_dataset(ref.path_or_name))
    if path.is_dir():  # a dataset folder: one JSONL file per split
        path = path / f"{ref.split}.jsonl"
    if not path.is_file():
        raise DatasetError(f"{path}: not a file (only local JSONL datasets are supported so far)")
    prompts = []
    for number, row in read_jsonl(path, DatasetError):
        if not isinstance(row, dict):
            raise DatasetError(f"{path}:{number}: a row must be an object")
        question, answer = row.get(ref.question_field), row.get(ref.answer_field)
        if not isinstance(question, str) or not question.strip():
            raise DatasetError(f"{path}:{number}: field {ref.question_field!r} must be a non-empty string")
        answers = [answer] if isinstance(answer, str) else answer
        if not isinstance(answers, list) or not answers or not all(isinstance(a, str) for a in answers):
            raise DatasetError(
                f"{path}:{number}: field {ref.answer_field!r} must be a string or a list of strings"
            )
        prompt_id = str(row.get("id", f"q{number}"))
        prompts.append(Prompt(prompt_id, question, answers, ref.metric or default_metric))
    if not prompts:
        raise DatasetError(f"{path}: no prompts")
    return prompts


def batch_at(prompts: list[Prompt], position: int, size: int, seed: int) -> list[Prompt]:
    """`size` prompts starting at `position` of the endless seeded sequence (a new permutation per pass)."""
    orders: dict[int, list[int]] = {}  # one permutation per pass touched (a batch spans at most a few)
    out = []
    for k in range(position, position + size):
        epoch, index = divmod(k, len(prompts))
        if epoch not in orders:
            orders[epoch] = list(range(len(prompts)))
            random.Random(seed * 1_000_003 + epoch).shuffle(orders[epoch])
        out.append(prompts[orders[epoch][index]])
    return out
