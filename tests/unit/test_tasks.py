"""The generated benchmark: deterministic, verifiable answers, splits that share no entity."""

from __future__ import annotations

import json
import re
from pathlib import Path

from arpo.tasks import FAMILIES, SPLITS, generate, write

BENCH = generate(seed=0, countries=60, sizes=(300, 60, 60, 120))


def names(split: str) -> set[str]:
    return {n for c in BENCH.countries[split] for n in (c.name, c.capital, c.river)}


def test_the_same_seed_gives_the_same_benchmark() -> None:
    again = generate(seed=0, countries=60, sizes=(300, 60, 60, 120))
    assert again == BENCH
    assert generate(seed=1, countries=60, sizes=(300, 60, 60, 120)).splits["train"] != BENCH.splits["train"]


def test_splits_share_no_entity() -> None:
    for split in SPLITS:
        others = set().union(*(names(s) for s in SPLITS if s != split))
        assert not names(split) & others
        for q in BENCH.splits[split]:
            words = set(re.findall(r"[A-Z][a-z]+", q.question))
            assert not words & others, (split, q.question)


def test_every_answer_is_verifiable() -> None:
    docs = [d.text for d in BENCH.documents]
    capitals = {c.capital: c for split in SPLITS for c in BENCH.countries[split]}
    families = dict.fromkeys(FAMILIES, 0)
    for q in (q for split in SPLITS for q in BENCH.splits[split]):
        families[q.family] += 1
        if q.family == "direct":
            a, b = (int(n) for n in re.findall(r"\d+", q.question))
            assert a < 10 and b < 10 and q.answer == str(a + b) and q.tools == []
        elif q.family == "compute":
            expression = q.question.removeprefix("What is ").removesuffix("?").replace("mod", "%")
            assert str(eval(expression)) == q.answer  # arithmetic of digits and + * % only
        elif q.family == "lookup":
            entity = re.findall(r"[A-Z][a-z]+", q.question.removeprefix("What").removeprefix("In which"))
            assert any(entity[-1] in d and q.answer in d for d in docs), q
        else:
            a, b = (capitals[n] for n in re.findall(r"founding of ([A-Z][a-z]+)", q.question))
            assert q.answer == str(abs(a.founded - b.founded)) and q.tools == ["search", "search", "python"]
            assert any(a.capital in d and str(a.founded) in d for d in docs)
    assert families == dict.fromkeys(FAMILIES, 135)


def test_written_files(tmp_path: Path) -> None:
    write(BENCH, tmp_path)
    assert sum(1 for _ in (tmp_path / "corpus.jsonl").open()) == len(BENCH.documents) == 4 * 60
    first = json.loads((tmp_path / "test.jsonl").open().readline())
    assert set(first) == {"id", "family", "question", "answer", "tools"}


def test_the_corpus_answers_lookups_through_bm25(tmp_path: Path) -> None:
    from arpo.services.tools.search import LocalIndex, build_index

    write(BENCH, tmp_path)
    build_index(tmp_path / "corpus.jsonl", tmp_path / "index")
    index = LocalIndex(tmp_path / "index")
    found = 0
    lookups = [q for q in BENCH.splits["test"] if q.family == "lookup"]
    for q in lookups:
        hits = index.search_sync(q.question, k=2)
        found += any(q.answer in f"{h.title} {h.text}" for h in hits)
    assert found / len(lookups) >= 0.9  # distractors rank below the fact's own document
