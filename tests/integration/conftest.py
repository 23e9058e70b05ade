"""Fixtures with a real tiny model, saved to disk and loaded through `from_pretrained`."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from arpo.services.rollout.hf import HFEngine
from arpo.tiny import save_tiny


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture
def engine(tiny_model_dir: Path) -> HFEngine:
    # ARPO_TEST_DEVICE=cuda runs the engine tests on a GPU (fp32, same tolerances).
    # The dynamic-cache path; tests/integration/test_rollout_static.py covers the static one.
    device = os.environ.get("ARPO_TEST_DEVICE", "cpu")
    return HFEngine.from_pretrained(str(tiny_model_dir), dtype="float32", device=device, static=False)


@pytest.fixture
def model(tiny_model_dir: Path) -> torch.nn.Module:
    """The tiny model in fp32 on CPU, for the learner tests."""
    return HFEngine.from_pretrained(str(tiny_model_dir), dtype="float32", device="cpu", static=False).model
