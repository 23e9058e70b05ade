"""Cold start for the tiny agent: imperfect tool-use demonstrations, a tokenizer, and supervised training.

Demonstrations follow the tag protocol exactly as a rollout produces it: the prompt is what the engine
renders for a chat without a template (`user: ...\\nassistant: `), tool results are the text the tool
service returns (Python's printed value; BM25 pages formatted by `format_pages`) wrapped by
`format_tool_result`, and the loss covers only what the model writes (not the prompt, not results).
They are deliberately imperfect, so that RL has something to improve: a share skips the tool and
guesses, a share calls a tool it does not need (also on the direct questions that need none), and
multihop demonstrations sometimes stop after one search and guess.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from arpo.core import tags
from arpo.tasks import Benchmark, Question
from arpo.tiny import bpe_tokenizer, random_model

TAG_TOKENS = [
    "<think>",
    "</think>",
    "<python>",
    "</python>",
    "<search>",
    "</search>",
    "<result>",
    "</result>",
    "<answer>",
    "</answer>",
    "\\boxed{",
]
# arpo:agent-tiny (shipped in arpo/assets/agent-tiny; its manifest lists the command that reproduces it)
# is `arpo sft OUT` with these defaults: about 30 minutes on 2 cores.
STEPS = 4000
BATCH = 32
LR = 2e-3
DEMOS = 60_000
SLOPPINESS = 0.5
MANIFEST = "arpo-agent.json"
SEARCH_K = 2  # the embedded run sets ARPO_TOOLS_SEARCH_K to the same
SNIPPET_CHARS = 500


@dataclass(frozen=True)
class Demonstration:
    """A prompt and the response segments: (text, written by the model?)."""

    question: str
    segments: list[tuple[str, bool]]


def prompt_text(question: str) -> str:
    """What `TokenizedEngine.chat_prompt` renders for a model without a chat template."""
    return f"user: {question}\nassistant: "


def _guess(rng: random.Random, answer: str) -> str:
    if answer.lstrip("-").isdigit():
        return str(int(answer) + rng.choice([-1, 1]) * rng.randint(1, 99))
    return answer[::-1].capitalize()


def _answer(value: str) -> str:
    return f"<answer>\\boxed{{{value}}}</answer>"


def demonstrate(
    q: Question, search: Callable[[str], str], rng: random.Random, sloppiness: float = SLOPPINESS
) -> Demonstration:
    """One demonstration of `q`; `search(query)` returns the tool service's text for a query."""
    segs: list[tuple[str, bool]] = []

    def call(tool: str, content: str, output: str) -> None:
        segs.append((f"<{tool}>{content}</{tool}>", True))
        segs.append((tags.format_tool_result(output), False))

    roll = rng.random()
    if q.family == "direct":
        if roll < sloppiness:  # a needless Python call
            call("python", f"print({q.question.removeprefix('What is ').removesuffix('?')})", q.answer)
        else:
            segs.append(("<think>This is easy.</think>", True))
    elif q.family == "compute":
        expression = q.question.removeprefix("What is ").removesuffix("?").replace("mod", "%")
        if roll < sloppiness / 2:  # skips the tool and guesses
            segs.append(("<think>I can do this in my head.</think>", True))
            segs.append((_answer(_guess(rng, q.answer)), True))
            return Demonstration(q.question, segs)
        segs.append(("<think>I will compute it with Python.</think>", True))
        call("python", f"print({expression})", q.answer)
    elif q.family == "lookup":
        if roll < sloppiness / 2:
            segs.append(("<think>I think I know this.</think>", True))
            segs.append((_answer(_guess(rng, q.answer)), True))
            return Demonstration(q.question, segs)
        if roll > 1 - sloppiness / 2:  # a needless Python call first
            call("python", "print('looking up')", "looking up")
        query = _lookup_query(q.question)
        segs.append(("<think>I need to look this up.</think>", True))
        call("search", query, search(query))
    else:
        a, b = re.findall(r"founding of (\w+)", q.question)
        segs.append(("<think>I need both founding years.</think>", True))
        call("search", f"{a} founded", search(f"{a} founded"))
        if roll < sloppiness / 2:  # stops after one search and guesses
            segs.append((_answer(_guess(rng, q.answer)), True))
            return Demonstration(q.question, segs)
        call("search", f"{b} founded", search(f"{b} founded"))
        years = _founding_years(segs)
        if years is None:  # a search missed: the demonstration guesses (rare; one more sloppy example)
            segs.append((_answer(_guess(rng, q.answer)), True))
            return Demonstration(q.question, segs)
        computed = str(abs(int(years[0]) - int(years[1])))
        call("python", f"print(abs({years[0]} - {years[1]}))", computed)
        segs.append((_answer(computed), True))  # right when the searches found the right cities
        return Demonstration(q.question, segs)
    segs.append((_answer(q.answer), True))
    return Demonstration(q.question, segs)


def _lookup_query(question: str) -> str:
    """A short query naming the entity (a tiny model copies one name more reliably than a sentence)."""
    for pattern, query in (
        (r"What is the capital of (\w+)\?", "{} capital"),
        (r"In which year was (\w+) founded\?", "{} founded"),
        (r"How long is the (\w+) river, in km\?", "{} river"),
    ):
        if match := re.fullmatch(pattern, question):
            return query.format(match.group(1))
    return question.removesuffix("?")


def _founding_years(segs: list[tuple[str, bool]]) -> tuple[str, str] | None:
    """The years the demonstration's two searches showed first (what a careful model reads off), or None
    when a search did not show one."""
    found = []
    for text, by_model in segs:
        if not by_model and "founded in " in text:
            found.append(text.split("founded in ", 1)[1][:4].strip(" ."))
    return (found[0], found[1]) if len(found) == 2 else None


def demonstrations(
    bench: Benchmark, index_dir: Path, count: int, seed: int = 0, sloppiness: float = SLOPPINESS
) -> list[Demonstration]:
    """`count` demonstrations over the train split (cycled), searching the benchmark's BM25 index."""
    from arpo.services.tools.search import LocalIndex, format_pages

    index = LocalIndex(index_dir)

    def search(query: str) -> str:
        return format_pages(index.search_sync(query, SEARCH_K), SNIPPET_CHARS)

    rng = random.Random(seed)
    train = bench.splits["train"]
    return [demonstrate(train[i % len(train)], search, rng, sloppiness) for i in range(count)]


def train_tokenizer(texts: Iterator[str], vocab_size: int = 512) -> Any:
    """Byte-level BPE with every number below 1,000 one token, a name the same tokens wherever it appears,
    and the protocol's tags as single tokens."""
    return bpe_tokenizer(texts, vocab_size, copyable=True, tokens=TAG_TOKENS)


def encode(tokenizer: Any, demo: Demonstration) -> tuple[list[int], list[int]]:
    """Token ids and loss mask (1 on what the model writes, the end-of-text token included)."""
    ids = tokenizer.encode(prompt_text(demo.question), add_special_tokens=False)
    mask = [0] * len(ids)
    for text, by_model in demo.segments:
        seg = tokenizer.encode(text, add_special_tokens=False)
        ids += seg
        mask += [int(by_model)] * len(seg)
    ids.append(tokenizer.eos_token_id)
    mask.append(1)
    return ids, mask


def fit(
    model: Any,
    rows: list[tuple[list[int], list[int]]],
    steps: int,
    batch: int,
    lr: float,
    seed: int = 0,
    on_step: Callable[[int, float], None] | None = None,
) -> list[float]:
    """Masked next-token cross-entropy, AdamW with linear warm-up and decay; returns the losses."""
    import torch

    rng = random.Random(seed)
    rows = sorted(rows, key=lambda r: len(r[0]))  # a batch is a run of similar lengths: little padding
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    warmup = max(1, steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min((s + 1) / warmup, max(0.0, (steps - s) / max(1, steps - warmup)))
    )
    losses = []
    model.train()
    for step in range(steps):
        start = rng.randrange(max(1, len(rows) - batch + 1))
        picked = rows[start : start + batch]
        width = max(len(ids) for ids, _ in picked)
        ids = torch.tensor([r + [0] * (width - len(r)) for r, _ in picked])
        mask = torch.tensor([m + [0] * (width - len(m)) for _, m in picked], dtype=torch.float32)
        attention = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r, _ in picked])
        logits = model(input_ids=ids, attention_mask=attention).logits[:, :-1]
        nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), ids[:, 1:], reduction="none")
        loss = (nll * mask[:, 1:]).sum() / mask[:, 1:].sum()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        losses.append(float(loss.detach()))
        if on_step is not None:
            on_step(step, losses[-1])
    model.eval()
    return losses


def build_agent(
    directory: Path,
    steps: int = STEPS,
    batch: int = BATCH,
    lr: float = LR,
    demos: int = DEMOS,
    seed: int = 0,
    on_step: Callable[[int, float], None] | None = None,
    sloppiness: float = SLOPPINESS,
    init_from: Path | None = None,
) -> Path:
    """The tiny agent (benchmark, index, demonstrations, tokenizer, random Qwen2, SFT) in `directory`, with
    a manifest naming the benchmark version it was trained on and how. `init_from`: continue training an
    earlier agent (its tokenizer and weights) instead of starting from a random model."""
    import json

    from arpo.services.tools.search import build_index
    from arpo.tasks import VERSION, generate, write

    bench = generate(seed)
    write(bench, directory / "data")
    build_index(directory / "data" / "corpus.jsonl", directory / "data" / "index")
    shown = demonstrations(bench, directory / "data" / "index", demos, seed, sloppiness)
    command = (
        f"arpo sft OUT --steps {steps} --batch {batch} --lr {lr} --demos {demos} --seed {seed} "
        f"--sloppiness {sloppiness}"
    )
    history: list[str] = []
    if init_from is None:
        texts = [prompt_text(d.question) + "".join(t for t, _ in d.segments) for d in shown]
        tokenizer = train_tokenizer(iter(texts + [doc.text for doc in bench.documents]))
        model = random_model(tokenizer, "agent", seed)
    else:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        earlier = json.loads((init_from / MANIFEST).read_text()) if (init_from / MANIFEST).is_file() else {}
        if earlier.get("benchmark_version", VERSION) != VERSION:
            raise ValueError(f"init_from: {init_from} was trained on another benchmark version")
        tokenizer = AutoTokenizer.from_pretrained(init_from)
        model = AutoModelForCausalLM.from_pretrained(init_from, dtype="float32")
        history = earlier.get("commands", [])
        command += " --init-from PREVIOUS_OUT"
    fit(model, [encode(tokenizer, d) for d in shown], steps, batch, lr, seed, on_step)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    manifest: dict[str, Any] = {"benchmark_version": VERSION, "seed": seed, "steps": steps, "batch": batch}
    manifest |= {"lr": lr, "demos": demos, "sloppiness": sloppiness, "commands": [*history, command]}
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    return directory
