"""The fan-out of job changes (the jobs table's stream) to each batch's subscribers: throttled ``progress``, and
one ``completed`` per terminal status of each attempt (the delivery rules are in the package docstring,
``modelrun.live``)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from aws_lambda_powertools import Logger

from modelrun.batches.failures import is_transient
from modelrun.errors import TransientFailure
from modelrun.live.connections import ConnectionStore, Subscriber
from modelrun.live.messages import (
    PROGRESS_INTERVAL_MS,
    Completion,
    NotifyState,
    completed_message,
    is_terminal,
    latest_images,
    progress_due,
    progress_message,
)
from modelrun.live.push import ConnectionGone, Pusher

logger = Logger(child=True)


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True)
class JobChange:
    """One stream record of the jobs table: its sequence number and the job as it is after the change."""

    sequence_number: str
    job: dict[str, Any]


@dataclass
class ProgressNotifier:
    """Turns job changes (a DynamoDB stream batch, in order) into messages for the subscribers of each batch."""

    connections: ConnectionStore
    pusher: Pusher
    api_url: str
    pool: ThreadPoolExecutor
    clock: Callable[[], int] = now_ms
    interval_ms: int = PROGRESS_INTERVAL_MS

    def notify(self, changes: Iterable[JobChange]) -> str | None:
        """Send what the changes call for. Returns the sequence number to retry from when some delivery must be
        retried (the first change of each batch whose delivery failed for now), else None."""
        by_batch: dict[str, list[JobChange]] = {}
        for change in changes:
            batch_id = change.job.get("batch_id")
            if isinstance(batch_id, str):
                by_batch.setdefault(batch_id, []).append(change)
        retry_from: list[str] = []
        for batch_id, batch_changes in by_batch.items():
            try:
                self.notify_batch(batch_id, [change.job for change in batch_changes])
            except Exception as exc:
                if not is_transient(exc):
                    raise
                logger.warning("delivery to be retried", batch_id=batch_id, reason=str(exc))
                retry_from.append(batch_changes[0].sequence_number)
        return min(retry_from, key=int) if retry_from else None

    def notify_batch(self, batch_id: str, images: list[dict[str, Any]]) -> None:
        subscribers = list(self.connections.subscribers(batch_id))
        if not subscribers:
            return
        latest, terminal = latest_images(images)
        gone: set[str] = set()
        failures = 0
        for image in terminal.get(batch_id, []):
            failures += self._complete(batch_id, image, subscribers, gone)
        last = latest[batch_id]
        if not is_terminal(last):
            self._progress(batch_id, last, subscribers, gone)
        for connection_id in gone:
            self.connections.forget(connection_id)
        if failures:
            raise TransientFailure(f"{failures} completed message(s) for batch {batch_id} could not be delivered yet")

    def _complete(self, batch_id: str, job: dict[str, Any], subscribers: list[Subscriber], gone: set[str]) -> int:
        completion = Completion.of(job)
        message = completed_message(job, self.api_url)

        def deliver(subscriber: Subscriber) -> bool:
            """False when the message could not be delivered for now (the claim is given back)."""
            sent = subscriber.completed
            if sent is not None and (sent.attempt > completion.attempt or sent == completion):
                return True
            claim = self.connections.claim_completion(subscriber.connection_id, batch_id, completion)
            if claim is None:
                return True
            try:
                self.pusher.send(subscriber.connection_id, message)
            except ConnectionGone:
                gone.add(subscriber.connection_id)
            except TransientFailure:
                self.connections.release(claim)
                return False
            return True

        delivered = list(self.pool.map(deliver, [sub for sub in subscribers if sub.connection_id not in gone]))
        logger.info("completed sent", batch_id=batch_id, status=completion.status, attempt=completion.attempt)
        return delivered.count(False)

    def _progress(self, batch_id: str, job: dict[str, Any], subscribers: list[Subscriber], gone: set[str]) -> None:
        now = self.clock()
        last = self.connections.notify_state(batch_id)
        if not progress_due(last, job, now, self.interval_ms):
            return
        attempt = int(job.get("attempt", 1))
        if not self.connections.record_progress(batch_id, last, NotifyState(now, str(job.get("status")), attempt)):
            return
        message = progress_message(job)
        # A subscriber already sent this attempt's completion (the subscribe path saw the end first) gets no
        # progress from an older change.
        due = [
            sub
            for sub in subscribers
            if sub.connection_id not in gone and (sub.completed is None or sub.completed.attempt < attempt)
        ]

        def deliver(subscriber: Subscriber) -> None:
            try:
                self.pusher.send(subscriber.connection_id, message)
            except ConnectionGone:
                gone.add(subscriber.connection_id)
            except TransientFailure as exc:
                # Progress is superseded by the next change; not worth retrying the stream batch for.
                logger.warning("progress not delivered", connection_id=subscriber.connection_id, reason=str(exc))

        list(self.pool.map(deliver, due))
