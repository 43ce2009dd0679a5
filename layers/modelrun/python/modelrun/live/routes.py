"""The WebSocket API's routes: the API key check on connect (which resolves the connection's tenant), subscribe and
unsubscribe (to the tenant's own batches only), and the state a new subscriber is owed at once (the delivery rules
are in the package docstring, ``modelrun.live``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from aws_lambda_powertools import Logger

from modelrun.batches.store import JobStore
from modelrun.errors import ModelrunError, NotFound, TransientFailure
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
from modelrun.tenants import Tenant
from modelrun.tenants.resolve import InvalidApiKey, MissingApiKey

logger = Logger(child=True)

__all__ = ["InvalidApiKey", "LiveRoutes", "MissingApiKey"]


@dataclass
class LiveRoutes:
    """What the WebSocket API's routes do: the API key check, subscriptions, and the state a subscriber is owed.

    Attributes:
        tenant_of_key: the tenant of a presented API key value (``TenantResolver.for_key_value``), raising
            MissingApiKey or InvalidApiKey.
    """

    connections: ConnectionStore
    pusher: Pusher
    jobs: JobStore
    api_url: str
    tenant_of_key: Callable[[str | None], Tenant]

    def connect(self, connection_id: str, *, connected_at_ms: int, source_ip: str | None, api_key: str | None) -> None:
        """Accept a connection that presents a tenant's API key, and remember whose it is (raises MissingApiKey or
        InvalidApiKey otherwise)."""
        tenant = self.tenant_of_key(api_key)
        self.connections.connect(connection_id, connected_at_ms=connected_at_ms, source_ip=source_ip, tenant=tenant)
        logger.info("connected", connection_id=connection_id, tenant=tenant.name)

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
        """Subscribe to one of the connection's tenant's batches; another tenant's is NotFound, as a missing one."""
        tenant = self.connections.tenant_of(connection_id)
        if tenant is None:  # a connection $connect never accepted (or one expired): it owns nothing
            raise NotFound(f"no batch {batch_id!r}: check the id returned by POST /batches", batch_id=batch_id)
        jobs = self.jobs.for_tenant(tenant)
        jobs.get(batch_id)  # NotFound before anything is stored or sent
        self.pusher.send(connection_id, subscribed_message(batch_id))
        self.connections.subscribe(connection_id, batch_id, connected_at_ms=connected_at_ms)
        # Read after subscribing: a change from now on reaches this subscriber through the stream as well.
        job = jobs.get(batch_id)
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
