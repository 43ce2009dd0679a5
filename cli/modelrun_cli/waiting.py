"""Waiting for a batch: poll GET /batches/{id} with a growing interval until it ends or the deadline passes."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from modelrun_cli.errors import ApiError

TERMINAL = frozenset({"COMPLETED", "COMPLETED_WITH_ERRORS", "FAILED"})
SUCCEEDED = frozenset({"COMPLETED", "COMPLETED_WITH_ERRORS"})
FIRST_INTERVAL_S = 0.5
MAX_INTERVAL_S = 5.0
GROWTH = 1.5
DEFAULT_TIMEOUT_S = 3600.0


def poll_intervals(
    first: float = FIRST_INTERVAL_S, maximum: float = MAX_INTERVAL_S, growth: float = GROWTH
) -> Iterator[float]:
    """0.5, 0.75, 1.125, ... up to 5 seconds, then 5 seconds for ever."""
    interval = first
    while True:
        yield interval
        interval = min(interval * growth, maximum)


def progress_key(job: dict[str, Any]) -> tuple[Any, ...]:
    """What has to change for a new progress line: the status or a count."""
    counts = job.get("counts") or {}
    return job.get("status"), counts.get("predicted"), counts.get("failed"), counts.get("pending")


def transient(error: ApiError) -> bool:
    """Worth polling on: no answer, throttling, or the gateway/function failing for a moment."""
    return error.status == 0 or error.status == 429 or error.status >= 500


class BatchReader(Protocol):
    """What waiting needs of the API client: GET /batches/{id}."""

    def batch(self, batch_id: str) -> dict[str, Any]: ...


@dataclass
class WaitOutcome:
    job: dict[str, Any]
    finished: bool  # False: the deadline passed first

    @property
    def succeeded(self) -> bool:
        return self.finished and self.job.get("status") in SUCCEEDED


def wait_for_batch(
    client: BatchReader,
    batch_id: str,
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    on_progress: Callable[[dict[str, Any], float], None] | None = None,
    on_retry: Callable[[ApiError], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> WaitOutcome:
    """Poll until the batch is terminal or ``timeout_s`` has passed; ``on_progress`` hears of every change.

    A transient error (no answer, 429, 5xx) while polling is reported to ``on_retry`` and polled through until
    the deadline; any other error (unknown batch, bad key) ends the wait at once.
    """
    started = clock()
    deadline = started + timeout_s
    intervals = poll_intervals()
    job: dict[str, Any] | None = None
    seen: tuple[Any, ...] | None = None
    while True:
        try:
            job = client.batch(batch_id)
        except ApiError as error:
            if not transient(error) or clock() >= deadline:
                raise
            if on_retry is not None:
                on_retry(error)
        else:
            key = progress_key(job)
            if key != seen:
                seen = key
                if on_progress is not None:
                    on_progress(job, clock() - started)
            if job.get("status") in TERMINAL:
                return WaitOutcome(job, finished=True)
        remaining = deadline - clock()
        if remaining <= 0:
            if job is None:
                raise ApiError(0, "timeout", f"no answer about batch {batch_id} within {timeout_s:g} s")
            return WaitOutcome(job, finished=False)
        sleep(min(next(intervals), remaining))
