"""The HF engine: any Hugging Face causal LM, a batched decode loop with a KV cache, exact entropy.

One `generate` call is one batch. Each decode step samples one token per active row and computes, from
the very logits it sampled from, the token's log-prob and the full-vocabulary entropy
(`arpo.core.entropy.step_distribution`). Two decode paths share that step:

- dynamic cache (CPU default): prompts are left-padded and prefilled once each (the `n` samples of a
  prompt share that prefill: the cache rows are duplicated, not recomputed); rows that finish (stop
  string, end of sequence, max_tokens or the context limit) leave the batch.
- static cache (CUDA default, `static_decode`): fixed shapes and a step replayed as CUDA graphs; each
  sample is prefilled on its own row and finished rows stay in the batch, ignored.

Not here: continuous batching across calls (the app groups concurrent requests into one call) and a
prefix cache across calls.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from arpo.core.entropy import step_distribution, step_statistics
from arpo.proto.rollout import Completion, FinishReason, GenerateRequest, GenerateResponse, TopLogprob
from arpo.services.rollout.engine import TokenizedEngine, WeightsError, safetensors_files
from arpo.services.rollout.sampling import StopMatcher, draw, filter_probs
from arpo.services.rollout.static_decode import StaticDecoder


@dataclass
class _Row:
    """One sample being generated."""

    request: int
    max_tokens: int
    temperature: float
    top_k: int
    top_p: float
    stops: StopMatcher
    generator: torch.Generator | None
    ignore_eos: bool
    top_logprobs: int
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    entropies: list[float] = field(default_factory=list)
    finish: FinishReason | None = None
    stop_string: str | None = None
    alternatives: list[list[TopLogprob]] = field(default_factory=list)


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """`auto` is bfloat16 on CUDA and float32 elsewhere."""
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]


class HFEngine(TokenizedEngine):
    """Generation with transformers + torch; CPU by default, CUDA when given a CUDA device."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        name: str,
        seed: int = 0,
        compute_logprobs: bool = True,
        static: bool | None = None,
        compile_step: bool | None = None,
    ) -> None:
        """`static` (default: on CUDA) decodes with a static cache; `compile_step` (default: with `static`
        on CUDA) compiles the step into CUDA graphs. On CPU both default off."""
        super().__init__(tokenizer, name)
        self.model = model.eval()
        self._compute_logprobs = compute_logprobs  # False only for the benchmark's no-entropy baseline
        self.device = next(model.parameters()).device
        self._shared = torch.Generator(self.device).manual_seed(seed)
        self._eos = self._eos_ids()
        self._pieces: dict[int, str] = {}
        # Stop matching decodes with the Rust tokenizer directly when there is one (no wrapper overhead).
        self._backend = getattr(tokenizer, "backend_tokenizer", None)
        # transformers 5.24 renamed the KV-cache argument `past_key_values` to `cache`; accept both.
        self._cache_arg = (
            "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
        )
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(self._eos, default=0)
        self._pad = int(pad)
        on_cuda = self.device.type == "cuda"
        self._static: StaticDecoder | None = None
        if on_cuda if static is None else static:
            compile_ = on_cuda if compile_step is None else compile_step
            self._static = StaticDecoder(model, self._cache_arg, self._pad, compile_)

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str,
        revision: str | None = None,
        dtype: str = "auto",
        device: str | None = None,
        trust_remote_code: bool = False,
        seed: int = 0,
        static: bool | None = None,
    ) -> HFEngine:
        """Load a causal LM and its tokenizer by hub name or local path."""
        from transformers import AutoModelForCausalLM, AutoTokenizer

        dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        tokenizer = AutoTokenizer.from_pretrained(
            name_or_path, revision=revision, trust_remote_code=trust_remote_code
        )
        model: Any = AutoModelForCausalLM.from_pretrained(
            name_or_path,
            revision=revision,
            dtype=resolve_dtype(dtype, dev),
            trust_remote_code=trust_remote_code,
        )
        return cls(model.to(dev), tokenizer, name_or_path, seed=seed, static=static)

    def _eos_ids(self) -> set[int]:
        ids: set[int] = set()
        for source in (getattr(self.model, "generation_config", None), self.model.config, self.tokenizer):
            value = getattr(source, "eos_token_id", None)
            ids.update([value] if isinstance(value, int) else list(value or []))
        return ids

    @property
    def vocab_size(self) -> int:
        return int(self.model.get_output_embeddings().weight.shape[0])

    @property
    def max_context_tokens(self) -> int:
        return int(getattr(self.model.config, "max_position_embeddings", 2048))

    def _fast_decode(self, token_ids: list[int]) -> str:
        if self._backend is None:
            return self.decode(token_ids)
        return str(self._backend.decode(token_ids, skip_special_tokens=True))

    def _piece(self, token_id: int) -> str:
        """The text of one token, cached (the vocabulary is fixed)."""
        cached = self._pieces.get(token_id)
        if cached is None:
            cached = self._pieces[token_id] = self._fast_decode([token_id])
        return cached

    @torch.inference_mode()
    def generate(self, requests: Sequence[GenerateRequest]) -> list[GenerateResponse]:
        rows = [row for i, req in enumerate(requests) for row in self._rows(i, req)]
        if self._static is not None:
            return self._generate_static(requests, rows)
        owners = torch.tensor([r.request for r in rows], device=self.device)
        logits, cache, mask, positions = self._prefill([req.prompt_token_ids for req in requests], owners)
        limits = [self.max_context_tokens - len(requests[r.request].prompt_token_ids) for r in rows]
        active = list(range(len(rows)))
        trace: list[tuple[Sequence[_Row], torch.Tensor]] = []
        while active:
            tokens, token_list = self._sample([rows[i] for i in active], logits, trace)
            keep = [j for j, i in enumerate(active) if not self._append(rows[i], token_list[j], limits[i])]
            if not keep:
                break
            if len(keep) < len(active):
                idx = torch.tensor(keep, device=self.device)
                cache.batch_select_indices(idx)
                mask, positions = mask[idx], positions[idx]
                tokens = tokens[idx]
                active = [active[j] for j in keep]
            mask = torch.cat([mask, mask.new_ones(len(active), 1)], dim=1)
            positions = positions + 1
            out = self.model(
                input_ids=tokens[:, None],
                attention_mask=mask,
                position_ids=positions[:, None],
                use_cache=True,
                **{self._cache_arg: cache},
            )
            logits = out.logits[:, -1]
        self._read_trace(trace, rows)
        return self._responses(requests, rows)

    def _generate_static(
        self, requests: Sequence[GenerateRequest], rows: list[_Row]
    ) -> list[GenerateResponse]:
        assert self._static is not None
        prompts = [requests[r.request].prompt_token_ids for r in rows]
        limits = [self.max_context_tokens - len(p) for p in prompts]
        max_new = min(max(r.max_tokens for r in rows), max(limits))
        trace: list[tuple[Sequence[_Row], torch.Tensor]] = []
        self._static.run(
            prompts,
            max_new,
            lambda active, logits: self._sample([rows[i] for i in active], logits, trace),
            lambda i, token: self._append(rows[i], token, limits[i]),
        )
        self._read_trace(trace, rows)
        return self._responses(requests, rows)

    def _rows(self, index: int, req: GenerateRequest) -> list[_Row]:
        s = req.sampling
        matcher = StopMatcher(self._fast_decode, s.stop, self._piece)
        rows = []
        for k in range(s.n):
            gen = None
            if s.seed is not None:
                gen = torch.Generator(self.device).manual_seed(s.seed * 1_000_003 + k)
            rows.append(
                _Row(
                    index,
                    s.max_tokens,
                    s.temperature,
                    s.top_k,
                    s.top_p,
                    matcher,
                    gen,
                    s.ignore_eos,
                    s.top_logprobs,
                )
            )
        return rows

    def _prefill(
        self, prompts: Sequence[Sequence[int]], owners: torch.Tensor
    ) -> tuple[torch.Tensor, Any, torch.Tensor, torch.Tensor]:
        """Left-padded prefill of each distinct prompt, then one cache row per sample."""
        width = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), width), self._pad, dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for i, p in enumerate(prompts):
            ids[i, width - len(p) :] = torch.tensor(p)
            mask[i, width - len(p) :] = 1
        ids, mask = ids.to(self.device), mask.to(self.device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        out = self.model(
            input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, logits_to_keep=1
        )
        cache = getattr(out, self._cache_arg)
        cache.batch_select_indices(owners)
        return out.logits[owners, -1], cache, mask[owners], positions[owners, -1]

    def _sample(
        self, rows: Sequence[_Row], logits: torch.Tensor, trace: list[tuple[Sequence[_Row], torch.Tensor]]
    ) -> tuple[torch.Tensor, list[int]]:
        """Draw one token per row; queue its log-prob and the entropy, from the same logits, on `trace`.

        Returns the tokens on the device and as Python ints. Reading the tokens is the one host read per
        step: the statistics are launched after it, so the device computes them while the host does its
        bookkeeping, and `_read_trace` reads them all once the batch is done.
        """
        # Greedy rows (temperature 0) keep only their top token and report temperature-1 statistics.
        temps = [r.temperature or 1.0 for r in rows]
        same = all(t == temps[0] for t in temps)
        temperature = temps[0] if same else torch.tensor(temps, device=self.device)[:, None]
        probs = step_distribution(logits, temperature)
        candidates = probs
        if any(r.top_k > 0 or r.top_p < 1 or r.temperature == 0 for r in rows):
            top_k = torch.tensor([1 if r.temperature == 0 else r.top_k for r in rows], device=self.device)
            top_p = torch.tensor([r.top_p for r in rows], device=self.device)
            candidates = filter_probs(probs, top_k, top_p)
        tokens = draw(candidates, [r.generator for r in rows], self._shared)
        token_list = [int(t) for t in tokens.tolist()]
        if self._compute_logprobs:  # False only in the benchmark's baseline: sampling alone
            trace.append((rows, step_statistics(probs, tokens)))
            self._record_alternatives(rows, probs)
        return tokens, token_list

    @staticmethod
    def _read_trace(trace: list[tuple[Sequence[_Row], torch.Tensor]], rows: Sequence[_Row]) -> None:
        """Move the batch's queued log-probs and entropies to their rows (one host read)."""
        if not trace:
            for row in rows:
                row.logprobs, row.entropies = [0.0] * len(row.token_ids), [0.0] * len(row.token_ids)
            return
        logps, ents = torch.cat([stats for _, stats in trace], dim=1).tolist()
        i = 0
        for step_rows, _ in trace:
            for row in step_rows:
                row.logprobs.append(min(logps[i], 0.0))
                row.entropies.append(max(ents[i], 0.0))
                i += 1

    @staticmethod
    def _record_alternatives(rows: Sequence[_Row], probs: torch.Tensor) -> None:
        """The k most likely tokens of each row that asked for them (OpenAI's top_logprobs)."""
        k = max(r.top_logprobs for r in rows)
        if k == 0:
            return
        top, ids = torch.topk(probs, k, dim=-1)
        values, ids_ = torch.log(top.clamp_min(torch.finfo(top.dtype).tiny)).tolist(), ids.tolist()
        for row, v, i in zip(rows, values, ids_, strict=True):
            if row.top_logprobs:
                n = row.top_logprobs
                row.alternatives.append(
                    [TopLogprob(token_id=t, logprob=min(x, 0.0)) for t, x in zip(i[:n], v[:n], strict=True)]
                )

    def _append(self, row: _Row, tid: int, limit: int) -> bool:
        """Add the sampled token to `row`; True when the row is finished."""
        row.token_ids.append(tid)
        if tid in self._eos and not row.ignore_eos:
            row.finish = FinishReason.EOS
        elif (stop := row.stops.match(row.token_ids)) is not None:
            row.finish, row.stop_string = FinishReason.STOP, stop
        elif len(row.token_ids) >= min(row.max_tokens, limit):
            row.finish = FinishReason.LENGTH
        return row.finish is not None

    def _responses(self, requests: Sequence[GenerateRequest], rows: Sequence[_Row]) -> list[GenerateResponse]:
        completions: list[list[Completion]] = [[] for _ in requests]
        for r in rows:
            completions[r.request].append(
                Completion(
                    token_ids=r.token_ids,
                    logprobs=r.logprobs,
                    entropies=r.entropies,
                    text=self.decode(r.token_ids),
                    finish_reason=r.finish or FinishReason.LENGTH,
                    stop_string=r.stop_string,
                    top_logprobs=r.alternatives if r.top_logprobs else None,
                )
            )
        return [
            GenerateResponse(
                completions=c, policy_version=self._version, prompt_tokens=len(req.prompt_token_ids)
            )
            for req, c in zip(requests, completions, strict=True)
        ]

    @torch.inference_mode()
    def score(self, token_ids: Sequence[int]) -> list[float]:
        ids = torch.tensor([list(token_ids)], device=self.device)
        logits = self.model(input_ids=ids).logits[0, :-1].float()
        logps = torch.log_softmax(logits, dim=-1).gather(-1, ids[0, 1:, None]).squeeze(-1)
        return [float(x) for x in logps.tolist()]

    def snapshot(self) -> object:
        return {k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()}

    def restore(self, snapshot: object) -> None:
        assert isinstance(snapshot, dict)
        self.model.load_state_dict(snapshot, strict=True)

    def load(self, path: Path) -> None:
        self.model.load_state_dict(self._read_state(path), strict=False)

    def _read_state(self, path: Path) -> dict[str, torch.Tensor]:
        """Read safetensors and check them against the model before anything is copied."""
        from safetensors.torch import load_file

        state: dict[str, torch.Tensor] = {}
        for f in safetensors_files(path):
            state.update(load_file(str(f)))
        own = self.model.state_dict()
        unexpected = sorted(set(state) - set(own))
        if unexpected:
            raise WeightsError("path", f"tensors the model does not have: {unexpected[:5]}")
        bad = [k for k, v in state.items() if tuple(v.shape) != tuple(own[k].shape)]
        if bad:
            raise WeightsError("path", f"shape mismatch for {bad[:5]}")
        loaded_ptrs = {own[k].data_ptr() for k in state}
        missing = [k for k in own if k not in state and own[k].data_ptr() not in loaded_ptrs]
        if missing:
            raise WeightsError("path", f"tensors missing from the update: {missing[:5]}")
        return state
