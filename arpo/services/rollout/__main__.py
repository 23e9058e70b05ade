"""`python -m arpo.services.rollout`: load the model named by ARPO_ROLLOUT_MODEL and serve it."""

from __future__ import annotations

import logging
import sys

import uvicorn

from arpo.builtins import resolve_model
from arpo.services.rollout.app import create_app
from arpo.services.rollout.engine import Engine, EngineKind
from arpo.services.rollout.settings import RolloutSettings


def build_engine(settings: RolloutSettings) -> Engine:
    match settings.engine:
        case EngineKind.HF:
            from arpo.services.rollout.hf import HFEngine

            return HFEngine.from_pretrained(
                resolve_model(settings.model),
                revision=settings.revision,
                dtype=settings.dtype,
                device=settings.device,
                trust_remote_code=settings.trust_remote_code,
                seed=settings.seed,
            )
        case EngineKind.VLLM:
            from arpo.services.rollout.vllm_engine import VLLMEngine

            return VLLMEngine.from_pretrained(
                resolve_model(settings.model),
                dtype=settings.dtype,
                max_model_len=settings.max_model_len,
                memory_fraction=settings.memory_fraction,
                enforce_eager=settings.enforce_eager,
                seed=settings.seed,
                topk=settings.entropy_topk,
                tail=settings.entropy_tail,
                trust_remote_code=settings.trust_remote_code,
            )


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = RolloutSettings.from_env()
    except ValueError as err:
        sys.stderr.write(f"{err}\n")
        return 2
    app = create_app(build_engine(settings), settings)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="info")
    return 0


if __name__ == "__main__":
    sys.exit(main())
