"""The request's tenant in a REST handler: resolved once before the route runs, read by the route, audited after.

A handler wires it like this (``functions/batch_status/app.py``)::

    app = create_resolver()
    tenants = TenantResolver.from_env(boto3.client("apigateway"))
    audit = AuditTrail.from_env(dynamodb)
    resolve_tenants(app, tenants)

    @app.get("/batches/<batch_id>")
    def get_batch(batch_id):
        job = store.for_tenant(current_tenant(app)).get(batch_id)
        ...

    def lambda_handler(event, context):
        return serve(app, event, context, tenants=tenants, audit=audit)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response
from aws_lambda_powertools.event_handler.middlewares import NextMiddleware

from modelrun.errors import ModelrunError
from modelrun.tenants import Tenant
from modelrun.tenants.resolve import TenantResolver

if TYPE_CHECKING:
    from modelrun.audit import AuditTrail

logger = Logger(child=True)

TENANT = "tenant"


def current_tenant(app: APIGatewayRestResolver) -> Tenant:
    """The tenant ``serve`` resolved for the request being handled.

    Raises:
        RuntimeError: the handler does not go through :func:`serve` (a wiring mistake, never a user's).
    """
    tenant = app.context.get(TENANT)
    if not isinstance(tenant, Tenant):
        raise RuntimeError("no tenant for this request: the handler must call modelrun.http.tenancy.serve")
    return tenant


def resolve_tenants(app: APIGatewayRestResolver, tenants: TenantResolver) -> None:
    """Resolve the tenant before every route of ``app`` runs (a global middleware): a key that belongs to no tenant
    is refused, 403 ``invalid_api_key``, through the resolver's own error mapping (CORS headers included)."""

    def _tenant(router: APIGatewayRestResolver, next_middleware: NextMiddleware) -> Response:
        tenant = tenants.for_request(router.current_event.raw_event)
        router.append_context(**{TENANT: tenant})
        return next_middleware(router)

    app.use(middlewares=[_tenant])


def serve(
    app: APIGatewayRestResolver,
    event: dict[str, Any],
    context: Any,
    *,
    tenants: TenantResolver,
    audit: AuditTrail | None,
) -> dict[str, Any]:
    """Answer the request, then record it in the audit trail for its tenant (``app`` has :func:`resolve_tenants`).

    A request refused before its tenant was known (no key, a key of no tenant) has no tenant to audit it for: it is
    only logged, by the resolver.

    Returns:
        The Lambda proxy response.
    """
    response: dict[str, Any] = app.resolve(event, context)
    if audit is not None:
        try:
            tenant = tenants.for_request(event)  # cached: the middleware resolved it a moment ago
        except ModelrunError:
            return response
        audit.record_request(tenant, event, response)
    return response
