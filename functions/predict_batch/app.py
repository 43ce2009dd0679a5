"""Step Functions task: predict one chunk of a batch (batched inference), one outcome per image."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import boto3
from aws_lambda_powertools import Logger, Tracer
from aws_lambda_powertools.utilities.typing import LambdaContext

from modelrun.aws.s3 import ImageStore
from modelrun.batches.chunks import Chunk, ChunkPredictor
from modelrun.batches.results import ResultObjects
from modelrun.batches.store import JobStore
from modelrun.config import int_env, require_env
from modelrun.datasets.history import PredictionHistory
from modelrun.images.decode import Limits
from modelrun.models.registry import ModelRegistry

logger = Logger()
tracer = Tracer()

dynamodb = boto3.resource("dynamodb")
s3 = boto3.client("s3")
bucket = require_env("IMAGES_BUCKET")
# Decoding and S3 reads are I/O- and GIL-releasing work: more threads than vCPUs keep the CPU busy.
threads = int_env("DECODE_THREADS", default=max(4, 2 * (os.cpu_count() or 1)))
predictor = ChunkPredictor(
    store=JobStore(dynamodb.Table(require_env("JOBS_TABLE")), dynamodb.Table(require_env("ITEMS_TABLE"))),
    images=ImageStore(s3, {bucket}),
    registry=ModelRegistry(Path(require_env("MODEL_ROOT"))),
    limits=Limits.from_env(),
    pool=ThreadPoolExecutor(max_workers=threads, thread_name_prefix="chunk"),
    results=ResultObjects(s3, bucket),
    history=PredictionHistory(dynamodb.Table(require_env("DATASETS_TABLE"))),
)
# Fault injection (tests, demos) only where the stack allows it: AllowFaultInjection in template.yaml.
allow_faults = require_env("ALLOW_FAULT_INJECTION") == "true"


@logger.inject_lambda_context(log_event=False)
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    chunk = Chunk.from_event(event, s3)
    logger.append_keys(batch_id=chunk.batch_id, chunk=chunk.index, attempt=chunk.attempt)
    if allow_faults:
        chunk.faults.inject(chunk.index, in_recovery=False, remaining_ms=context.get_remaining_time_in_millis)
    return predictor.run(chunk)
