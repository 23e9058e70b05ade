"""The paper's motivating observation, on any model and run: token entropy rises right after tool results.

A trajectory is a list of segments (what the model wrote between two tool results), each tagged with the
tool whose result precedes it. `entropy_profile` averages token entropy at each position 0..P-1 of the
segments after each tool, and over every other generated token ("elsewhere"). Segments come from
evaluation records (`arpo eval`, `arpo compare`: records JSONL) or from a run's trajectory trees (each
node once; Redis, or a JSON file of trees as `GET /v1/runs/{id}/trees/{step}` returns them).
"""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from arpo.core.entropy import segment_entropy
from arpo.evaluate import Record, Segment
from arpo.proto.tree import Tree

POSITIONS = 32


def entropy_profile(segments: Iterable[Segment], positions: int = POSITIONS) -> dict[str, Any]:
    """Mean token entropy at each position 0..positions-1 of the segments that follow a tool result (by
    tool), how many tokens each mean is over, and the mean over every other generated token."""
    sums: dict[str, list[float]] = defaultdict(lambda: [0.0] * positions)
    counts: dict[str, list[int]] = defaultdict(lambda: [0] * positions)
    elsewhere: list[float] = []
    for seg in segments:
        for k, h in enumerate(seg.entropies):
            if seg.after is not None and k < positions:
                sums[seg.after][k] += h
                counts[seg.after][k] += 1
            else:
                elsewhere.append(h)
    after = {
        tool: [s / c if c else None for s, c in zip(sums[tool], counts[tool], strict=True)] for tool in sums
    }
    return {
        "after": after,
        "counts": dict(counts),
        "elsewhere": statistics.fmean(elsewhere) if elsewhere else None,
        "elsewhere_tokens": len(elsewhere),
    }


def record_segments(records: Iterable[Record]) -> list[Segment]:
    return [seg for r in records for seg in r.segments]


def tree_segments(trees: Iterable[Tree]) -> list[Segment]:
    """Every generated segment of the trees once (shared prefixes are not counted per leaf)."""
    out = []
    for tree in trees:
        by_id = {n.node_id: n for n in tree.nodes}
        for node in tree.nodes:
            if node.parent_id is None:
                continue
            parent = by_id[node.parent_id]
            after = parent.tool_call.tool if parent.tool_call is not None else None
            out.append(Segment(after, node.entropies[: sum(node.loss_mask)]))
    return out


def file_segments(path: Path) -> list[Segment]:
    """Segments of a records JSONL (arpo eval / compare), or of trees (a JSON list, or JSONL)."""
    text = path.read_text(encoding="utf-8").strip()
    if not text:
        raise ValueError(f"{path}: empty")
    if text.startswith("["):
        return tree_segments(Tree.model_validate(t) for t in json.loads(text))
    rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    if all("nodes" in row for row in rows):
        return tree_segments(Tree.model_validate(row) for row in rows)
    if all("segments" in row for row in rows):
        return record_segments(Record.from_json(json.dumps(row)) for row in rows)
    raise ValueError(f"{path}: neither evaluation records (with 'segments') nor trees (with 'nodes')")


def delta_h_by_tool(records: Iterable[Record], window: int) -> dict[str, list[float]]:
    """ΔH at every tool result of every record, by tool: what ARPO's branch decision sees there.

    ΔH = Hbar(segment after the result) - H0, Hbar the mean entropy of a segment's first `window` tokens
    and H0 that of the trajectory's first segment (DESIGN.md §4.3; unnormalized, in nats)."""
    out: dict[str, list[float]] = defaultdict(list)
    for record in records:
        if not record.segments or not record.segments[0].entropies:
            continue
        h0 = segment_entropy(record.segments[0].entropies, window)
        for seg in record.segments[1:]:
            if seg.after is not None and seg.entropies:
                out[seg.after].append(segment_entropy(seg.entropies, window) - h0)
    return dict(out)


def table_rows(profile: dict[str, Any], every: int = 4) -> list[list[str]]:
    """Rows (position, one column per tool, elsewhere) for a printed table: every `every`-th position."""
    tools = sorted(profile["after"])
    rows = []
    length = max((len(v) for v in profile["after"].values()), default=0)
    for k in range(0, length, every):
        cells = [profile["after"][t][k] for t in tools]
        counts = [profile["counts"][t][k] for t in tools]
        rows.append(
            [
                str(k),
                *(f"{v:.3f} ({n})" if v is not None else "-" for v, n in zip(cells, counts, strict=True)),
            ]
        )
    return rows


def summary_line(profile: dict[str, Any], first: int = 4) -> str:
    """The observation in one line: mean entropy of the first tokens after each tool vs elsewhere."""
    parts = []
    for tool, values in sorted(profile["after"].items()):
        head = [v for v in values[:first] if v is not None]
        if head:
            parts.append(f"first {first} tokens after {tool} results {statistics.fmean(head):.3f}")
    elsewhere = profile["elsewhere"]
    parts.append(f"elsewhere {elsewhere:.3f}" if elsewhere is not None else "elsewhere -")
    return "mean entropy (nats): " + ", ".join(parts)


def profile_of(segments: Sequence[Segment], positions: int = POSITIONS) -> dict[str, Any]:
    if not segments:
        raise ValueError("no generated tokens to analyse")
    return entropy_profile(segments, positions)
