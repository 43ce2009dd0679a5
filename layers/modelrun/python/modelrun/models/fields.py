"""How model.json values are quoted in load errors: the one wording shared by the spec, the transforms and the task
decoders, so every message names a value the same way."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

MAX_SHOWN_CHARS = 60


def show(value: Any) -> str:
    """A value as it would appear in JSON, shortened for error messages."""
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= MAX_SHOWN_CHARS else text[: MAX_SHOWN_CHARS - 3] + "..."


def one_of(options: Sequence[str]) -> str:
    """``"a" or "b"`` for two options, ``one of "a", "b", "c"`` for more."""
    quoted = [f'"{option}"' for option in options]
    if len(quoted) == 2:
        return f"{quoted[0]} or {quoted[1]}"
    return "one of " + ", ".join(quoted)
