"""POST /batches/{id}/retry (run failed and missing images again) and POST /batches/{id}/reconcile (recount)."""

from __future__ import annotations

from typing import Any

import boto3
from aws_lambda_powertools import Logger, Tracer
from aws_lambda_powertools.utilities.typing import LambdaContext

from modelrun.audit import AuditTrail
from modelrun.batches.close import BatchCloser
from modelrun.batches.retry import BatchRetrier
from modelrun.batches.store import JobStore, job_document
from modelrun.config import require_env
from modelrun.http.links import batch_links
from modelrun.http.resolver import create_resolver
from modelrun.http.tenancy import current_tenant, resolve_tenants, serve
from modelrun.tenants.resolve import TenantResolver

logger = Logger()
tracer = Tracer()
app = create_resolver()

dynamodb = boto3.resource("dynamodb")
s3 = boto3.client("s3")
bucket = require_env("IMAGES_BUCKET")
store = JobStore(dynamodb.Table(require_env("JOBS_TABLE")), dynamodb.Table(require_env("ITEMS_TABLE")))
retrier = BatchRetrier(
    store=store,
    s3=s3,
    sfn=boto3.client("stepfunctions"),
    bucket=bucket,
    state_machine_arn=require_env("STATE_MACHINE_ARN"),
)
closer = BatchCloser(store=store, s3=s3, bucket=bucket)
tenants = TenantResolver.from_env(boto3.client("apigateway"))
resolve_tenants(app, tenants)
audit = AuditTrail.from_env(dynamodb)


@app.post("/batches/<batch_id>/retry")
@tracer.capture_method
def retry_batch(batch_id: str) -> tuple[dict[str, Any], int]:
    store.for_tenant(current_tenant(app)).get(batch_id)  # 404 for an unknown (or another tenant's) batch
    started = retrier.retry(batch_id)
    return {**started, "links": batch_links(app.current_event, batch_id)}, 202


@app.post("/batches/<batch_id>/reconcile")
@tracer.capture_method
def reconcile_batch(batch_id: str) -> dict[str, Any]:
    """Recount the job from its items, correct its counters, and close it if every image has an outcome."""
    scoped = store.for_tenant(current_tenant(app))
    scoped.get(batch_id)  # 404 for an unknown (or another tenant's) batch
    store.reconcile(batch_id)
    closer.try_close(batch_id, map_done=False)
    return job_document(scoped.get(batch_id), batch_links(app.current_event, batch_id))


@logger.inject_lambda_context(log_event=False)
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    retrier.remaining_ms = context.get_remaining_time_in_millis
    return serve(app, event, context, tenants=tenants, audit=audit)
