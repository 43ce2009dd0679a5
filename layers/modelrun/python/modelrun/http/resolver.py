"""The REST resolver every API handler builds: the one place where domain errors become API responses, and CORS.

Every error body has the same shape: ``{"error": {"code": "<stable code>", "message": "<what to do>"}}``.
"""

from __future__ import annotations

import json
import os
from http import HTTPStatus
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.event_handler import APIGatewayRestResolver, CORSConfig, Response, content_types
from aws_lambda_powertools.utilities.idempotency.exceptions import (
    IdempotencyAlreadyInProgressError,
    IdempotencyValidationError,
)

from modelrun.errors import ModelrunError

logger = Logger(child=True)


def error_response(status: int, code: str, message: str, details: dict[str, Any] | None = None) -> Response:
    error: dict[str, Any] = {"code": code, "message": message}
    if details:
        error["details"] = details
    return Response(
        status_code=status,
        content_type=content_types.APPLICATION_JSON,
        body=json.dumps({"error": error}),
    )


# Headers a browser page (web/) may send; API Gateway's Cors setting answers the preflight with the same list.
CORS_ALLOW_HEADERS = ["Content-Type", "X-Api-Key", "Idempotency-Key"]


def cors_config() -> CORSConfig:
    """CORS headers on every response, for the origin the template's WebOrigin parameter names ("*" by default)."""
    return CORSConfig(allow_origin=os.environ.get("CORS_ALLOW_ORIGIN") or "*", allow_headers=CORS_ALLOW_HEADERS)


def create_resolver() -> APIGatewayRestResolver:
    """A REST resolver with the project's error mapping and CORS headers installed."""
    app = APIGatewayRestResolver(cors=cors_config())

    @app.exception_handler(ModelrunError)
    def _domain_error(exc: ModelrunError) -> Response:
        log = logger.error if exc.status >= HTTPStatus.INTERNAL_SERVER_ERROR else logger.info
        log("request failed", code=exc.code, status=exc.status, reason=exc.message)
        return error_response(exc.status, exc.code, exc.message, exc.details or None)

    @app.exception_handler(IdempotencyValidationError)
    def _key_reused(_exc: IdempotencyValidationError) -> Response:
        return error_response(
            HTTPStatus.UNPROCESSABLE_ENTITY,
            "idempotency_key_reused",
            "this Idempotency-Key was used with another request body: use a new key for a new request",
        )

    @app.exception_handler(IdempotencyAlreadyInProgressError)
    def _in_progress(_exc: IdempotencyAlreadyInProgressError) -> Response:
        return error_response(
            HTTPStatus.CONFLICT,
            "request_in_progress",
            "a request with this Idempotency-Key is still being processed: retry in a few seconds",
        )

    @app.not_found
    def _no_route(_exc: Exception) -> Response:
        event = app.current_event
        return error_response(
            HTTPStatus.NOT_FOUND,
            "route_not_found",
            f"no route for {event.http_method} {event.path}: see the README for the API",
        )

    return app
