"""`arpo bench tools` and `arpo bench search`: the tool service's costs (DESIGN.md §7).

tools: latency of `print(1)` through the sandbox, one call at a time, on the fresh path (a new sandbox
per call) and the warm path (a forked child of a sandboxed interpreter), beside plain `python -c` with
the same interpreter and no sandbox. Calls are sequential, so executions/s is per core (the sandbox's
own processes run one after the other). Variants take turns in rounds, so drift hits all alike.
search: BM25 over a generated corpus: index build time, then queries/s and latency of the local backend.
"""

from __future__ import annotations

import random
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from arpo.services.tools.sandbox import Sandbox
from arpo.services.tools.search import LocalIndex, build_index
from arpo.services.tools.settings import ToolsSettings


def _percentile(sorted_values: list[float], q: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, round(q * (len(sorted_values) - 1)))]


def _summary(name: str, seconds: list[float], extra: dict[str, Any]) -> dict[str, Any]:
    ordered = sorted(seconds)
    return {
        "variant": name,
        "calls": len(seconds),
        "p50_ms": round(_percentile(ordered, 0.5) * 1000, 2),
        "p99_ms": round(_percentile(ordered, 0.99) * 1000, 2),
        "per_s": round(len(seconds) / sum(seconds), 1),
        **extra,
    }


def bench_sandbox(calls: int = 100, rounds: int = 3) -> Iterator[dict[str, Any]]:
    """One record per variant (plain python -c, fresh sandbox, warm sandbox)."""
    fresh = Sandbox(ToolsSettings(warm=False, max_concurrency=1))
    warm = Sandbox(ToolsSettings(warm=True, max_concurrency=1))
    python = fresh.plan.python

    def check(box: Sandbox) -> Callable[[], object]:
        def call() -> None:
            result = box.run("print(1)")
            assert result.ok and result.output == "1\n", result

        return call

    variants: dict[str, Callable[[], object]] = {
        "python_c": lambda: subprocess.run([python, "-c", "print(1)"], check=True, capture_output=True),
        # The same without `site` (as the sandbox starts it): the interpreter's own start-up floor.
        "python_IS_c": lambda: subprocess.run(
            [python, "-I", "-S", "-c", "print(1)"], check=True, capture_output=True
        ),
        "fresh": check(fresh),
        "warm": check(warm),
    }
    warm.warm_up()
    times: dict[str, list[float]] = {name: [] for name in variants}
    try:
        for run in variants.values():
            run()  # warm-up
        for _ in range(rounds):
            for name, run in variants.items():
                for _ in range(calls):
                    start = time.perf_counter()
                    run()
                    times[name].append(time.perf_counter() - start)
    finally:
        fresh.close()
        warm.close()
    common = {"bench": "tools", "isolation": fresh.isolation.value, "python": python}
    for name, seconds in times.items():
        yield _summary(name, seconds, common)


WORDS = 20_000


def _corpus(path: Path, documents: int, rng: random.Random) -> list[str]:
    """A corpus of pseudo-words with a Zipf-like frequency; returns its vocabulary."""
    vocab = [f"w{i}x{rng.randrange(10**6)}" for i in range(WORDS)]
    weights = [1.0 / (i + 1) for i in range(WORDS)]
    with path.open("w") as f:
        for d in range(documents):
            words = rng.choices(vocab, weights, k=60)
            title = " ".join(words[:4])
            f.write(f'{{"id": "d{d}", "title": "{title}", "text": "{" ".join(words[4:])}"}}\n')
    return vocab


def bench_search(documents: int = 100_000, queries: int = 1000, k: int = 5) -> Iterator[dict[str, Any]]:
    """Index build seconds, then latency of `queries` searches of 2-4 words each (one at a time)."""
    rng = random.Random(0)
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "corpus.jsonl"
        vocab = _corpus(corpus, documents, rng)
        start = time.perf_counter()
        build_index(corpus, Path(tmp) / "index")
        build_s = time.perf_counter() - start
        index = LocalIndex(Path(tmp) / "index")
        mid = vocab[100:5000]  # neither the commonest words nor the rarest
        texts = [" ".join(rng.sample(mid, rng.randint(2, 4))) for _ in range(queries)]
        seconds = []
        for text in texts:
            start = time.perf_counter()
            index.search_sync(text, k)
            seconds.append(time.perf_counter() - start)
    yield _summary(
        "bm25_local",
        seconds,
        {"bench": "search", "documents": documents, "k": k, "build_s": round(build_s, 1)},
    )
