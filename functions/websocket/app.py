"""The WebSocket API's routes: $connect (API key check, tenant), $disconnect, subscribe, unsubscribe and $default.

Every message to the client goes through the management API (``WEBSOCKET_ENDPOINT``); the routes have no route
responses, so what this handler returns only tells API Gateway whether to accept a connection.
"""

from __future__ import annotations

import json
from typing import Any

import boto3
from aws_lambda_powertools import Logger, Tracer
from aws_lambda_powertools.utilities.data_classes import APIGatewayWebSocketEvent, event_source
from aws_lambda_powertools.utilities.typing import LambdaContext

from modelrun.batches.store import JobStore
from modelrun.config import require_env
from modelrun.errors import ModelrunError
from modelrun.live.connections import ConnectionStore
from modelrun.live.push import Pusher
from modelrun.live.routes import LiveRoutes
from modelrun.tenants.resolve import TenantResolver

logger = Logger()
tracer = Tracer()

dynamodb = boto3.resource("dynamodb")
# A presented key is matched among the usage plan's keys (USAGE_PLAN_ID), read and cached per container.
tenants = TenantResolver.from_env(boto3.client("apigateway"))
routes = LiveRoutes(
    connections=ConnectionStore(dynamodb.Table(require_env("CONNECTIONS_TABLE"))),
    pusher=Pusher(boto3.client("apigatewaymanagementapi", endpoint_url=require_env("WEBSOCKET_ENDPOINT"))),
    # Only the jobs table is read (a batch's current state); the items table is not needed here.
    jobs=JobStore(dynamodb.Table(require_env("JOBS_TABLE")), items=None),
    api_url=require_env("API_URL"),
    tenant_of_key=tenants.for_key_value,
)


def refused(error: ModelrunError) -> dict[str, Any]:
    return {"statusCode": error.status, "body": json.dumps({"error": {"code": error.code, "message": error.message}})}


@logger.inject_lambda_context(log_event=False)
@tracer.capture_lambda_handler
@event_source(data_class=APIGatewayWebSocketEvent)
def lambda_handler(event: APIGatewayWebSocketEvent, context: LambdaContext) -> dict[str, Any]:
    request = event.request_context
    connection_id = request.connection_id
    if request.event_type == "CONNECT":
        presented = event.query_string_parameters.get("api_key") or event.headers.get("x-api-key")
        try:
            routes.connect(
                connection_id,
                connected_at_ms=request.connected_at,
                source_ip=request.identity.source_ip,
                api_key=presented,
            )
        except ModelrunError as exc:
            if exc.status >= 500:
                raise
            logger.info("connection refused", connection_id=connection_id, code=exc.code, status=exc.status)
            return refused(exc)
    elif request.event_type == "DISCONNECT":
        routes.disconnect(connection_id)
    else:
        routes.message(connection_id, event.decoded_body, connected_at_ms=request.connected_at)
    return {"statusCode": 200}
