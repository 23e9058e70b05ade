"""`arpo demo`: the ARPO core end to end on a random tiny model, in one process, in seconds.

A self-check of the algorithm on a scripted tool; `arpo run` is the platform's embedded run. What is real:
token sampling with exact per-token entropy from the logits, ARPO's entropy-based forking after tool
results under the budget M (and GRPO at the same M for comparison), the trajectory trees, GRPO
advantages with soft or hard attribution, the clipped policy loss and one AdamW step, and a check that
the step raised the likelihood of above-average trajectories relative to below-average ones.
Sampling goes through the rollout service's HF engine. What is a stand-in, and said so in the output:
the model is a randomly initialized 2-layer Qwen2 over a 16-symbol vocabulary; the "tool" is scripted
(it returns the prompt's hidden digit), and the toy reward is 1 when that digit appears in the
trajectory's final segment.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import torch

from arpo.config import RunConfig
from arpo.core.advantages import leaf_advantages, tree_sequences
from arpo.core.branching import Budget, should_branch
from arpo.core.entropy import logprobs_and_entropies, segment_entropy
from arpo.core.loss import LossDiagnostics, policy_loss
from arpo.core.tree import Segment, TrajectoryTree
from arpo.proto.rollout import GenerateRequest, SamplingParams
from arpo.services.rollout.hf import HFEngine
from arpo.tiny import random_model

SYMBOLS = "0123456789+=?QA "
TOOL_MARK = SYMBOLS.index("=")


def encode(text: str) -> list[int]:
    return [SYMBOLS.index(ch) for ch in text]


def decode(ids: list[int] | tuple[int, ...]) -> str:
    return "".join(SYMBOLS[i] for i in ids)


class SymbolTokenizer:
    """The demo's 16-symbol vocabulary, with the part of the tokenizer interface the HF engine uses."""

    pad_token_id = None
    eos_token_id = None  # no end of sequence: every segment has exactly `segment_tokens` tokens

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return encode(text)

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        return decode(ids)


def demo_engine(seed: int) -> HFEngine:
    """The HF engine around a random tiny Qwen2 over the 16 symbols (CPU, dynamic cache)."""
    model = random_model(SymbolTokenizer(), "tiny", seed, max_positions=256, vocab_size=len(SYMBOLS))
    return HFEngine(model, SymbolTokenizer(), "demo-tiny", seed=seed, static=False)


@dataclass
class TreeRollout:
    """One prompt's tree, with the counts the report shows."""

    prompt_id: str
    gold: int
    segments: list[Segment] = field(default_factory=list)
    tool_calls: int = 0
    forks: int = 0
    rewards: dict[str, float] = field(default_factory=dict)

    @property
    def tree(self) -> TrajectoryTree:
        return TrajectoryTree(self.segments)


@dataclass(frozen=True)
class Pending:
    """A trajectory waiting to run: continue after `parent_id` from round `round_index`."""

    parent_id: str
    h0: float | None
    round_index: int
    streak: int


def rollout_tree(
    engine: HFEngine, cfg: RunConfig, prompt_id: str, gold: int, segment_tokens: int, rng: random.Random
) -> TreeRollout:
    """Grow one prompt's tree: N roots, a scripted tool call after every round but the last, ARPO forks."""
    b, rounds = cfg.branching, cfg.rollout.max_tool_calls + 1
    out = TreeRollout(prompt_id, gold)
    root = f"{prompt_id}.root"
    out.segments.append(Segment(root, None, tuple(encode(f"Q{gold % 7}?")), (0, 0, 0)))
    prefixes: dict[str, list[int]] = {root: list(out.segments[0].token_ids)}
    granted, budget = Budget(b.group_size).admit(b.initial_rollouts)
    queue = [Pending(root, None, 0, 0)] * granted
    while not budget.complete:
        if not queue:
            granted, budget = budget.refill()
            queue = [Pending(root, None, 0, 0)] * granted
        job = queue.pop(0)
        parent, h0, streak = job.parent_id, job.h0, job.streak
        for rnd in range(job.round_index, rounds):
            sampling = SamplingParams(
                max_tokens=segment_tokens,
                temperature=cfg.rollout.temperature,
                stop=[],
                ignore_eos=True,
                seed=rng.randrange(2**31),
            )
            (response,) = engine.generate(
                [GenerateRequest(prompt_token_ids=prefixes[parent], sampling=sampling)]
            )
            ids = response.completions[0].token_ids
            hbar = segment_entropy(response.completions[0].entropies, b.entropy_window)
            if h0 is None:
                h0 = hbar
            elif rnd > 0 and should_branch(hbar - h0, cfg.branch_rule, rng.random(), streak):
                n, budget = budget.admit(b.fork_width)  # fork at the tool result ending `parent`
                queue += [Pending(parent, h0, rnd, streak + 1)] * n
                out.forks += n
                streak = streak + 1 if n else 0
            else:
                streak = 0
            tool = [TOOL_MARK, gold] if rnd < rounds - 1 else []  # the scripted tool: the hidden digit
            out.tool_calls += 1 if tool else 0
            node_id = f"{prompt_id}.n{len(out.segments)}"
            mask = (1,) * len(ids) + (0,) * len(tool)
            out.segments.append(Segment(node_id, parent, tuple(ids + tool), mask))
            prefixes[node_id] = prefixes[parent] + ids + tool
            parent = node_id
        out.rewards[parent] = float(gold in ids)
        budget = budget.finish()
    return out


def sequence_logprobs(
    model: torch.nn.Module, sequences: list[list[int]], temperature: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Learner-side log-probs and entropies of every token given its prefix: (B, T) each, 0 at t = 0."""
    width = max(len(s) for s in sequences)
    ids = torch.tensor([s + [0] * (width - len(s)) for s in sequences])
    attention = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in sequences])
    logits = model(ids, attention_mask=attention).logits[:, :-1]
    logps, ents = logprobs_and_entropies(logits, ids[:, 1:], temperature)
    pad = torch.zeros(len(sequences), 1)
    return torch.cat([pad, logps], dim=1), torch.cat([pad, ents], dim=1)


@dataclass(frozen=True)
class StepReport:
    """Outcome of the demo's single update."""

    diagnostics: LossDiagnostics
    positive_shift: float
    negative_shift: float


def train_step(model: torch.nn.Module, cfg: RunConfig, trees: list[TreeRollout], lr: float) -> StepReport:
    """Advantages over each tree, the clipped loss on all leaves, one AdamW step, and its effect."""
    seqs, masks, advs = [], [], []
    for t in trees:
        adv = leaf_advantages(t.tree, t.rewards)
        for s in tree_sequences(t.tree, adv, cfg.loss.advantage_mode):
            seqs.append(s.token_ids)
            masks.append(s.loss_mask)
            advs.append(s.advantages)
    width = max(len(s) for s in seqs)
    mask = torch.tensor([m + [0] * (width - len(m)) for m in masks], dtype=torch.float32)
    adv_t = torch.tensor([a + [0.0] * (width - len(a)) for a in advs], dtype=torch.float32)
    temp = cfg.rollout.temperature
    with torch.no_grad():
        old, _ = sequence_logprobs(model, seqs, temp)
    optim = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=cfg.optim.weight_decay)
    new, ents = sequence_logprobs(model, seqs, temp)
    loss, diag = policy_loss(new, old, adv_t, mask, cfg.loss_params, entropies=ents)
    loss.backward()  # type: ignore[no-untyped-call]
    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
    optim.step()
    with torch.no_grad():
        after, _ = sequence_logprobs(model, seqs, temp)
    # Per-sequence mean log-prob change of its trained tokens, split by the sign of the advantage.
    shift = ((after - old) * mask).sum(1) / mask.sum(1).clamp(min=1)
    sign = (adv_t * mask).sum(1)
    pos, neg = shift[sign > 0], shift[sign < 0]
    return StepReport(
        diag,
        float(pos.mean()) if len(pos) else 0.0,
        float(neg.mean()) if len(neg) else 0.0,
    )


@dataclass(frozen=True)
class DemoResult:
    """Trees grown with ARPO and with GRPO at the same budget, and the update on the ARPO trees."""

    arpo: list[TreeRollout]
    grpo: list[TreeRollout]
    step: StepReport


def run_demo(cfg: RunConfig, prompts: int, segment_tokens: int, lr: float) -> DemoResult:
    """Roll out `prompts` trees with ARPO and with GRPO (N = M) from the same model, then update once."""
    engine = demo_engine(cfg.seed)
    golds = [random.Random(cfg.seed + i).randrange(10) for i in range(prompts)]
    grpo_cfg = cfg.model_copy(
        update={"branching": cfg.branching.model_copy(update={"initial_rollouts": cfg.branching.group_size})}
    )
    trees = {}
    for name, c in (("arpo", cfg), ("grpo", grpo_cfg)):
        rng = random.Random(cfg.seed)
        trees[name] = [rollout_tree(engine, c, f"p{i}", g, segment_tokens, rng) for i, g in enumerate(golds)]
    return DemoResult(trees["arpo"], trees["grpo"], train_step(engine.model, cfg, trees["arpo"], lr))
