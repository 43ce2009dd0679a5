"""Step Functions task after the Map: close the job if every image has an outcome, and write its results file."""

from __future__ import annotations

from typing import Any

import boto3
from aws_lambda_powertools import Logger, Tracer
from aws_lambda_powertools.utilities.typing import LambdaContext

from modelrun.batches.close import BatchCloser
from modelrun.batches.store import JobStore
from modelrun.config import require_env

logger = Logger()
tracer = Tracer()

dynamodb = boto3.resource("dynamodb")
closer = BatchCloser(
    store=JobStore(dynamodb.Table(require_env("JOBS_TABLE")), dynamodb.Table(require_env("ITEMS_TABLE"))),
    s3=boto3.client("s3"),
    bucket=require_env("IMAGES_BUCKET"),
)


@logger.inject_lambda_context(log_event=False)
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    logger.append_keys(batch_id=event["batch_id"])
    return closer.try_close(event["batch_id"])
