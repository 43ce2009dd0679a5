"""Recovery of chunks the state machine could not predict: one dead-letter message at a time.

A message is a Map iteration's input plus the error that made it fail (after the state machine's own retries).
``recover`` runs the chunk again here:

- success: its images get their outcomes, and the job is closed if this was the last missing work;
- a transient failure: the message is handed back to the queue with a visibility timeout that grows with the
  receive count (backoff by attempt), and comes back later;
- a permanent failure of the whole chunk: the chunk is split in halves, recursively, until the image at fault is
  alone; it is recorded as ``unprocessable`` with the error, and every other image gets its outcome;
- the last receive the queue allows (``maxReceiveCount``) tries nothing more: every image still without an outcome
  is recorded as ``retries_exhausted``, the job notes the parked chunk, and the message is left to fail once more,
  so SQS moves it to the parking queue for a person to look at. The job can then close: no image is left without
  an outcome, and none has two. That receive does only this bookkeeping because SQS parks a message whatever ends
  its last receive: had it run the chunk again, a crash or a timeout there would park the chunk with its images
  still missing and leave the job waiting for them (the retry API is then the way out).
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aws_lambda_powertools import Logger

from modelrun.batches.chunks import Chunk, ChunkPredictor
from modelrun.batches.close import BatchCloser
from modelrun.batches.failures import RETRIES_EXHAUSTED, UNPROCESSABLE, classify_state_error, is_transient
from modelrun.batches.store import FAILED_OUTCOME, JobStore, Outcome, now_iso
from modelrun.errors import ModelrunError

logger = Logger(child=True)

MAX_VISIBILITY_S = 12 * 3600
MAX_CAUSE_CHARS = 500


def backoff_seconds(receive_count: int, base_s: int, *, draw: Callable[[], float] = random.random) -> int:
    """Exponential backoff with full jitter for the next try of a message: 0..base*2^(n-1) seconds."""
    if base_s <= 0:
        return 0
    ceiling = min(MAX_VISIBILITY_S, base_s * 2 ** max(receive_count - 1, 0))
    return int(ceiling * draw())


@dataclass(frozen=True)
class DeadLetter:
    """A received dead-letter message."""

    body: dict[str, Any]
    receive_count: int
    receipt_handle: str
    message_id: str

    @property
    def error_name(self) -> str | None:
        error = self.body.get("error") or {}
        name = error.get("Error") if isinstance(error, dict) else None
        return str(name) if name else None

    @property
    def error_cause(self) -> str | None:
        """What the error said: a Lambda error's ``errorMessage`` from the ``Cause`` the state machine caught."""
        error = self.body.get("error") or {}
        cause = error.get("Cause") if isinstance(error, dict) else None
        if not cause:
            return None
        try:
            parsed = json.loads(cause)
        except (TypeError, ValueError):
            parsed = None
        message = parsed.get("errorMessage") if isinstance(parsed, dict) else None
        return str(message or cause)[:MAX_CAUSE_CHARS]


class GivenUp(Exception):
    """Raised on a message's last receive, after its bookkeeping, so that SQS moves it to the parking queue."""


@dataclass
class Recoverer:
    predictor: ChunkPredictor
    closer: BatchCloser
    store: JobStore
    s3: Any
    sqs: Any
    queue_url: str
    parking_queue_url: str
    max_receive_count: int
    backoff_base_s: int
    allow_faults: bool = False
    remaining_ms: Callable[[], int] = lambda: 60_000

    def handle(self, message: DeadLetter) -> dict[str, Any]:
        """Recover one chunk; raises when the message must be tried again (or parked)."""
        chunk = Chunk.from_event(message.body, self.s3)
        context = {
            "batch_id": chunk.batch_id,
            "chunk": chunk.index,
            "attempt": chunk.attempt,
            "receive_count": message.receive_count,
            "error": message.error_name,
            "kind": classify_state_error(message.error_name),
        }
        if message.receive_count >= self.max_receive_count:
            logger.warning("chunk recovery given up", extra=context)
            self.exhaust(chunk, message)
            # Visible again at once, so SQS moves it to the parking queue now, not after the visibility timeout.
            self.delay(message, seconds=0)
            raise GivenUp(f"chunk {chunk.index} of {chunk.batch_id}: recovery given up, the message goes to parking")
        logger.info("recovering chunk", extra=context)
        try:
            self.recover(chunk)
        except Exception as exc:
            logger.warning("chunk recovery failed", extra={**context, "reason": f"{type(exc).__name__}: {exc}"})
            self.delay(message)
            raise
        result = self.closer.try_close(chunk.batch_id, map_done=False)
        logger.info("chunk recovered", extra={**context, "job_status": result["status"]})
        return result

    def recover(self, chunk: Chunk) -> None:
        if self.allow_faults:
            chunk.faults.inject(chunk.index, in_recovery=True, remaining_ms=self.remaining_ms)
        self.isolate(chunk, [item for item, _ in chunk.items])

    def isolate(self, chunk: Chunk, items: list[int]) -> None:
        """Predict ``items``; on a permanent failure split them until the image at fault stands alone."""
        try:
            self.predictor.run(chunk, only=set(items))
            return
        except Exception as exc:
            if is_transient(exc):
                raise
            if len(items) == 1:
                self.record_unprocessable(chunk, items[0], exc)
                return
            logger.info("splitting chunk to isolate a failing image", extra={"chunk": chunk.index, "items": len(items)})
        middle = len(items) // 2
        self.isolate(chunk, items[:middle])
        self.isolate(chunk, items[middle:])

    def record_unprocessable(self, chunk: Chunk, item: int, exc: BaseException) -> None:
        key = dict(chunk.items)[item]
        message = exc.message if isinstance(exc, ModelrunError) else f"{type(exc).__name__}: {exc}"
        self._record(chunk, item, key, UNPROCESSABLE, f"the model could not process this image: {message}")
        logger.warning("image isolated as unprocessable", extra={"batch_id": chunk.batch_id, "item": item, "key": key})

    def exhaust(self, chunk: Chunk, message: DeadLetter) -> None:
        """The tries are used up: every image still without an outcome fails with ``retries_exhausted``."""
        error = ": ".join(part for part in (message.error_name, message.error_cause) if part)
        reason = (
            f"chunk {chunk.index} still failed after {message.receive_count - 1} recovery attempts"
            f"{f' (in the state machine: {error})' if error else ''}; its message is in the parking queue"
        )
        for item, key in chunk.items:
            self._record(chunk, item, key, RETRIES_EXHAUSTED, reason)
        self.store.note_parked(
            chunk.batch_id,
            {
                "chunk": chunk.index,
                "message_id": message.message_id,
                "queue_url": self.parking_queue_url,
                "error": message.error_name,
                "reason": reason,
                "at": now_iso(),
            },
        )
        self.closer.try_close(chunk.batch_id, map_done=False)

    def _record(self, chunk: Chunk, item: int, key: str, code: str, reason: str) -> None:
        outcome = Outcome(
            item=item,
            key=key,
            chunk=chunk.index,
            status=FAILED_OUTCOME,
            attempt=chunk.attempt,
            error_code=code,
            error_message=reason,
            **chunk.ids_of(key),
        )
        predicted, failed = self.store.record_outcome(chunk.batch_id, outcome)
        self.store.add_counts(chunk.batch_id, predicted=predicted, failed=failed)
        if chunk.dataset is not None and (predicted or failed):
            self.predictor.record_history(chunk, [outcome])

    def delay(self, message: DeadLetter, seconds: int | None = None) -> None:
        """Hand the message back with a backoff that grows with its receive count."""
        if seconds is None:
            seconds = backoff_seconds(message.receive_count, self.backoff_base_s)
        self.sqs.change_message_visibility(
            QueueUrl=self.queue_url, ReceiptHandle=message.receipt_handle, VisibilityTimeout=seconds
        )


def parse_body(body: str) -> dict[str, Any]:
    parsed = json.loads(body)
    if not isinstance(parsed, dict) or "chunk" not in parsed or "batch_id" not in parsed:
        raise ValueError("not a dead-letter message of the batch state machine (no batch_id/chunk)")
    return parsed
