"""GET /batches/{id}, .../results and .../errors: a job's status, counts, paged outcomes and error report."""

from __future__ import annotations

from typing import Any

import boto3
from aws_lambda_powertools import Logger, Tracer
from aws_lambda_powertools.utilities.typing import LambdaContext

from modelrun.audit import AuditTrail
from modelrun.batches.keys import BatchKeys
from modelrun.batches.store import (
    FAILED_OUTCOME,
    PREDICTED,
    TERMINAL,
    JobStore,
    error_entry,
    job_document,
    public_outcome,
)
from modelrun.config import require_env
from modelrun.errors import InvalidRequest
from modelrun.http.links import batch_links
from modelrun.http.paging import decode_token, encode_token
from modelrun.http.requests import query_int
from modelrun.http.resolver import create_resolver
from modelrun.http.tenancy import current_tenant, resolve_tenants, serve
from modelrun.tenants.resolve import TenantResolver

logger = Logger()
tracer = Tracer()
app = create_resolver()

dynamodb = boto3.resource("dynamodb")
store = JobStore(dynamodb.Table(require_env("JOBS_TABLE")), dynamodb.Table(require_env("ITEMS_TABLE")))
s3 = boto3.client("s3")
bucket = require_env("IMAGES_BUCKET")
tenants = TenantResolver.from_env(boto3.client("apigateway"))
resolve_tenants(app, tenants)
audit = AuditTrail.from_env(dynamodb)
LINK_EXPIRY_S = 3600
# A running batch's error summary is counted from the by_status index, reading only each failed item's code; past
# SUMMARY_MAX_PAGES pages of SUMMARY_PAGE_ITEMS the count stops and says it is partial (a closed batch's is stored).
SUMMARY_PAGE_ITEMS = 2000
SUMMARY_MAX_PAGES = 25
# What a next_token stands for: the LastEvaluatedKey of the items table (all outcomes) or of its by_status index.
TABLE_KEY = {"batch_id", "item"}
INDEX_KEY = {"batch_id", "item", "batch_status"}
MAX_ITEM = 2**63 - 1


def presigned(key: str) -> str:
    url: str = s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=LINK_EXPIRY_S)
    return url


def results_file_url(job: dict[str, Any]) -> str | None:
    if job["status"] not in TERMINAL or not job.get("results_key"):
        return None
    return presigned(job["results_key"])


def error_file_links(job: dict[str, Any]) -> dict[str, str]:
    """Presigned links to the error files the closer wrote, once the batch is terminal (none before)."""
    if job["status"] not in TERMINAL or not job.get("errors_csv_key") or not job.get("errors_jsonl_key"):
        return {}
    return {"csv": presigned(job["errors_csv_key"]), "jsonl": presigned(job["errors_jsonl_key"])}


def with_mask_link(batch: BatchKeys, outcome: dict[str, Any]) -> dict[str, Any]:
    """A segmentation outcome with a presigned ``mask.url`` to its PNG (as the results file link is presigned).

    Only for the key the batch stores that item's mask under, in its owner's space (the caller's: the job was read
    through the caller's store): a model's own postprocess could return any "mask". With the ``all`` frame policy,
    each entry of ``frames`` gets the link to its frame's mask."""
    mask = outcome.get("mask")
    if isinstance(mask, dict) and mask.get("s3_key") == batch.mask(outcome["item"]):
        outcome["mask"] = {**mask, "url": presigned(mask["s3_key"])}
    frames = outcome.get("frames")
    if isinstance(frames, list):
        for entry in frames:
            mask = entry.get("mask") if isinstance(entry, dict) else None
            if isinstance(mask, dict) and mask.get("s3_key") == batch.mask(outcome["item"], entry.get("frame")):
                entry["mask"] = {**mask, "url": presigned(mask["s3_key"])}
    return outcome


def tenant_store() -> JobStore:
    """The jobs of the request's tenant: another tenant's batch is NotFound, as a missing one (and so are its
    outcomes, error report and presigned links, which are only read after the job)."""
    return store.for_tenant(current_tenant(app))


def error_summary(job: dict[str, Any]) -> tuple[dict[str, int], bool]:
    """{code: count} over the whole batch, and whether it is complete.

    A closed batch has it on its job (the closer counts it in its pass over the outcomes): no read at all. A running
    one (or one closed before the closer kept it) is counted from the by_status index, reading only ``error_code``
    of the failed items, never the predicted ones.
    """
    stored = job.get("error_summary")
    if job["status"] in TERMINAL and isinstance(stored, dict):
        return {str(code): int(count) for code, count in stored.items()}, True
    counts: dict[str, int] = {}
    query: dict[str, Any] = {
        "IndexName": "by_status",
        "KeyConditionExpression": "batch_status = :bs",
        "ExpressionAttributeValues": {":bs": f"{job['batch_id']}#{FAILED_OUTCOME}"},
        "ProjectionExpression": "error_code",
        "Limit": SUMMARY_PAGE_ITEMS,
    }
    for _ in range(SUMMARY_MAX_PAGES):
        page = store.items.query(**query)
        for record in page.get("Items", []):
            code = str(record.get("error_code"))
            counts[code] = counts.get(code, 0) + 1
        if "LastEvaluatedKey" not in page:
            return counts, True
        query["ExclusiveStartKey"] = page["LastEvaluatedKey"]
    return counts, False


def page_start(batch_id: str, token: str | None, status: str | None, listing: str) -> dict[str, Any] | None:
    """The key a next_token of this batch's outcomes (of one status, or all) stands for; 400 for any other token,
    which DynamoDB would refuse or misread as a start key."""
    start = decode_token(token)
    if start is None:
        return None
    item = start.get("item")
    if (
        set(start) != (TABLE_KEY if status is None else INDEX_KEY)
        or start["batch_id"] != batch_id
        or (status is not None and start["batch_status"] != f"{batch_id}#{status}")
        or not isinstance(item, int)
        or isinstance(item, bool)
        or not 0 <= item <= MAX_ITEM
    ):
        raise InvalidRequest(f'"next_token" is not a token {listing} returned: start again without it')
    return start


@app.get("/batches/<batch_id>")
@tracer.capture_method
def get_batch(batch_id: str) -> dict[str, Any]:
    job = tenant_store().get(batch_id)
    links = batch_links(app.current_event, batch_id)
    url = results_file_url(job)
    if url:
        links["results_file"] = url
    document = job_document(job, links)
    files = error_file_links(job)
    if files:
        document["links"]["errors_files"] = files
    return document


@app.get("/batches/<batch_id>/results")
@tracer.capture_method
def get_results(batch_id: str) -> dict[str, Any]:
    query = dict(app.current_event.query_string_parameters or {})
    status = query.get("status") or None
    if status not in (None, PREDICTED, FAILED_OUTCOME):
        raise InvalidRequest(f'"status" must be {PREDICTED!r} or {FAILED_OUTCOME!r}, got {status!r}')
    limit = query_int(query, "limit", default=100, maximum=1000)
    listing = f"this batch's {status} results" if status else "this batch's results"
    start = page_start(batch_id, query.get("next_token"), status, listing)
    scoped = tenant_store()
    job = scoped.get(batch_id)  # 404 for an unknown (or another tenant's) batch, not an empty page
    page, last = scoped.outcomes(batch_id, status=status, limit=limit, start=start)
    batch = BatchKeys.of_job(job)
    return {
        "batch_id": batch_id,
        "results": [with_mask_link(batch, public_outcome(record)) for record in page],
        "next_token": encode_token(last),
    }


@app.get("/batches/<batch_id>/errors")
@tracer.capture_method
def get_errors(batch_id: str) -> dict[str, Any]:
    """One page of the batch's failed images (item order), the summary by code, and the error files' links."""
    query = dict(app.current_event.query_string_parameters or {})
    limit = query_int(query, "limit", default=100, maximum=1000)
    start = page_start(batch_id, query.get("next_token"), FAILED_OUTCOME, "this batch's error report")
    scoped = tenant_store()
    job = scoped.get(batch_id)  # 404 for an unknown (or another tenant's) batch, not an empty report
    page, last = scoped.outcomes(batch_id, status=FAILED_OUTCOME, limit=limit, start=start)
    summary, complete = error_summary(job)
    return {
        "batch_id": batch_id,
        "status": job["status"],
        "attempt": int(job.get("attempt", 1)),
        "failed": int(job.get("failed", 0)),
        "summary": summary,
        "summary_complete": complete,
        "errors": [error_entry(record) for record in page],
        "next_token": encode_token(last),
        "links": error_file_links(job),
    }


@logger.inject_lambda_context(log_event=False)
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return serve(app, event, context, tenants=tenants, audit=audit)
