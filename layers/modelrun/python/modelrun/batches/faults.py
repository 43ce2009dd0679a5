"""Fault injection for tests and demos: make a share of ``predict_batch`` invocations fail or time out.

Asked per batch (``"faults": {...}`` in POST /batches) and honoured only where the stack allows it (the
``AllowFaultInjection`` parameter: local mode sets it, a deployed stack refuses faults unless it is enabled).

- ``transient_rate``: that fraction of predict_batch invocations raises ``TransientFailure``;
- ``timeout_rate``: that fraction sleeps past the function's timeout (the invocation times out);
- ``exit_rate``, ``segfault_rate``, ``memory_rate``: that fraction ends its sandbox as a native crash would: it exits
  (``os._exit(3)``), reads address 0 (SIGSEGV), or allocates past the function's memory size (Lambda reports
  ``Runtime.ExitError`` or ``Runtime.OutOfMemory``, and the next invocation gets a new sandbox);
- ``fail_chunks``: those chunk indexes fail every time, in predict_batch and in recover alike (a chunk that can
  never succeed, to show the parking queue and ``retries_exhausted``).
"""

from __future__ import annotations

import ctypes
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from modelrun.errors import FaultsNotAllowed, InvalidRequest, TransientFailure

RATES = ("transient_rate", "timeout_rate", "exit_rate", "segfault_rate", "memory_rate")
FIELDS = (*RATES, "fail_chunks")


@dataclass(frozen=True)
class Faults:
    transient_rate: float = 0.0
    timeout_rate: float = 0.0
    exit_rate: float = 0.0
    segfault_rate: float = 0.0
    memory_rate: float = 0.0
    fail_chunks: tuple[int, ...] = ()

    @property
    def rates(self) -> tuple[float, ...]:
        return tuple(getattr(self, name) for name in RATES)

    @property
    def any(self) -> bool:
        return bool(any(self.rates) or self.fail_chunks)

    @classmethod
    def parse(cls, value: Any, *, allowed: bool) -> Faults:
        """Validate a request's ``faults`` object; refused where the stack does not allow fault injection."""
        if value is None:
            return cls()
        if not isinstance(value, dict):
            raise InvalidRequest('"faults" must be an object like {"transient_rate": 0.1, "timeout_rate": 0.0}')
        unknown = sorted(set(value) - set(FIELDS))
        if unknown:
            raise InvalidRequest(f'unknown "faults" field(s): {", ".join(unknown)}; known: {", ".join(FIELDS)}')
        rates = {}
        for name in RATES:
            rate = value.get(name, 0.0)
            if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0.0 <= rate <= 1.0:
                raise InvalidRequest(f'"faults.{name}" must be a number from 0 to 1, got {rate!r}')
            rates[name] = float(rate)
        if sum(rates.values()) > 1.0:
            raise InvalidRequest(f'the "faults" rates ({", ".join(RATES)}) must not add up to more than 1')
        chunks = value.get("fail_chunks", [])
        if not isinstance(chunks, list) or not all(
            isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in chunks
        ):
            raise InvalidRequest('"faults.fail_chunks" must be a list of chunk indexes (integers from 0)')
        faults = cls(**rates, fail_chunks=tuple(sorted(set(chunks))))
        if faults.any and not allowed:
            raise FaultsNotAllowed(
                "this stack does not allow fault injection: deploy it with AllowFaultInjection=true to test recovery"
            )
        return faults

    @classmethod
    def from_event(cls, event: dict[str, Any]) -> Faults:
        """The faults a Map iteration or dead-letter message carries (already validated at submit)."""
        raw = event.get("faults") or {}
        rates = {name: float(raw.get(name, 0.0)) for name in RATES}
        return cls(**rates, fail_chunks=tuple(int(c) for c in raw.get("fail_chunks", [])))

    def to_dict(self) -> dict[str, Any]:
        return {**{name: getattr(self, name) for name in RATES}, "fail_chunks": list(self.fail_chunks)}

    def inject(
        self,
        chunk: int,
        *,
        in_recovery: bool,
        remaining_ms: Callable[[], int],
        draw: Callable[[], float] = random.random,
    ) -> None:
        """Raise (or stall) as configured; a no-op for a batch without faults."""
        if chunk in self.fail_chunks:
            raise TransientFailure(f"injected fault: chunk {chunk} fails every time")
        if in_recovery or not any(self.rates):
            return
        roll = draw()
        bound = self.transient_rate
        if roll < bound:
            raise TransientFailure(f"injected fault: transient failure of chunk {chunk}")
        if roll < (bound := bound + self.timeout_rate):
            time.sleep(remaining_ms() / 1000 + 1)
            raise TransientFailure(f"injected fault: chunk {chunk} outlived its timeout")
        if roll < (bound := bound + self.exit_rate):
            os._exit(3)
        if roll < (bound := bound + self.segfault_rate):
            ctypes.string_at(0)
        if roll < bound + self.memory_rate:
            exhaust_memory()
            raise TransientFailure(f"injected fault: chunk {chunk} outgrew its memory size and was not stopped")


def exhaust_memory(block_mb: int = 64) -> list[bytes]:
    """Hold written blocks up to twice the function's memory size: Lambda stops the sandbox on the way."""
    limit_mb = 2 * int(os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128"))
    return [b"\xff" * (block_mb << 20) for _ in range(limit_mb // block_mb)]
