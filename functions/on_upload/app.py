"""S3 ObjectCreated on the images bucket: predict an image under a space's uploads/, start a batch from a list under its
batches/, for the tenant whose space the key lies in (the default tenant's outside tenants/, another's under
tenants/<tenant>/), and audit it for that tenant.

Routing, result naming and the result documents are in ``modelrun.uploads.triggers``. Each record is processed once per
object write: a re-delivered event (same bucket, key, version, sequencer and ETag) replays the recorded outcome from
the idempotency table instead of predicting or submitting again, while a new upload of the same key is a new write
with a new sequencer, so it is predicted again.

Where an outcome is recorded: in S3, as the result document beside the other results (what the uploader reads, kept
as long as they keep their uploads), and in IdempotencyTable, as the idempotency record of that object write (the
same document, for a day, so a re-delivery replays it). Not in ItemsTable: its items are a batch's images, keyed by
batch id and item number, counted into a job row; a single upload has neither.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import boto3
from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.data_classes import S3Event, event_source
from aws_lambda_powertools.utilities.data_classes.s3_event import S3EventRecord
from aws_lambda_powertools.utilities.idempotency import (
    DynamoDBPersistenceLayer,
    IdempotencyConfig,
    idempotent_function,
)
from aws_lambda_powertools.utilities.typing import LambdaContext

from modelrun.audit import AuditTrail
from modelrun.aws.s3 import ImageStore
from modelrun.batches.store import JobStore
from modelrun.batches.submit import BatchSubmitter
from modelrun.config import require_env
from modelrun.images.decode import Limits
from modelrun.models.registry import ModelRegistry
from modelrun.predict import Predictor
from modelrun.tenants.resolve import KnownTenants
from modelrun.uploads.triggers import Ignored, ImageUpload, ListUpload, UploadedObject, UploadProcessor, decode_key

logger = Logger()
tracer = Tracer()
metrics = Metrics()

# Cold start: a missing setting or a broken default model fails here, naming it.
bucket = require_env("IMAGES_BUCKET")
registry = ModelRegistry(Path(require_env("MODEL_ROOT")))
predictor = Predictor(registry, Limits.from_env(), require_env("DEFAULT_MODEL"))
registry.get(predictor.default_model)
s3 = boto3.client("s3")
dynamodb = boto3.resource("dynamodb")
processor = UploadProcessor(
    predictor=predictor,
    images=ImageStore(s3, {bucket}),
    submitter=BatchSubmitter(
        store=JobStore(dynamodb.Table(require_env("JOBS_TABLE")), dynamodb.Table(require_env("ITEMS_TABLE"))),
        s3=s3,
        sfn=boto3.client("stepfunctions"),
        registry=registry,
        bucket=bucket,
        state_machine_arn=require_env("STATE_MACHINE_ARN"),
        default_model=predictor.default_model,
    ),
    s3=s3,
    bucket=bucket,
    known=KnownTenants(boto3.client("apigateway")),
    audit=AuditTrail.from_env(dynamodb),
)
# One record per object write. Lambda retries a failed S3 event for up to 6 hours: a day covers every re-delivery.
idempotency = IdempotencyConfig(
    event_key_jmespath="[bucket, key, version_id, sequencer, etag]", expires_after_seconds=24 * 3600
)
persistence = DynamoDBPersistenceLayer(table_name=require_env("IDEMPOTENCY_TABLE"))


@idempotent_function(data_keyword_argument="upload", config=idempotency, persistence_store=persistence)
def process_once(upload: dict[str, Any], target: ImageUpload | ListUpload) -> dict[str, Any]:
    outcome = processor.process(UploadedObject.from_dict(upload), target)
    failed = "error" in outcome["result"]
    metrics.add_metric(name="UploadsFailed" if failed else "UploadsProcessed", unit=MetricUnit.Count, value=1)
    return outcome


def uploaded_object(record: S3EventRecord) -> UploadedObject:
    obj = record.s3.get_object
    return UploadedObject(
        bucket=record.s3.bucket.name,
        key=decode_key(obj.key),
        etag=obj.etag,
        sequencer=obj.get("sequencer"),
        version_id=obj.version_id,
        size=obj.get("size"),
        request_id=(record.get("responseElements") or {}).get("x-amz-request-id"),
    )


@metrics.log_metrics
@logger.inject_lambda_context(log_event=False)
@tracer.capture_lambda_handler
@event_source(data_class=S3Event)
def lambda_handler(event: S3Event, context: LambdaContext) -> dict[str, Any]:
    idempotency.register_lambda_context(context)
    # An uploaded list too large to read in this invocation gets an error document, not a timeout.
    processor.submitter.remaining_ms = context.get_remaining_time_in_millis
    outcomes: list[dict[str, Any]] = []
    for record in event.records:
        upload = uploaded_object(record)
        target = processor.target(upload)
        if isinstance(target, Ignored):
            logger.info("upload ignored", key=upload.key, event_name=record.event_name, reason=target.reason)
            metrics.add_metric(name="UploadsIgnored", unit=MetricUnit.Count, value=1)
            outcomes.append({"key": upload.key, "ignored": target.reason})
            continue
        outcomes.append(process_once(upload=upload.to_dict(), target=target))
    return {"outcomes": outcomes}
