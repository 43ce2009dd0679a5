"""Fault injection for tests and demos: make a share of ``predict_batch`` invocations fail or time out.

Asked per batch (``"faults": {...}`` in POST /batches) and honoured only where the stack allows it (the
``AllowFaultInjection`` parameter: local mode sets it, a deployed stack refuses faults unless it is enabled).

- ``transient_rate``: that fraction of predict_batch invocations raises ``TransientFailure``;
- ``timeout_rate``: that fraction sleeps past the function's timeout (the invocation times out);
- ``fail_chunks``: those chunk indexes fail every time, in predict_batch and in recover alike (a chunk that can
  never succeed, to show the parking queue and ``retries_exhausted``).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from modelrun.errors import FaultsNotAllowed, InvalidRequest, TransientFailure

FIELDS = ("transient_rate", "timeout_rate", "fail_chunks")


@dataclass(frozen=True)
class Faults:
    transient_rate: float = 0.0
    timeout_rate: float = 0.0
    fail_chunks: tuple[int, ...] = ()

    @property
    def any(self) -> bool:
        return bool(self.transient_rate or self.timeout_rate or self.fail_chunks)

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
        for name in ("transient_rate", "timeout_rate"):
            rate = value.get(name, 0.0)
            if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0.0 <= rate <= 1.0:
                raise InvalidRequest(f'"faults.{name}" must be a number from 0 to 1, got {rate!r}')
            rates[name] = float(rate)
        if rates["transient_rate"] + rates["timeout_rate"] > 1.0:
            raise InvalidRequest('"faults.transient_rate" + "faults.timeout_rate" must not exceed 1')
        chunks = value.get("fail_chunks", [])
        if not isinstance(chunks, list) or not all(
            isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in chunks
        ):
            raise InvalidRequest('"faults.fail_chunks" must be a list of chunk indexes (integers from 0)')
        faults = cls(rates["transient_rate"], rates["timeout_rate"], tuple(sorted(set(chunks))))
        if faults.any and not allowed:
            raise FaultsNotAllowed(
                "this stack does not allow fault injection: deploy it with AllowFaultInjection=true to test recovery"
            )
        return faults

    @classmethod
    def from_event(cls, event: dict[str, Any]) -> Faults:
        """The faults a Map iteration or dead-letter message carries (already validated at submit)."""
        raw = event.get("faults") or {}
        return cls(
            float(raw.get("transient_rate", 0.0)),
            float(raw.get("timeout_rate", 0.0)),
            tuple(int(c) for c in raw.get("fail_chunks", [])),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "transient_rate": self.transient_rate,
            "timeout_rate": self.timeout_rate,
            "fail_chunks": list(self.fail_chunks),
        }

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
        if in_recovery or not (self.transient_rate or self.timeout_rate):
            return
        roll = draw()
        if roll < self.transient_rate:
            raise TransientFailure(f"injected fault: transient failure of chunk {chunk}")
        if roll < self.transient_rate + self.timeout_rate:
            time.sleep(remaining_ms() / 1000 + 1)
            raise TransientFailure(f"injected fault: chunk {chunk} outlived its timeout")
