"""POST /batches: register a batch job, write its chunk manifest, start its state machine execution."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import boto3
from aws_lambda_powertools import Logger, Tracer
from aws_lambda_powertools.utilities.idempotency import (
    DynamoDBPersistenceLayer,
    IdempotencyConfig,
    idempotent_function,
)
from aws_lambda_powertools.utilities.typing import LambdaContext

from modelrun.audit import AuditTrail
from modelrun.batches.requests import BatchRequest
from modelrun.batches.store import JobStore
from modelrun.batches.submit import BatchSubmitter
from modelrun.config import require_env
from modelrun.datasets.store import DatasetStore
from modelrun.http.links import batch_links
from modelrun.http.requests import header, json_body
from modelrun.http.resolver import create_resolver
from modelrun.http.tenancy import current_tenant, resolve_tenants, serve
from modelrun.models.registry import ModelRegistry
from modelrun.tenants import Tenant
from modelrun.tenants.resolve import TenantResolver

logger = Logger()
tracer = Tracer()
app = create_resolver()

dynamodb = boto3.resource("dynamodb")
submitter = BatchSubmitter(
    store=JobStore(dynamodb.Table(require_env("JOBS_TABLE")), dynamodb.Table(require_env("ITEMS_TABLE"))),
    s3=boto3.client("s3"),
    sfn=boto3.client("stepfunctions"),
    registry=ModelRegistry(Path(require_env("MODEL_ROOT"))),
    bucket=require_env("IMAGES_BUCKET"),
    state_machine_arn=require_env("STATE_MACHINE_ARN"),
    default_model=require_env("DEFAULT_MODEL"),
    allow_faults=require_env("ALLOW_FAULT_INJECTION") == "true",
    datasets=DatasetStore(dynamodb.Table(require_env("DATASETS_TABLE"))),
)
tenants = TenantResolver.from_env(boto3.client("apigateway"))
resolve_tenants(app, tenants)
audit = AuditTrail.from_env(dynamodb)
# A retried submit with the same Idempotency-Key (and the same body) returns the first answer; the same key
# with another body is refused. Records expire after a day. The key is the tenant's: another tenant's same key
# is another request (and never replays this tenant's answer).
idempotency = IdempotencyConfig(
    event_key_jmespath="[tenant, key]", payload_validation_jmespath="body", expires_after_seconds=24 * 3600
)
persistence = DynamoDBPersistenceLayer(table_name=require_env("IDEMPOTENCY_TABLE"))


@idempotent_function(data_keyword_argument="request", config=idempotency, persistence_store=persistence)
def submit_once(request: dict[str, Any], tenant: Tenant) -> dict[str, Any]:
    return submitter.for_tenant(tenant).submit(BatchRequest.parse(request["body"], submitter.limits))


@app.post("/batches")
@tracer.capture_method
def submit_batch() -> tuple[dict[str, Any], int]:
    body = json_body(app.current_event.body, app.current_event.is_base64_encoded)
    key = header(dict(app.current_event.headers or {}), "Idempotency-Key")
    tenant = current_tenant(app)
    if key:
        submitted = submit_once(request={"tenant": tenant.name, "key": key, "body": body}, tenant=tenant)
    else:
        submitted = submitter.for_tenant(tenant).submit(BatchRequest.parse(body, submitter.limits))
    return {**submitted, "links": batch_links(app.current_event, submitted["batch_id"])}, 202


@logger.inject_lambda_context(log_event=False)
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    idempotency.register_lambda_context(context)
    # A prefix or list file too large to read before API Gateway's 29 s is refused (413), not left to time out.
    submitter.remaining_ms = context.get_remaining_time_in_millis
    return serve(app, event, context, tenants=tenants, audit=audit)
