"""The project's agentic benchmark: generated from a seed, versioned, with verifiable answers.

A fictional world of countries, each with a capital city (its founding year) and a river, is
the only source of the lookup facts: a small model cannot know them, so it must `<search>` the
generated corpus (one document per entity, plus distractors that mention look-alike names). Three
families mirror the paper's domains, and a fourth needs no tool:

- compute: products of two-digit numbers, sums of three or four, modular arithmetic (solvable with
  `<python>`);
- lookup: one fact about one entity (solvable with `<search>`);
- multihop: two lookups and a computation (years between the founding of two cities);
- direct: single-digit sums a small model answers without a tool (where needless tool calls show).

Splits never share entities: countries are partitioned into train (the cold-start demonstrations), rl
(reinforcement learning on entities the cold start never saw), validation and test before any question
is drawn, and compute questions come from disjoint random streams. `VERSION` changes whenever
the generator's output would.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass
from pathlib import Path

VERSION = 4
"""Version 4 shortened what a model copies (names of two syllables, two-digit operands, three-digit
river lengths, no population figures in the documents) and grew the world from 600 to 3,000 countries
(so that a cold start cannot memorise its training entities' facts instead of reading them): version
3's cold start miscopied digits and names so often that choosing a tool well barely paid."""
SPLITS = ("train", "rl", "validation", "test")
PARTS = (9, 3, 1, 2)
"""Countries per split, in fifteenths: `train` (the cold-start demonstrations), `rl` (reinforcement
learning: entities the cold start never saw, so RL cannot win by recalling memorised facts),
`validation`, `test`."""
FAMILIES = ("compute", "lookup", "multihop", "direct")
_ONSETS = ["b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "dr", "kr", "st", "th"]
_VOWELS = ["a", "e", "i", "o", "u", "ae", "ia", "ou"]
_CODAS = ["", "n", "r", "s", "l", "th", "nd", "rk"]


@dataclass(frozen=True)
class Country:
    name: str
    capital: str
    founded: int
    river: str
    river_km: int


@dataclass(frozen=True)
class Question:
    id: str
    family: str
    question: str
    answer: str
    tools: list[str]
    """The tool calls an ideal solution makes, in order (python, search)."""


@dataclass(frozen=True)
class Document:
    id: str
    title: str
    text: str


def _name(rng: random.Random, used: set[str]) -> str:
    while True:
        name = "".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_CODAS) for _ in range(2))
        name = name.capitalize()
        if name not in used and len(name) >= 4:
            used.add(name)
            return name


def world(seed: int, countries: int) -> list[Country]:
    rng = random.Random(f"world-{VERSION}-{seed}")
    used: set[str] = set()
    return [
        Country(
            name=_name(rng, used),
            capital=_name(rng, used),
            founded=rng.randint(800, 1900),
            river=_name(rng, used),
            river_km=rng.randint(100, 999),
        )
        for _ in range(countries)
    ]


def corpus(countries: list[Country], seed: int) -> list[Document]:
    """One document per country, capital and river, plus a distractor per country."""
    rng = random.Random(f"corpus-{VERSION}-{seed}")
    docs = []
    for i, c in enumerate(countries):
        docs.append(Document(f"c{i}", c.name, f"{c.name} is a country whose capital is {c.capital}."))
        docs.append(
            Document(
                f"k{i}",
                c.capital,
                f"{c.capital}, the capital of {c.name}, was founded in {c.founded}.",
            )
        )
        docs.append(
            Document(f"r{i}", c.river, f"The {c.river} river flows {c.river_km} km through {c.name}.")
        )
        other = countries[rng.randrange(len(countries))]
        docs.append(
            Document(
                f"d{i}",
                f"{c.name} (disambiguation)",
                f"{c.name} is also a surname; {c.capital} Street in {other.capital} is named after a trader.",
            )
        )
    return docs


def _compute(rng: random.Random) -> tuple[str, str]:
    kind = rng.choice(["product", "sum", "mod"])
    if kind == "product":
        a, b = rng.randint(12, 99), rng.randint(12, 99)
        return f"What is {a} * {b}?", str(a * b)
    if kind == "sum":
        terms = [rng.randint(10, 99) for _ in range(rng.randint(3, 4))]
        return f"What is {' + '.join(map(str, terms))}?", str(sum(terms))
    a, b, m = rng.randint(12, 99), rng.randint(12, 99), rng.randint(7, 97)
    return f"What is ({a} * {b}) mod {m}?", str(a * b % m)


def _lookup(rng: random.Random, c: Country) -> tuple[str, str]:
    return rng.choice(
        [
            (f"What is the capital of {c.name}?", c.capital),
            (f"In which year was {c.capital} founded?", str(c.founded)),
            (f"How long is the {c.river} river, in km?", str(c.river_km)),
        ]
    )


def questions(countries: list[Country], split: str, count: int, seed: int) -> list[Question]:
    """`count` questions of `split` (the families in turn), over that split's countries only."""
    rng = random.Random(f"questions-{VERSION}-{seed}-{split}")
    out = []
    for i in range(count):
        family = FAMILIES[i % len(FAMILIES)]
        if family == "direct":
            x, y = rng.randint(1, 9), rng.randint(1, 9)
            text, answer, tools = f"What is {x} + {y}?", str(x + y), []
        elif family == "compute":
            text, answer = _compute(rng)
            tools = ["python"]
        elif family == "lookup":
            text, answer = _lookup(rng, rng.choice(countries))
            tools = ["search"]
        else:
            a, b = rng.sample(countries, 2)
            text = (
                f"How many years passed between the founding of {a.capital} and the founding of {b.capital}?"
            )
            answer, tools = str(abs(a.founded - b.founded)), ["search", "search", "python"]
        out.append(Question(f"{split}-{i}", family, text, answer, tools))
    return out


@dataclass(frozen=True)
class Benchmark:
    countries: dict[str, list[Country]]
    documents: list[Document]
    splits: dict[str, list[Question]]


def generate(
    seed: int = 0, countries: int = 3000, sizes: tuple[int, int, int, int] = (60000, 4000, 400, 1200)
) -> Benchmark:
    """The benchmark of `seed`: countries split 9:3:1:2 between train, rl, validation and test."""
    everyone = world(seed, countries)
    cut = [0]
    for part in PARTS:
        cut.append(cut[-1] + countries * part // sum(PARTS))
    cut[-1] = countries
    by_split = {s: everyone[cut[i] : cut[i + 1]] for i, s in enumerate(SPLITS)}
    return Benchmark(
        by_split,
        corpus(everyone, seed),
        {s: questions(by_split[s], s, n, seed) for s, n in zip(SPLITS, sizes, strict=True)},
    )


def write(benchmark: Benchmark, directory: Path) -> None:
    """`corpus.jsonl` (for `arpo index build`) and one JSONL per split (question, answer, id, family)."""
    directory.mkdir(parents=True, exist_ok=True)
    with (directory / "corpus.jsonl").open("w") as f:
        for doc in benchmark.documents:
            f.write(json.dumps(asdict(doc)) + "\n")
    for split, items in benchmark.splits.items():
        with (directory / f"{split}.jsonl").open("w") as f:
            for q in items:
                f.write(json.dumps(asdict(q)) + "\n")
