"""Four handlers that end their sandbox as a hostile input or a bug would: each invocation must fail with Lambda's
error type while the runtime carries on (tests/unit/local/test_local_sandboxes.py)."""

from __future__ import annotations

import ctypes
import os
import time
from typing import Any


def exit_3(event: dict[str, Any], context: Any) -> None:
    """Leaves without unwinding, as a library calling ``exit()`` from C would."""
    os._exit(3)


def segfault(event: dict[str, Any], context: Any) -> None:
    """Reads address 0, as a native decoder fed a hostile file might."""
    ctypes.string_at(0)


def sleep_past_timeout(event: dict[str, Any], context: Any) -> dict[str, str]:
    time.sleep(context.get_remaining_time_in_millis() / 1000 + 5)
    return {"status": "outlived its timeout"}


def allocate_past_memory(event: dict[str, Any], context: Any) -> dict[str, str]:
    """Holds 16 MB blocks, every page written, up to twice the function's memory size."""
    blocks = [b"x" * (16 << 20) for _ in range(context.memory_limit_in_mb // 8)]
    return {"status": f"held {len(blocks) * 16} MB"}
