"""The generation engine interface, the choice of engine, and the weight-sync guard.

Every engine continues token-id prefixes and reports, per generated token, its log-prob under
softmax(logits / T) and the entropy of that distribution, tagged with the policy version that produced
it. Engines are synchronous and not thread-safe: the app runs them on one worker thread, so a weight
update waits for the batch in flight and no response ever mixes two versions.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

from arpo.proto.rollout import GenerateRequest, GenerateResponse, ProbeSequence, WeightsStatus, WeightsUpdate


class EngineKind(StrEnum):
    """Which engine a rollout server runs."""

    HF = "hf"
    VLLM = "vllm"


class WeightsError(ValueError):
    """A weight update that cannot be applied (bad path, wrong keys or shapes, stale version).

    `field` names the WeightsUpdate field to change; the API answers 409 for `policy_version`, else 422.
    """

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def safetensors_files(path: Path) -> list[Path]:
    """The safetensors files of an update: `path` itself, or every `*.safetensors` in the directory."""
    files = [path] if path.is_file() else sorted(path.glob("*.safetensors"))
    if not files:
        raise WeightsError("path", f"no .safetensors files in {path}")
    return files


class Engine(Protocol):
    """What the rollout app needs from an engine."""

    @property
    def policy_version(self) -> int: ...

    @property
    def model_name(self) -> str: ...

    @property
    def vocab_size(self) -> int: ...

    @property
    def max_context_tokens(self) -> int: ...

    def generate(self, requests: Sequence[GenerateRequest]) -> list[GenerateResponse]:
        """Continue every request's prefix; all responses carry the current policy version."""
        ...

    def score(self, token_ids: Sequence[int]) -> list[float]:
        """log p(token_ids[i+1] | token_ids[:i+1]) at temperature 1 for every i (the probe)."""
        ...

    def snapshot(self) -> object:
        """An opaque copy of the current weights, to restore if an update is refused."""
        ...

    def load(self, path: Path) -> None:
        """Replace the weights in place from safetensors at `path` (raise WeightsError if unusable)."""
        ...

    def restore(self, snapshot: object) -> None:
        """Put back weights taken by `snapshot`."""
        ...

    def set_version(self, version: int) -> None: ...

    def encode(self, text: str) -> list[int]: ...

    def decode(self, token_ids: Sequence[int]) -> str: ...

    def chat_prompt(self, messages: Sequence[dict[str, str]]) -> list[int]:
        """Token ids of a chat rendered with the model's chat template (plain concatenation without one)."""
        ...


class TokenizedEngine:
    """What every engine shares: a Hugging Face tokenizer, a name, and the version being served."""

    def __init__(self, tokenizer: Any, name: str) -> None:
        self.tokenizer = tokenizer
        self._name = name
        self._version = 0

    @property
    def policy_version(self) -> int:
        return self._version

    def set_version(self, version: int) -> None:
        self._version = version

    @property
    def model_name(self) -> str:
        return self._name

    @property
    def vocab_size(self) -> int:
        """The tokenizer's vocabulary, added tokens included (engines report their model's output size)."""
        return len(self.tokenizer)

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    def decode(self, token_ids: Sequence[int]) -> str:
        return str(self.tokenizer.decode(list(token_ids), skip_special_tokens=True))

    def chat_prompt(self, messages: Sequence[dict[str, str]]) -> list[int]:
        """The model's chat template when it has one; plain `role: content` lines otherwise."""
        if getattr(self.tokenizer, "chat_template", None):
            ids = self.tokenizer.apply_chat_template(
                list(messages), add_generation_prompt=True, tokenize=True
            )
            if isinstance(ids, dict) or hasattr(ids, "input_ids"):
                ids = ids["input_ids"]
            return [int(i) for i in ids]
        return self.encode("".join(f"{m['role']}: {m['content']}\n" for m in messages) + "assistant: ")


def probe_error(engine: Engine, probe: ProbeSequence) -> float:
    """Largest |engine log-prob - sent log-prob| over the probe sequence."""
    got = engine.score(probe.token_ids)
    return max(abs(a - b) for a, b in zip(got, probe.logprobs, strict=True))


def update_weights(engine: Engine, update: WeightsUpdate) -> WeightsStatus:
    """Load `update` into `engine`; keep serving the old version if loading or the probe fails.

    Raises WeightsError for requests that are wrong on their face (stale version, missing path); a
    probe mismatch is not an exception but a refused status the caller reports.
    """
    start = time.perf_counter()
    if update.policy_version <= engine.policy_version:
        raise WeightsError(
            "policy_version",
            f"must be newer than the served version {engine.policy_version}, got {update.policy_version}",
        )
    path = Path(update.path)
    if not path.exists():
        raise WeightsError("path", f"{path} does not exist on the rollout server")
    backup = engine.snapshot()
    try:
        engine.load(path)
    except Exception:
        engine.restore(backup)  # a half-loaded model must never serve
        raise
    error = probe_error(engine, update.probe) if update.probe is not None else None
    if error is not None and not (math.isfinite(error) and error <= update.tolerance):
        engine.restore(backup)
        return WeightsStatus(
            accepted=False,
            policy_version=engine.policy_version,
            probe_max_abs_error=error if math.isfinite(error) else None,
            load_s=time.perf_counter() - start,
            reason=f"probe log-probs differ by {error:.3g} > tolerance {update.tolerance:g}; "
            f"kept version {engine.policy_version}",
        )
    engine.set_version(update.policy_version)
    return WeightsStatus(
        accepted=True,
        policy_version=update.policy_version,
        probe_max_abs_error=error,
        load_s=time.perf_counter() - start,
    )
