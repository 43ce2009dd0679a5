"""POST /predictions, GET /models, GET /models/{name}: single-image prediction (of an image sent, in the bucket, or of
a dataset) and the model catalogue."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import boto3
from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from modelrun.audit import AuditTrail
from modelrun.aws.s3 import ImageStore
from modelrun.config import require_env
from modelrun.datasets.history import PredictionHistory
from modelrun.datasets.predict import DatasetImagePredictor
from modelrun.datasets.store import DatasetStore
from modelrun.errors import UnknownModel
from modelrun.http.requests import parse_image_request
from modelrun.http.resolver import create_resolver
from modelrun.http.tenancy import current_tenant, resolve_tenants, serve
from modelrun.images.decode import Limits
from modelrun.models.registry import ModelRegistry
from modelrun.predict import Predictor
from modelrun.tenants.resolve import TenantResolver

logger = Logger()
tracer = Tracer()
metrics = Metrics()
app = create_resolver()

# Cold start: validate every model description and load the default model once, so a broken model or a
# missing setting fails the first request with a clear message instead of half-working.
registry = ModelRegistry(Path(require_env("MODEL_ROOT")))
catalogue = registry.list_models()
predictor = Predictor(registry, Limits.from_env(), require_env("DEFAULT_MODEL"))
registry.get(predictor.default_model)
bucket = require_env("IMAGES_BUCKET")
images = ImageStore(boto3.client("s3"), {bucket})
dynamodb = boto3.resource("dynamodb")
datasets_table = dynamodb.Table(require_env("DATASETS_TABLE"))
dataset_images = DatasetImagePredictor(
    DatasetStore(datasets_table), PredictionHistory(datasets_table), images, bucket, predictor
)
tenants = TenantResolver.from_env(boto3.client("apigateway"))
resolve_tenants(app, tenants)
audit = AuditTrail.from_env(dynamodb)


@app.post("/predictions")
@tracer.capture_method
def create_prediction() -> tuple[dict[str, Any], int]:
    event = app.current_event
    request = parse_image_request(
        event.body,
        is_base64=event.is_base64_encoded,
        headers=dict(event.headers or {}),
        query=dict(event.query_string_parameters or {}),
    )
    if request.dataset_image is not None:
        result = dataset_images.predict(current_tenant(app), request)
        metrics.add_metric(name="Predictions", unit=MetricUnit.Count, value=1)
        logger.info(
            "prediction made", model=result["model"], version=result["version"], dataset_id=result["dataset_id"]
        )
        return result, 200
    image = request.image
    if request.ref is not None:
        image = images.for_tenant(current_tenant(app)).read(
            request.ref.bucket, request.ref.key, max_bytes=predictor.limits.max_bytes
        )
    result = predictor.predict(
        image, model=request.model, version=request.version, masks=request.masks, preview=request.preview
    )
    metrics.add_metric(name="Predictions", unit=MetricUnit.Count, value=1)
    metrics.add_metadata(key="model", value=f"{result['model']}/{result['version']}")
    logger.info("prediction made", model=result["model"], version=result["version"], label=result.get("label"))
    return result, 200


@app.get("/models")
def list_models() -> dict[str, Any]:
    return {"default_model": predictor.default_model, "models": [spec.to_dict() for spec in catalogue]}


@app.get("/models/<name>")
def get_model(name: str) -> dict[str, Any]:
    versions = [spec.to_dict() for spec in catalogue if spec.name == name]
    if not versions:
        known = sorted({spec.name for spec in catalogue})
        raise UnknownModel(f"no model named {name!r}; available: {', '.join(known)}")
    return {"name": name, "latest": versions[-1]["version"], "versions": versions}


@logger.inject_lambda_context(log_event=False)
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    # Every request counts, so the metric set is never empty (errors and the catalogue included).
    metrics.add_metric(name="Requests", unit=MetricUnit.Count, value=1)
    return serve(app, event, context, tenants=tenants, audit=audit)
