"""SQS consumer of the dead-letter queue: recover chunks the state machine could not predict.

Partial batch responses (ReportBatchItemFailures): a message that failed is reported and comes back after its
backoff; the others are deleted. After maxReceiveCount receives SQS moves a failing message to the parking queue.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import boto3
from aws_lambda_powertools import Logger, Tracer
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from modelrun.aws.s3 import ImageStore
from modelrun.batches.chunks import ChunkPredictor
from modelrun.batches.close import BatchCloser
from modelrun.batches.recovery import DeadLetter, Recoverer, parse_body
from modelrun.batches.results import ResultObjects
from modelrun.batches.store import JobStore
from modelrun.config import int_env, require_env
from modelrun.datasets.history import PredictionHistory
from modelrun.images.decode import Limits
from modelrun.models.registry import ModelRegistry

logger = Logger()
tracer = Tracer()
processor = BatchProcessor(event_type=EventType.SQS)

dynamodb = boto3.resource("dynamodb")
s3 = boto3.client("s3")
bucket = require_env("IMAGES_BUCKET")
store = JobStore(dynamodb.Table(require_env("JOBS_TABLE")), dynamodb.Table(require_env("ITEMS_TABLE")))
recoverer = Recoverer(
    predictor=ChunkPredictor(
        store=store,
        images=ImageStore(s3, {bucket}),
        registry=ModelRegistry(Path(require_env("MODEL_ROOT"))),
        limits=Limits.from_env(),
        pool=ThreadPoolExecutor(max_workers=max(4, 2 * (os.cpu_count() or 1)), thread_name_prefix="recover"),
        results=ResultObjects(s3, bucket),
        history=PredictionHistory(dynamodb.Table(require_env("DATASETS_TABLE"))),
    ),
    closer=BatchCloser(store=store, s3=s3, bucket=bucket),
    store=store,
    s3=s3,
    sqs=boto3.client("sqs"),
    queue_url=require_env("DEAD_LETTER_QUEUE_URL"),
    parking_queue_url=require_env("PARKING_QUEUE_URL"),
    max_receive_count=int_env("MAX_RECEIVE_COUNT", default=5),
    backoff_base_s=int_env("RECOVERY_BACKOFF_SECONDS", default=30, minimum=0),
    allow_faults=require_env("ALLOW_FAULT_INJECTION") == "true",
)


def record_handler(record: SQSRecord) -> dict[str, Any]:
    message = DeadLetter(
        body=parse_body(record.body),
        receive_count=int(record.attributes.approximate_receive_count),
        receipt_handle=record.receipt_handle,
        message_id=record.message_id,
    )
    return recoverer.handle(message)


@logger.inject_lambda_context(log_event=False)
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    recoverer.remaining_ms = context.get_remaining_time_in_millis
    return process_partial_response(event=event, record_handler=record_handler, processor=processor, context=context)
