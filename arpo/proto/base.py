"""Base model and field types shared by all messages."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

Id = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.\-]+$")]
"""Identifiers that appear in Redis keys: letters, digits, `_`, `.` and `-` only."""
TokenId = Annotated[int, Field(ge=0)]
MaskValue = Annotated[int, Field(ge=0, le=1)]


class Message(BaseModel):
    """A message of the contract: unknown fields, NaN and infinities are rejected."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, use_attribute_docstrings=True)


def check_parallel(owner: Any, *names: str) -> None:
    """Raise if the per-token lists `names` of `owner` differ in length; the message names them."""
    lengths = {name: len(getattr(owner, name)) for name in names}
    if len(set(lengths.values())) > 1:
        detail = ", ".join(f"{n}={v}" for n, v in lengths.items())
        raise ValueError(f"per-token arrays must have equal lengths, got {detail}")
