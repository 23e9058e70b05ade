"""Reading a service's settings from `ARPO_<SERVICE>_*` environment variables."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TypeVar

from pydantic import BaseModel, ValidationError

S = TypeVar("S", bound=BaseModel)


def split_urls(text: str) -> list[str]:
    """A comma-separated list of URLs, blanks dropped."""
    return [u.strip() for u in text.split(",") if u.strip()]


def settings_from_env(cls: type[S], prefix: str, environ: Mapping[str, str] | None = None) -> S:
    """Field `x` of `cls` comes from `{prefix}X`; an error names every bad variable."""
    env = os.environ if environ is None else environ
    data = {k[len(prefix) :].lower(): v for k, v in env.items() if k.startswith(prefix)}
    try:
        return cls.model_validate(data)
    except ValidationError as err:
        lines = [
            f"{prefix}{'_'.join(str(p) for p in e['loc']).upper() or '*'}: {e['msg']}" for e in err.errors()
        ]
        service = prefix.removeprefix("ARPO_").rstrip("_").lower()
        raise ValueError(f"invalid {service} settings:\n" + "\n".join(lines)) from None
