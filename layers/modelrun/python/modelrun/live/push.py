"""Sending to WebSocket clients through API Gateway's management API (``apigatewaymanagementapi``).

A connection that no longer exists answers ``GoneException`` (HTTP 410): that becomes ``ConnectionGone``, the
signal to forget the connection. Throttling and service errors become ``TransientFailure`` (try again later);
anything else is a bug or a permanent refusal and propagates.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from modelrun.aws.errors import error_code
from modelrun.batches.failures import is_transient
from modelrun.errors import TransientFailure
from modelrun.live.messages import encode

GONE = "GoneException"
# The management API's throttling error (HTTP 429), beside the SDK-wide transient codes.
THROTTLED = frozenset({"LimitExceededException", "TooManyRequestsException"})


class ConnectionGone(Exception):
    """The client of this connection has gone: forget the connection and its subscriptions."""

    def __init__(self, connection_id: str) -> None:
        super().__init__(f"connection {connection_id} is gone")
        self.connection_id = connection_id


@dataclass
class Pusher:
    """Posts messages to connections (``client``: a boto3 ``apigatewaymanagementapi`` client for the API's stage)."""

    client: Any

    def send(self, connection_id: str, message: dict[str, Any]) -> None:
        data = encode(message)
        try:
            self.client.post_to_connection(ConnectionId=connection_id, Data=data)
        except ClientError as exc:
            if error_code(exc) == GONE:
                raise ConnectionGone(connection_id) from exc
            if error_code(exc) in THROTTLED or is_transient(exc):
                raise TransientFailure(f"posting to connection {connection_id}: {error_code(exc)}") from exc
            raise
