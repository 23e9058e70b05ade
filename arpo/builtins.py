"""Built-in models and datasets, named `arpo:<name>`, built on first use under ~/.cache/arpo (no hub).

`arpo:tiny` is the project's tiny random Qwen2 with its own tokenizer (`arpo.tiny`); `arpo:agent-tiny`
the tiny agent cold-started by `arpo.sft` (shipped in arpo/assets: 1.2M parameters, 5.0 MB; `arpo sft`
reproduces it); `arpo:arith` is a small arithmetic task whose answers a Python tool call computes
exactly; `arpo:facts` a BM25 index over a few made-up documents (for the local search backend);
`arpo:agentic` the generated benchmark of `arpo.tasks` (its splits as a dataset, its corpus as an
index). Any other name or path is returned unchanged: Hugging Face (or the tool service) loads it as usual.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import random
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

PREFIX = "arpo:"


def cache_dir() -> Path:
    return Path(os.environ.get("ARPO_CACHE", Path.home() / ".cache" / "arpo"))


def _build_once(target: Path, build: Callable[[Path], None]) -> Path:
    """Build into a temporary sibling and rename: concurrent first uses never see half a build."""
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        build(tmp)
        os.rename(tmp, target)
    except OSError:
        if not target.exists():
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _arith(directory: Path) -> None:
    """256 arithmetic questions, all in the train split (the embedded run's quick task)."""
    rng = random.Random(0)
    lines = []
    for i in range(256):
        a, b = rng.randint(2, 99), rng.randint(2, 99)
        op = rng.choice("+-*")
        value = {"+": a + b, "-": a - b, "*": a * b}[op]
        lines.append(
            json.dumps({"id": f"arith-{i}", "question": f"What is {a} {op} {b}?", "answer": str(value)})
        )
    (directory / "train.jsonl").write_text("\n".join(lines) + "\n")


def _tiny(directory: Path) -> None:
    from arpo.tiny import save_tiny

    save_tiny(directory)


FACTS = [
    ("Veloria", "Ostrin is the capital of Veloria, a country on the northern coast."),
    ("Ostrin", "Ostrin has a population of 412,000 and was founded in 1204."),
    ("Arithmetic", "To multiply two numbers exactly, use Python: print(12 * 34) prints 408."),
    ("Tarn river", "The Tarn river flows 380 km from the Grey Hills to the sea at Ostrin."),
]


def _facts(directory: Path) -> None:
    from arpo.services.tools.search import build_index

    corpus = directory / "corpus.jsonl"
    rows = [{"id": f"fact-{i}", "title": t, "text": x} for i, (t, x) in enumerate(FACTS)]
    corpus.write_text("".join(json.dumps(r) + "\n" for r in rows))
    build_index(corpus, directory / "index")


def _agentic(directory: Path) -> None:
    from arpo.tasks import generate, write

    write(generate(seed=0), directory)


def _agentic_index(directory: Path) -> None:
    from arpo.services.tools.search import build_index

    # The dataset's own corpus (built once, shared), not a second copy of the benchmark.
    build_index(Path(resolve_dataset(f"{PREFIX}agentic")) / "corpus.jsonl", directory / "index")


ASSETS = Path(__file__).parent / "assets"


def _agent_tiny(directory: Path) -> None:
    """The shipped checkpoint (arpo/assets/agent-tiny, reproduced by `arpo sft`), if it was trained on the
    benchmark this code generates."""
    from arpo.sft import MANIFEST
    from arpo.tasks import VERSION

    shipped = ASSETS / "agent-tiny"
    manifest = json.loads((shipped / MANIFEST).read_text())
    if manifest["benchmark_version"] != VERSION:
        raise ValueError(
            f"model: arpo:agent-tiny was trained on benchmark version {manifest['benchmark_version']} and "
            f"arpo.tasks generates version {VERSION}; train one with `arpo sft DIR` and use DIR as the model"
        )
    for f in shipped.iterdir():
        shutil.copy2(f, directory / f.name)


# kind -> name -> (builder, the file or folder inside the built directory that is the artifact)
BUILT_INS: dict[str, dict[str, tuple[Callable[[Path], None], str]]] = {
    "model": {"tiny": (_tiny, "."), "agent-tiny": (_agent_tiny, ".")},
    "dataset": {"arith": (_arith, "."), "agentic": (_agentic, ".")},
    "index": {"facts": (_facts, "index"), "agentic": (_agentic_index, "index")},
}


def _resolve(kind: str, path_or_name: str) -> str:
    if not path_or_name.startswith(PREFIX):
        return path_or_name
    name, table = path_or_name.removeprefix(PREFIX), BUILT_INS[kind]
    if name not in table:
        raise ValueError(f"{kind}: no built-in {kind} {path_or_name!r} (built-in: {sorted(table)})")
    build, artifact = table[name]
    folder = {"model": "models", "dataset": "datasets", "index": "indexes"}[kind]
    return str(_build_once(cache_dir() / folder / f"{name}{_edition(name)}", build) / artifact)


@functools.cache
def _edition(name: str) -> str:
    """A suffix that changes with what a built-in is built from, so an upgrade never reads a stale cache:
    the benchmark's version for `agentic`, the shipped checkpoint's digest for `agent-tiny`."""
    if name == "agentic":
        from arpo.tasks import VERSION

        return f"-v{VERSION}"
    if name == "agent-tiny":
        digest = hashlib.sha256()
        for f in sorted((ASSETS / "agent-tiny").iterdir()):
            digest.update(f.name.encode() + f.read_bytes())
        return f"-{digest.hexdigest()[:12]}"
    return ""


def resolve_model(name_or_path: str) -> str:
    """The local path of a built-in model, or `name_or_path` unchanged."""
    return _resolve("model", name_or_path)


def resolve_index(path_or_name: str) -> str:
    """The local directory of a built-in search index, or `path_or_name` unchanged."""
    return _resolve("index", path_or_name)


def resolve_dataset(path_or_name: str) -> str:
    """The local directory of a built-in dataset (one `<split>.jsonl` per split), or `path_or_name`."""
    return _resolve("dataset", path_or_name)
