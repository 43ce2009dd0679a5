"""SQS consumer of the DatasetQueue: one step of a dataset's registration, or removing a deleted dataset's entries
(modelrun.datasets.registration).

One message per invocation (BatchSize 1): a step runs until little time is left and hands the rest on in a message of
its own. A failed message is reported and comes back after the visibility timeout; its last delivery marks the
dataset FAILED instead of failing again.
"""

from __future__ import annotations

import json
from typing import Any

import boto3
from aws_lambda_powertools import Logger, Tracer
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from modelrun.config import int_env, require_env
from modelrun.datasets.registration import Registrations
from modelrun.datasets.store import DatasetStore

logger = Logger()
tracer = Tracer()
processor = BatchProcessor(event_type=EventType.SQS)

registrations = Registrations(
    store=DatasetStore(boto3.resource("dynamodb").Table(require_env("DATASETS_TABLE"))),
    s3=boto3.client("s3"),
    bucket=require_env("IMAGES_BUCKET"),
    sqs=boto3.client("sqs"),
    queue_url=require_env("DATASET_QUEUE_URL"),
    max_receives=int_env("MAX_RECEIVE_COUNT", default=5),
)


def record_handler(record: SQSRecord) -> dict[str, Any]:
    message = json.loads(record.body)
    logger.append_keys(dataset_id=message.get("dataset_id"), action=message.get("action"))
    return registrations.handle(message, receive_count=int(record.attributes.approximate_receive_count))


@logger.inject_lambda_context(log_event=False)
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    registrations.remaining_ms = context.get_remaining_time_in_millis
    return process_partial_response(event=event, record_handler=record_handler, processor=processor, context=context)
