"""Live batch progress: the WebSocket routes (connect, subscribe, ...) and the fan-out of job changes to subscribers.

Policy lives here; ``modelrun.connections`` stores, ``modelrun.push`` delivers, ``modelrun.progress`` shapes the
messages. Delivery rules:

- a subscriber gets ``subscribed``, then at once the batch's state (``progress``, or ``completed`` if it is over);
- a job change becomes a ``progress`` message to the batch's subscribers, at most one per
  ``PROGRESS_INTERVAL_MS`` per batch unless the status or attempt changed;
- each terminal status of each attempt becomes one ``completed`` message per subscriber: a conditional write on the
  subscription decides who sends it (the subscribe path or the stream path, a first delivery or a retry), and a
  delivery that fails for now gives the claim back and asks the stream for a retry;
- a connection found gone is forgotten with all its subscriptions.
"""

from __future__ import annotations

import hmac
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from aws_lambda_powertools import Logger

from modelrun.batches.failures import is_transient
from modelrun.batches.store import JobStore
from modelrun.connections import ConnectionStore, Subscriber
from modelrun.errors import ModelrunError, TransientFailure
from modelrun.progress import (
    PROGRESS_INTERVAL_MS,
    Completion,
    NotifyState,
    completed_message,
    error_message,
    is_terminal,
    latest_images,
    parse_request,
    progress_due,
    progress_message,
    subscribed_message,
    unsubscribed_message,
)
from modelrun.push import ConnectionGone, Pusher

logger = Logger(child=True)

API_KEY_CACHE_S = 300.0


class MissingApiKey(ModelrunError):
    code = "invalid_api_key"
    status = 401


class InvalidApiKey(ModelrunError):
    code = "invalid_api_key"
    status = 403


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class ApiKeyCheck:
    """Compares a presented key with the REST API's key, whose value ``load`` reads (value, enabled); the value is
    cached per container for ``max_age_s``, so a disabled or regenerated key takes effect within minutes."""

    load: Callable[[], tuple[str, bool]]
    max_age_s: float = API_KEY_CACHE_S
    _cached: tuple[str, bool] | None = None
    _loaded_at: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def check(self, presented: str | None) -> None:
        if not presented:
            raise MissingApiKey("send the API key as the api_key query parameter or the x-api-key header")
        value, enabled = self._key()
        if not enabled or not hmac.compare_digest(presented.encode("utf-8"), value.encode("utf-8")):
            raise InvalidApiKey("the API key is not valid: use the key of the stack's REST API")

    def _key(self) -> tuple[str, bool]:
        with self._lock:
            if self._cached is None or time.monotonic() - self._loaded_at > self.max_age_s:
                self._cached = self.load()
                self._loaded_at = time.monotonic()
            return self._cached


@dataclass
class LiveRoutes:
    """What the WebSocket API's routes do: the API key check, subscriptions, and the state a subscriber is owed."""

    connections: ConnectionStore
    pusher: Pusher
    jobs: JobStore
    api_url: str
    api_key: ApiKeyCheck

    def connect(self, connection_id: str, *, connected_at_ms: int, source_ip: str | None, api_key: str | None) -> None:
        """Accept a connection that presents the API key (raises MissingApiKey/InvalidApiKey otherwise)."""
        self.api_key.check(api_key)
        self.connections.connect(connection_id, connected_at_ms=connected_at_ms, source_ip=source_ip)
        logger.info("connected", connection_id=connection_id)

    def disconnect(self, connection_id: str) -> None:
        removed = self.connections.forget(connection_id)
        logger.info("disconnected", connection_id=connection_id, items_removed=removed)

    def message(self, connection_id: str, body: str | None, *, connected_at_ms: int) -> None:
        """A client message: a subscribe or unsubscribe request, or an error message back saying what to send."""
        try:
            try:
                request = parse_request(body)
                if request.action == "subscribe":
                    self.subscribe(connection_id, request.batch_id, connected_at_ms=connected_at_ms)
                else:
                    self.unsubscribe(connection_id, request.batch_id)
            except ModelrunError as exc:
                if exc.status >= 500:
                    raise
                logger.info("message refused", connection_id=connection_id, code=exc.code)
                self.pusher.send(connection_id, error_message(exc))
        except ConnectionGone:
            self.connections.forget(connection_id)

    def subscribe(self, connection_id: str, batch_id: str, *, connected_at_ms: int) -> None:
        self.jobs.get(batch_id)  # NotFound before anything is stored or sent
        self.pusher.send(connection_id, subscribed_message(batch_id))
        self.connections.subscribe(connection_id, batch_id, connected_at_ms=connected_at_ms)
        # Read after subscribing: a change from now on reaches this subscriber through the stream as well.
        job = self.jobs.get(batch_id)
        logger.info("subscribed", connection_id=connection_id, batch_id=batch_id, status=job["status"])
        if not is_terminal(job):
            self.pusher.send(connection_id, progress_message(job))
            return
        claim = self.connections.claim_completion(connection_id, batch_id, Completion.of(job))
        if claim is None:
            return  # the stream path sent this completion a moment ago
        try:
            self.pusher.send(connection_id, completed_message(job, self.api_url))
        except TransientFailure:
            self.connections.release(claim)
            raise

    def unsubscribe(self, connection_id: str, batch_id: str) -> None:
        self.connections.unsubscribe(connection_id, batch_id)
        self.pusher.send(connection_id, unsubscribed_message(batch_id))


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
