"""POST /datasets, GET /datasets, GET|DELETE /datasets/{id}, GET /datasets/{id}/images and
GET /datasets/{id}/images/{image_id}/predictions: a tenant's datasets, their images and each image's predictions."""

from __future__ import annotations

from typing import Any

import boto3
from aws_lambda_powertools import Logger, Tracer
from aws_lambda_powertools.utilities.typing import LambdaContext

from modelrun.audit import AuditTrail
from modelrun.config import require_env
from modelrun.datasets.history import PredictionHistory
from modelrun.datasets.registration import Registrations
from modelrun.datasets.requests import DatasetRequest
from modelrun.datasets.store import REGISTERING, DatasetStore, dataset_document
from modelrun.http.links import dataset_links
from modelrun.http.requests import json_body, query_int
from modelrun.http.resolver import create_resolver
from modelrun.http.tenancy import current_tenant, resolve_tenants, serve
from modelrun.tenants.resolve import TenantResolver

logger = Logger()
tracer = Tracer()
app = create_resolver()

dynamodb = boto3.resource("dynamodb")
table = dynamodb.Table(require_env("DATASETS_TABLE"))
store = DatasetStore(table)
history = PredictionHistory(table)
registrations = Registrations(
    store=store,
    s3=boto3.client("s3"),
    bucket=require_env("IMAGES_BUCKET"),
    sqs=boto3.client("sqs"),
    queue_url=require_env("DATASET_QUEUE_URL"),
)
tenants = TenantResolver.from_env(boto3.client("apigateway"))
resolve_tenants(app, tenants)
audit = AuditTrail.from_env(dynamodb)


def tenant_store() -> DatasetStore:
    """The datasets of the request's tenant: another tenant's dataset is not found, as a missing one."""
    return store.for_tenant(current_tenant(app))


def document(header: dict[str, Any]) -> dict[str, Any]:
    return dataset_document(header, dataset_links(app.current_event, header["dataset_id"]))


def paging() -> tuple[int, str | None]:
    query = dict(app.current_event.query_string_parameters or {})
    return query_int(query, "limit", default=100, maximum=1000), query.get("next_token") or None


@app.post("/datasets")
@tracer.capture_method
def create_dataset() -> tuple[dict[str, Any], int]:
    body = json_body(app.current_event.body, app.current_event.is_base64_encoded, expected='{"name": ...}')
    request = DatasetRequest.parse(body)
    header, created = registrations.for_tenant(current_tenant(app)).submit(request)
    status = 202 if header["status"] == REGISTERING else 201 if created else 200
    return document(header), status


@app.get("/datasets")
@tracer.capture_method
def list_datasets() -> dict[str, Any]:
    limit, token = paging()
    headers, next_token = tenant_store().page(limit=limit, token=token)
    return {"datasets": [document(header) for header in headers], "next_token": next_token}


@app.get("/datasets/<dataset_id>")
@tracer.capture_method
def get_dataset(dataset_id: str) -> dict[str, Any]:
    return document(tenant_store().get(dataset_id))


@app.delete("/datasets/<dataset_id>")
@tracer.capture_method
def delete_dataset(dataset_id: str) -> dict[str, Any]:
    header = registrations.for_tenant(current_tenant(app)).delete(dataset_id)
    return {"dataset_id": dataset_id, "name": header["name"], "deleted": True, "images": int(header["images"])}


@app.get("/datasets/<dataset_id>/images")
@tracer.capture_method
def list_images(dataset_id: str) -> dict[str, Any]:
    limit, token = paging()
    scoped = tenant_store()
    scoped.get(dataset_id)  # 404 for an unknown (or another tenant's) dataset, not an empty page
    images, next_token = scoped.images_page(dataset_id, limit=limit, token=token)
    return {"dataset_id": dataset_id, "images": images, "next_token": next_token}


@app.get("/datasets/<dataset_id>/images/<image_id>/predictions")
@tracer.capture_method
def list_predictions(dataset_id: str, image_id: str) -> dict[str, Any]:
    limit, token = paging()
    scoped = tenant_store()
    scoped.get(dataset_id)
    image = scoped.image(dataset_id, image_id)
    entries, next_token = history.page(
        current_tenant(app), dataset_id=dataset_id, image_id=image_id, limit=limit, token=token
    )
    return {
        "dataset_id": dataset_id,
        "image_id": image_id,
        "key": image["key"],
        "predictions": entries,
        "next_token": next_token,
    }


@logger.inject_lambda_context(log_event=False)
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return serve(app, event, context, tenants=tenants, audit=audit)
