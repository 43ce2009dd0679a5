"""WebSocket connections and their subscriptions in DynamoDB (the ConnectionsTable).

One table, three kinds of item (``pk``, ``sk``):

- ``conn#<connection id>``, ``conn``: a connection, from ``$connect`` to ``$disconnect``, with the ``tenant`` its
  API key belongs to (it may subscribe to that tenant's batches only);
- ``conn#<connection id>``, ``sub#<batch id>``: a subscription. It carries ``batch_id`` and ``connection_id``, the
  keys of the sparse ``by_batch`` index (batch -> its subscribers), and which completed message it was last sent
  (``completed_attempt``, ``completed_status``, projected into the index);
- ``batch#<batch id>``, ``progress``: when progress was last sent for a batch (the throttle's state).

So a connection's items are one query (``$disconnect`` and gone connections delete them all) and a batch's
subscribers one index query. Everything expires (TTL ``expires_at``): API Gateway ends a connection after two hours
at most, so nothing here outlives it by long even when ``$disconnect`` never runs.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from modelrun.aws.errors import condition_failed
from modelrun.live.messages import Completion, NotifyState
from modelrun.tenants import Tenant

BY_BATCH = "by_batch"
# API Gateway's longest WebSocket connection is 2 hours; an hour more before TTL removes what $disconnect missed.
CONNECTION_TTL_S = 3 * 3600
NOTIFY_STATE_TTL_S = 24 * 3600


def _connection_key(connection_id: str) -> str:
    return f"conn#{connection_id}"


def _subscription(connection_id: str, batch_id: str) -> dict[str, str]:
    return {"pk": _connection_key(connection_id), "sk": f"sub#{batch_id}"}


@dataclass(frozen=True)
class Subscriber:
    connection_id: str
    # The completed message this subscriber was last sent for the batch (None: none yet).
    completed: Completion | None


@dataclass(frozen=True)
class Claim:
    """The right to send one completed message to one subscriber, with what it replaced (to give it back)."""

    connection_id: str
    batch_id: str
    completion: Completion
    previous: Completion | None


def _completion(item: dict[str, Any]) -> Completion | None:
    if "completed_attempt" not in item:
        return None
    return Completion(attempt=int(item["completed_attempt"]), status=str(item.get("completed_status", "")))


@dataclass
class ConnectionStore:
    """The ConnectionsTable (a boto3 ``Table`` resource)."""

    table: Any

    # -- connections ----------------------------------------------------------------------------------------------
    def connect(
        self, connection_id: str, *, connected_at_ms: int, source_ip: str | None = None, tenant: Tenant | None = None
    ) -> None:
        item: dict[str, Any] = {
            "pk": _connection_key(connection_id),
            "sk": "conn",
            "connection_id": connection_id,
            "connected_at": connected_at_ms,
            "expires_at": self.expiry(connected_at_ms),
        }
        if source_ip:
            item["source_ip"] = source_ip
        if tenant is not None:
            item["tenant"] = tenant.name
        self.table.put_item(Item=item)

    def tenant_of(self, connection_id: str) -> Tenant | None:
        """The tenant whose key opened the connection; None for a connection this table does not hold."""
        item = self.table.get_item(
            Key={"pk": _connection_key(connection_id), "sk": "conn"}, ConsistentRead=True, ProjectionExpression="tenant"
        ).get("Item")
        name = (item or {}).get("tenant")
        return Tenant(str(name)) if name else None

    def forget(self, connection_id: str) -> int:
        """Delete a connection and all its subscriptions ($disconnect, or a connection found gone); how many items."""
        keys: list[dict[str, str]] = []
        query: dict[str, Any] = {
            "KeyConditionExpression": "pk = :pk",
            "ExpressionAttributeValues": {":pk": _connection_key(connection_id)},
            "ProjectionExpression": "pk, sk",
            "ConsistentRead": True,
        }
        while True:
            page = self.table.query(**query)
            keys += [{"pk": item["pk"], "sk": item["sk"]} for item in page.get("Items", [])]
            if "LastEvaluatedKey" not in page:
                break
            query["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        with self.table.batch_writer() as batch:
            for key in keys:
                batch.delete_item(Key=key)
        return len(keys)

    @staticmethod
    def expiry(connected_at_ms: int) -> int:
        return int(connected_at_ms // 1000) + CONNECTION_TTL_S

    # -- subscriptions ---------------------------------------------------------------------------------------------
    def subscribe(self, connection_id: str, batch_id: str, *, connected_at_ms: int) -> None:
        """Subscribe; subscribing again starts over (the subscriber is owed the batch's state, completed or not)."""
        self.table.update_item(
            Key=_subscription(connection_id, batch_id),
            UpdateExpression=(
                "SET batch_id = :b, connection_id = :c, subscribed_at = :now, expires_at = :exp "
                "REMOVE completed_attempt, completed_status"
            ),
            ExpressionAttributeValues={
                ":b": batch_id,
                ":c": connection_id,
                ":now": int(time.time() * 1000),
                ":exp": self.expiry(connected_at_ms),
            },
        )

    def unsubscribe(self, connection_id: str, batch_id: str) -> None:
        self.table.delete_item(Key=_subscription(connection_id, batch_id))

    def subscribers(self, batch_id: str) -> Iterator[Subscriber]:
        query: dict[str, Any] = {
            "IndexName": BY_BATCH,
            "KeyConditionExpression": "batch_id = :b",
            "ExpressionAttributeValues": {":b": batch_id},
        }
        while True:
            page = self.table.query(**query)
            for item in page.get("Items", []):
                yield Subscriber(connection_id=str(item["connection_id"]), completed=_completion(item))
            if "LastEvaluatedKey" not in page:
                return
            query["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def claim_completion(self, connection_id: str, batch_id: str, completion: Completion) -> Claim | None:
        """Record that this subscriber is sent ``completion`` unless it was sent it (or a later attempt's) already.

        Whoever wins this conditional write sends the message: the subscribe path and the stream path never both
        do, and a stream batch processed twice does not send twice. None: not to be sent (or no subscription).
        """
        try:
            response = self.table.update_item(
                Key=_subscription(connection_id, batch_id),
                UpdateExpression="SET completed_attempt = :a, completed_status = :s",
                ConditionExpression=(
                    "attribute_exists(pk) AND (attribute_not_exists(completed_attempt) OR completed_attempt < :a "
                    "OR (completed_attempt = :a AND completed_status <> :s))"
                ),
                ExpressionAttributeValues={":a": completion.attempt, ":s": completion.status},
                ReturnValues="UPDATED_OLD",
            )
        except ClientError as exc:
            if condition_failed(exc):
                return None
            raise
        previous = _completion(response.get("Attributes", {}))
        return Claim(connection_id=connection_id, batch_id=batch_id, completion=completion, previous=previous)

    def release(self, claim: Claim) -> None:
        """Give a claim back (its message could not be delivered for now), so that a retry sends it."""
        key = _subscription(claim.connection_id, claim.batch_id)
        condition = "completed_attempt = :a AND completed_status = :s"
        values: dict[str, Any] = {":a": claim.completion.attempt, ":s": claim.completion.status}
        if claim.previous is None:
            update = "REMOVE completed_attempt, completed_status"
        else:
            update = "SET completed_attempt = :pa, completed_status = :ps"
            values.update({":pa": claim.previous.attempt, ":ps": claim.previous.status})
        try:
            self.table.update_item(
                Key=key, UpdateExpression=update, ConditionExpression=condition, ExpressionAttributeValues=values
            )
        except ClientError as exc:
            if not condition_failed(exc):
                raise

    # -- progress throttle -----------------------------------------------------------------------------------------
    def notify_state(self, batch_id: str) -> NotifyState | None:
        item = self.table.get_item(Key={"pk": f"batch#{batch_id}", "sk": "progress"}, ConsistentRead=True).get("Item")
        if not item:
            return None
        return NotifyState(
            sent_at_ms=int(item["sent_at_ms"]), status=str(item["status"]), attempt=int(item.get("attempt", 1))
        )

    def record_progress(self, batch_id: str, previous: NotifyState | None, sent: NotifyState) -> bool:
        """Move the batch's throttle state from ``previous`` to ``sent``; False if another sender moved it first."""
        item = {
            "pk": f"batch#{batch_id}",
            "sk": "progress",
            "sent_at_ms": sent.sent_at_ms,
            "status": sent.status,
            "attempt": sent.attempt,
            "expires_at": sent.sent_at_ms // 1000 + NOTIFY_STATE_TTL_S,
        }
        if previous is None:
            condition: dict[str, Any] = {"ConditionExpression": "attribute_not_exists(pk)"}
        else:
            condition = {
                "ConditionExpression": "sent_at_ms = :previous",
                "ExpressionAttributeValues": {":previous": previous.sent_at_ms},
            }
        try:
            self.table.put_item(Item=item, **condition)
        except ClientError as exc:
            if condition_failed(exc):
                return False
            raise
        return True
