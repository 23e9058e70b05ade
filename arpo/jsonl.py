"""JSON Lines, read one way everywhere: blank lines skipped, a bad line named by file and line number."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def read_jsonl(path: Path, error: type[Exception] = ValueError) -> Iterator[tuple[int, Any]]:
    """(line number, value) for every non-blank line of `path`; `error` names the line that is not JSON."""
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                yield number, json.loads(line)
            except json.JSONDecodeError as err:
                raise error(f"{path}:{number}: not JSON ({err.msg})") from None
