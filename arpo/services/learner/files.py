"""Writing a directory all at once: rollout servers and a resumed learner never read half of one."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def atomic_directory(target: Path) -> Iterator[Path]:
    """Yield a temporary sibling of `target` to fill; renamed to `target` when the block succeeds, deleted
    when it fails. An existing `target` is an error (what was written once stays as it was)."""
    if target.exists():
        raise FileExistsError(f"{target} exists: it is written once")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        yield tmp
        os.rename(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def save_weights(state: Mapping[str, Any], path: Path) -> None:
    """A full state dict as safetensors; tied tensors each get their own copy (safetensors refuses shared
    storage, and vLLM needs lm_head written out even when it is tied)."""
    from safetensors.torch import save_file

    save_file({k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}, str(path))
