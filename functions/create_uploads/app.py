"""POST /uploads: presigned S3 PUT URLs so a browser uploads images itself, under tenants/{tenant}/inputs/{upload_id}/.

The URLs sign the content type and the exact size the client declared, so S3 refuses any other body; the role
that signs them may only put objects in a tenant's ``inputs/`` (a tenant's ``uploads/`` triggers single
predictions, its ``batches/`` starts batches from list files), and the function signs only the caller's tenant's
keys. The keys then go to ``POST /batches {"images": [...]}``. With an ``Idempotency-Key`` header the upload id is
derived from the tenant and the key, so a retried call (the modelrun CLI's, staging a batch) signs the same keys.
With ``dataset_id``, the files are registered in that dataset of the caller's as they are signed (each upload gets
its ``image_id``), so a file whose PUT never happens is an image whose object is missing (``image_not_found`` when
predicted).
"""

from __future__ import annotations

from typing import Any

import boto3
from aws_lambda_powertools import Logger, Tracer
from aws_lambda_powertools.utilities.typing import LambdaContext
from botocore.config import Config

from modelrun.audit import AuditTrail
from modelrun.config import require_env
from modelrun.datasets.store import REGISTERING, DatasetStore, registering
from modelrun.errors import InvalidRequest
from modelrun.http.requests import header, json_body
from modelrun.http.resolver import create_resolver
from modelrun.http.tenancy import current_tenant, resolve_tenants, serve
from modelrun.tenants.resolve import TenantResolver
from modelrun.uploads.presign import PREFIX, URL_EXPIRY_S, new_upload_id, parse_files, unique_names, upload_id_for

logger = Logger()
tracer = Tracer()
app = create_resolver()

# SigV4 signs the Content-Type and Content-Length headers into the URL (SigV2 would sign neither size nor region).
s3 = boto3.client("s3", config=Config(signature_version="s3v4"))
bucket = require_env("IMAGES_BUCKET")
max_image_bytes = int(require_env("MAX_IMAGE_BYTES"))
dynamodb = boto3.resource("dynamodb")
datasets = DatasetStore(dynamodb.Table(require_env("DATASETS_TABLE")))
tenants = TenantResolver.from_env(boto3.client("apigateway"))
resolve_tenants(app, tenants)
audit = AuditTrail.from_env(dynamodb)


@app.post("/uploads")
@tracer.capture_method
def create_uploads() -> dict[str, Any]:
    body = json_body(app.current_event.body, app.current_event.is_base64_encoded, expected='{"files": [...]}')
    files = parse_files(body, max_bytes=max_image_bytes)
    tenant = current_tenant(app)
    idempotency_key = header(dict(app.current_event.headers or {}), "Idempotency-Key")
    upload_id = upload_id_for(tenant, idempotency_key) if idempotency_key else new_upload_id()
    dataset_id = body.get("dataset_id")
    if dataset_id is not None:
        if not isinstance(dataset_id, str):
            raise InvalidRequest('"dataset_id" must be the id of one of your datasets (POST /datasets made it)')
        # 404 (or 409 while it is registered) before anything is signed
        if datasets.for_tenant(tenant).get(dataset_id)["status"] == REGISTERING:
            raise registering(dataset_id)
    uploads = []
    for spec, name in zip(files, unique_names(files), strict=True):
        key = tenant.key(PREFIX, upload_id, name)
        params = {"Bucket": bucket, "Key": key, "ContentType": spec.content_type, "ContentLength": spec.size}
        url = s3.generate_presigned_url("put_object", Params=params, ExpiresIn=URL_EXPIRY_S)
        uploads.append({"name": spec.name, "key": key, "url": url, "headers": {"Content-Type": spec.content_type}})
    logger.info(
        "uploads signed",
        tenant=tenant.name,
        upload_id=upload_id,
        files=len(uploads),
        bytes=sum(spec.size for spec in files),
    )
    answer: dict[str, Any] = {"upload_id": upload_id, "bucket": bucket, "expires_in": URL_EXPIRY_S, "uploads": uploads}
    if dataset_id is not None:
        image_ids = datasets.for_tenant(tenant).add_images(dataset_id, [up["key"] for up in uploads], source=None)
        for upload, image_id in zip(uploads, image_ids, strict=True):
            upload["image_id"] = image_id
        answer["dataset_id"] = dataset_id
    return answer


@logger.inject_lambda_context(log_event=False)
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return serve(app, event, context, tenants=tenants, audit=audit)
