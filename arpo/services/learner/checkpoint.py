"""Checkpoints: everything a learner needs to continue a run exactly where it stopped.

`<directory>/step-<n>/` holds the backend's state (`TorchLearner.save_state`: model safetensors and
optimizer state; DeepSpeed's own checkpoint for that backend) and `state.json` (step, policy version,
data position, Python and torch RNG states, and a manifest of every file with its size). A checkpoint is
written to a temporary directory and renamed, then `latest` (a text file naming it) is replaced
atomically; the previous checkpoint is deleted only after that. Loading checks the manifest: a missing
or truncated file is a `CheckpointError` naming it, and the checkpoint before stays where it was.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from arpo.services.learner.files import atomic_directory
from arpo.services.learner.torch_backend import TorchLearner

LATEST = "latest"
STATE = "state.json"


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used; the message names the file."""


@dataclass(frozen=True)
class Resumed:
    step: int
    policy_version: int
    data_position: int


def save(directory: Path, step: int, policy_version: int, data_position: int, learner: TorchLearner) -> Path:
    target = directory / f"step-{step}"
    with atomic_directory(target) as tmp:
        learner.save_state(tmp)
        files = sorted(p for p in tmp.rglob("*") if p.is_file())
        meta = {
            "step": step,
            "policy_version": policy_version,
            "data_position": data_position,
            "python_rng": random.getstate()[1],
            "torch_rng": torch.get_rng_state().tolist(),
            "files": {str(p.relative_to(tmp)): p.stat().st_size for p in files},
        }
        (tmp / STATE).write_text(json.dumps(meta))
    previous = _latest_name(directory)
    pointer = directory / f".{LATEST}.tmp"
    pointer.write_text(target.name)
    os.replace(pointer, directory / LATEST)
    if previous is not None and previous != target.name:
        shutil.rmtree(directory / previous, ignore_errors=True)
    return target


def _latest_name(directory: Path) -> str | None:
    path = directory / LATEST
    return path.read_text().strip() if path.is_file() else None


def load(directory: Path, learner: TorchLearner) -> Resumed | None:
    """Restore the latest checkpoint into `learner`; None when there is none."""
    name = _latest_name(directory)
    if name is None:
        return None
    ckpt = directory / name
    try:
        meta = json.loads((ckpt / STATE).read_text())
    except (OSError, ValueError) as err:
        raise CheckpointError(f"{ckpt / STATE}: unreadable ({err})") from None
    for file, size in meta["files"].items():
        path = ckpt / file
        if not path.is_file() or path.stat().st_size != size:
            raise CheckpointError(f"{path}: missing or truncated (expected {size} bytes)")
    learner.load_state(ckpt)
    random.setstate((3, tuple(meta["python_rng"]), None))
    torch.set_rng_state(torch.tensor(meta["torch_rng"], dtype=torch.uint8))
    return Resumed(meta["step"], meta["policy_version"], meta["data_position"])
