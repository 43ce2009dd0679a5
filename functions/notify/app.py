"""DynamoDB stream of the jobs table -> progress and completed messages to the WebSocket subscribers of each batch.

Partial batch responses (ReportBatchItemFailures): when a completed message could not be delivered for now, the
stream retries from the first change of that batch; what was delivered is not sent twice (see modelrun.live).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import boto3
from aws_lambda_powertools import Logger, Tracer
from aws_lambda_powertools.utilities.data_classes import DynamoDBStreamEvent, event_source
from aws_lambda_powertools.utilities.typing import LambdaContext

from modelrun.aws.dynamo import plain
from modelrun.config import require_env
from modelrun.live.connections import ConnectionStore
from modelrun.live.notifier import JobChange, ProgressNotifier
from modelrun.live.push import Pusher

logger = Logger()
tracer = Tracer()

notifier = ProgressNotifier(
    connections=ConnectionStore(boto3.resource("dynamodb").Table(require_env("CONNECTIONS_TABLE"))),
    pusher=Pusher(boto3.client("apigatewaymanagementapi", endpoint_url=require_env("WEBSOCKET_ENDPOINT"))),
    api_url=require_env("API_URL"),
    pool=ThreadPoolExecutor(max_workers=16, thread_name_prefix="notify"),
)


@logger.inject_lambda_context(log_event=False)
@tracer.capture_lambda_handler
@event_source(data_class=DynamoDBStreamEvent)
def lambda_handler(event: DynamoDBStreamEvent, context: LambdaContext) -> dict[str, Any]:
    changes = [
        JobChange(sequence_number=str(record.dynamodb.sequence_number), job=plain(record.dynamodb.new_image))
        for record in event.records
        if record.dynamodb is not None and record.dynamodb.new_image  # a REMOVE (TTL expiry) has no new image
    ]
    retry_from = notifier.notify(changes)
    return {"batchItemFailures": [{"itemIdentifier": retry_from}] if retry_from else []}
