"""The WebSocket API's routes: the API key check on connect, subscribe and unsubscribe, and the state a new
subscriber is owed at once (the delivery rules are in the package docstring, ``modelrun.live``)."""

from __future__ import annotations

import hmac
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from aws_lambda_powertools import Logger

from modelrun.batches.store import JobStore
from modelrun.errors import ModelrunError, TransientFailure
from modelrun.live.connections import ConnectionStore
from modelrun.live.messages import (
    Completion,
    completed_message,
    error_message,
    is_terminal,
    parse_request,
    progress_message,
    subscribed_message,
    unsubscribed_message,
)
from modelrun.live.push import ConnectionGone, Pusher

logger = Logger(child=True)


API_KEY_CACHE_S = 300.0


class MissingApiKey(ModelrunError):
    code = "invalid_api_key"
    status = 401


class InvalidApiKey(ModelrunError):
    code = "invalid_api_key"
    status = 403


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
