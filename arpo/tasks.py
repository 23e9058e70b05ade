"""The project's agentic benchmark: generated from a seed, versioned, with verifiable answers.

A fictional world of countries, each with a capital city (founding year, population) and a river, is
the only source of the lookup facts: a small model cannot know them, so it must `<search>` the
generated corpus (one document per entity, plus distractors that mention look-alike names). Three
families mirror the paper's domains, and a fourth needs no tool:

- compute: multi-digit products, sums of several terms, modular arithmetic (solvable with `<python>`);
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

VERSION = 3
STREAMS = 2
"""The random streams' name: version 3 only re-split version 2's entities (adding the rl split), so its
corpus and train split are version 2's, byte for byte, and so is a model cold-started on either."""
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
    population: int
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


def _name(rng: random.Random, used: set[str], syllables: int) -> str:
    while True:
        name = "".join(
            rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_CODAS) for _ in range(syllables)
        )
        name = name.capitalize()
        if name not in used and len(name) >= 4:
            used.add(name)
            return name


def world(seed: int, countries: int) -> list[Country]:
    rng = random.Random(f"world-{STREAMS}-{seed}")
    used: set[str] = set()
    return [
        Country(
            name=_name(rng, used, 3),
            capital=_name(rng, used, 2),
            founded=rng.randint(800, 1900),
            population=rng.randint(20, 2000) * 1000,
            river=_name(rng, used, 2),
            river_km=rng.randint(40, 2500),
        )
        for _ in range(countries)
    ]


def corpus(countries: list[Country], seed: int) -> list[Document]:
    """One document per country, capital and river, plus a distractor per country."""
    rng = random.Random(f"corpus-{STREAMS}-{seed}")
    docs = []
    for i, c in enumerate(countries):
        docs.append(Document(f"c{i}", c.name, f"{c.name} is a country whose capital is {c.capital}."))
        docs.append(
            Document(
                f"k{i}",
                c.capital,
                f"{c.capital}, the capital of {c.name}, was founded in {c.founded} and has a population "
                f"of {c.population}.",
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
        a, b = rng.randint(100, 9999), rng.randint(12, 999)
        return f"What is {a} * {b}?", str(a * b)
    if kind == "sum":
        terms = [rng.randint(100, 999) for _ in range(rng.randint(3, 5))]
        return f"What is {' + '.join(map(str, terms))}?", str(sum(terms))
    a, b, m = rng.randint(100, 999), rng.randint(100, 999), rng.randint(7, 97)
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
    rng = random.Random(f"questions-{STREAMS}-{seed}-{split}")
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
    seed: int = 0, countries: int = 600, sizes: tuple[int, int, int, int] = (20000, 4000, 400, 1200)
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
