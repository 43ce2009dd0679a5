"""GET /batches/{id} and GET /batches/{id}/results: a job's status, counts and paged outcomes."""

from __future__ import annotations

from typing import Any

import boto3
from aws_lambda_powertools import Logger, Tracer
from aws_lambda_powertools.utilities.typing import LambdaContext

from modelrun.api import batch_links, create_resolver, decode_token, encode_token, query_int
from modelrun.config import require_env
from modelrun.errors import InvalidRequest
from modelrun.jobs import FAILED_OUTCOME, PREDICTED, TERMINAL, JobStore, job_document, public_outcome

logger = Logger()
tracer = Tracer()
app = create_resolver()

dynamodb = boto3.resource("dynamodb")
store = JobStore(dynamodb.Table(require_env("JOBS_TABLE")), dynamodb.Table(require_env("ITEMS_TABLE")))
s3 = boto3.client("s3")
bucket = require_env("IMAGES_BUCKET")
LINK_EXPIRY_S = 3600


def results_file_url(job: dict[str, Any]) -> str | None:
    if job["status"] not in TERMINAL or not job.get("results_key"):
        return None
    url: str = s3.generate_presigned_url(
        "get_object", Params={"Bucket": bucket, "Key": job["results_key"]}, ExpiresIn=LINK_EXPIRY_S
    )
    return url


@app.get("/batches/<batch_id>")
@tracer.capture_method
def get_batch(batch_id: str) -> dict[str, Any]:
    job = store.get(batch_id)
    links = batch_links(app.current_event, batch_id)
    url = results_file_url(job)
    if url:
        links["results_file"] = url
    return job_document(job, links)


@app.get("/batches/<batch_id>/results")
@tracer.capture_method
def get_results(batch_id: str) -> dict[str, Any]:
    query = dict(app.current_event.query_string_parameters or {})
    status = query.get("status") or None
    if status not in (None, PREDICTED, FAILED_OUTCOME):
        raise InvalidRequest(f'"status" must be {PREDICTED!r} or {FAILED_OUTCOME!r}, got {status!r}')
    limit = query_int(query, "limit", default=100, maximum=1000)
    start = decode_token(query.get("next_token"))
    store.get(batch_id)  # 404 for an unknown batch, not an empty page
    page, last = store.outcomes(batch_id, status=status, limit=limit, start=start)
    return {
        "batch_id": batch_id,
        "results": [public_outcome(record) for record in page],
        "next_token": encode_token(last),
    }


@logger.inject_lambda_context(log_event=False)
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
