"""Cold-start demonstrations: the tag protocol exactly as rollouts produce it, imperfect on purpose; SFT."""

from __future__ import annotations

import random
import re
from collections import Counter

import pytest

from arpo.core import tags
from arpo.core.rewards import check_format
from arpo.services.tools.search import build_index
from arpo.sft import demonstrations, encode, fit, prompt_text, train_tokenizer
from arpo.tasks import generate, write
from arpo.tiny import random_model

BENCH = generate(seed=0, countries=30, sizes=(90, 9, 9, 9))


@pytest.fixture(scope="module")
def demos(tmp_path_factory: pytest.TempPathFactory) -> list:  # type: ignore[type-arg]
    out = tmp_path_factory.mktemp("bench")
    write(BENCH, out)
    build_index(out / "corpus.jsonl", out / "index")
    return demonstrations(BENCH, out / "index", 300, seed=1)


def response(demo) -> str:  # type: ignore[no-untyped-def]
    return "".join(text for text, _ in demo.segments)


def test_every_demonstration_follows_the_protocol(demos: list) -> None:  # type: ignore[type-arg]
    for demo in demos:
        text = response(demo)
        assert check_format(text).ok, (check_format(text).reason, text)
        for text_, by_model in demo.segments:
            assert by_model == (not text_.startswith(f" {tags.RESULT_OPEN}"))


def test_most_are_right_and_some_are_sloppy(demos: list) -> None:  # type: ignore[type-arg]
    gold = {q.question: q.answer for q in BENCH.splits["train"]}
    right = Counter(tags.extract_answer(tags.without_results(response(d))) == gold[d.question] for d in demos)
    share = right[True] / len(demos)
    assert 0.7 < share < 0.98  # imperfect on purpose: guesses without tools
    calls = Counter(response(d).count("</search>") + response(d).count("</python>") for d in demos)
    assert calls[0] > 0 and calls[3] > 0  # some skip tools, multihop makes three calls


def test_multihop_demonstrations_compute_from_the_years_their_searches_showed(demos: list) -> None:  # type: ignore[type-arg]
    computed = 0
    for demo in demos:
        text = response(demo)
        if match := re.search(r"print\(abs\((\d+) - (\d+)\)\)", text):
            shown = text[: match.start()]
            assert f"founded in {match[1]}" in shown and f"founded in {match[2]}" in shown
            computed += 1
    assert computed > 0


def test_the_loss_covers_only_what_the_model_writes(demos: list) -> None:  # type: ignore[type-arg]
    tokenizer = train_tokenizer(iter([prompt_text(d.question) + response(d) for d in demos]))
    assert tokenizer.convert_ids_to_tokens(tokenizer.encode("<python>print(12)</python>")) == [
        "<python>",
        "print",
        "(",
        "12",
        ")",
        "</python>",
    ]
    assert tokenizer.convert_ids_to_tokens(tokenizer.encode("in 1905.")[-3:]) == ["190", "5", "."]
    # a name is the same tokens in a search result and in an answer: copied token for token
    capital = BENCH.countries["train"][0].capital
    name = tokenizer.encode(capital)
    assert tokenizer.encode(f"capital is {capital}.")[-len(name) - 1 : -1] == name
    assert tokenizer.encode(f"\\boxed{{{capital}}}")[1:-1] == name
    ids, mask = encode(tokenizer, demos[0])
    trained = tokenizer.decode([i for i, m in zip(ids, mask, strict=True) if m], skip_special_tokens=True)
    assert tags.RESULT_OPEN not in trained and "user:" not in trained
    assert trained.endswith("</answer>")


def test_supervised_steps_lower_the_loss(demos: list) -> None:  # type: ignore[type-arg]
    tokenizer = train_tokenizer(iter([prompt_text(d.question) + response(d) for d in demos]))
    model = random_model(tokenizer, "agent", seed=0)
    rows = [encode(tokenizer, d) for d in demos[:32]]
    losses = fit(model, rows, steps=30, batch=8, lr=3e-3, seed=random.Random(0).randrange(10))
    assert sum(losses[-5:]) / 5 < 0.7 * sum(losses[:5]) / 5
