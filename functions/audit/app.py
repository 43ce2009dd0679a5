"""GET /audit: the caller's own audit records, newest first, optionally of one resource (a batch id, ...)."""

from __future__ import annotations

from typing import Any

import boto3
from aws_lambda_powertools import Logger, Tracer
from aws_lambda_powertools.utilities.typing import LambdaContext

from modelrun.audit import AuditTrail
from modelrun.errors import InvalidRequest
from modelrun.http.requests import query_int
from modelrun.http.resolver import create_resolver
from modelrun.http.tenancy import current_tenant, resolve_tenants, serve
from modelrun.tenants.resolve import TenantResolver

logger = Logger()
tracer = Tracer()
app = create_resolver()

tenants = TenantResolver.from_env(boto3.client("apigateway"))
resolve_tenants(app, tenants)
audit = AuditTrail.from_env(boto3.resource("dynamodb"))
MAX_RESOURCE_CHARS = 128


@app.get("/audit")
@tracer.capture_method
def list_audit() -> dict[str, Any]:
    query = dict(app.current_event.query_string_parameters or {})
    resource = query.get("resource") or None
    if resource is not None and len(resource) > MAX_RESOURCE_CHARS:
        raise InvalidRequest(f'"resource" is an id of at most {MAX_RESOURCE_CHARS} characters (a batch id, ...)')
    limit = query_int(query, "limit", default=100, maximum=1000)
    records, token = audit.page(current_tenant(app), resource=resource, limit=limit, token=query.get("next_token"))
    return {"records": records, "next_token": token}


@logger.inject_lambda_context(log_event=False)
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return serve(app, event, context, tenants=tenants, audit=audit)
