"""Tenants: who owns a request, and the scope every store builds its keys and prefixes from.

How a tenant is resolved
    Every REST API key belongs to exactly one tenant. API Gateway validates the key (it must be in the stack's usage
    plan) and passes its id to the Lambda proxy integration as ``requestContext.identity.apiKeyId``. The function
    looks that id up once per sandbox (``apigateway:GetApiKey``; the key's ``modelrun:tenant`` tag, which
    ``modelrun tenants add`` sets and nothing ever changes) and caches it (``modelrun.tenants.resolve``). An untagged
    key (the stack's own ``RestApiApiKey``, which SAM creates without tags) is the ``default`` tenant's. The
    WebSocket API has no key validation of its own: ``$connect`` finds the presented key's value among the usage
    plan's keys, then its tenant the same way (``TenantResolver.for_key_value``).

    Why a lookup and not a Lambda authorizer: the key is already validated by API Gateway, the mapping key id ->
    tenant never changes, so a per-sandbox cache answers almost every request with no call at all; an authorizer
    would add a function, its cache settings and a second code path to the local gateway, for the same answer. The
    price: each API function's role may read API keys (``apigateway:GET`` on ``/apikeys/*``), and a cold sandbox
    makes one GetApiKey call per key it sees (API Gateway's control plane allows about 10 per second per account).

The scope pattern (datasets and any later resource follow it)
    * A :class:`Tenant` is a validated name. Its S3 space is ``tenants/<name>/``: :meth:`Tenant.key` builds keys in
      it and :meth:`Tenant.owns` tells whether a key a caller named lies in it.
    * Stores carry their scope: a store built once per sandbox gives a scoped view per request
      (``JobStore.for_tenant(tenant)``); the view stamps ``tenant`` on what it creates, builds every key and prefix
      from the tenant, and answers :class:`~modelrun.errors.NotFound` for another tenant's resource, exactly as for
      a missing one. Workers (state machine tasks, streams, queues) use the unscoped store: they act for whichever
      tenant submitted the work.
    * Tables key by tenant: a new table's partition key is the tenant (``tenant``, sort key the resource id), or
      ``<tenant>#<id>`` where one partition per tenant would be too hot (:meth:`Tenant.partition`). The jobs table
      predates tenants: it keys by the random batch id and keeps the owner in its ``tenant`` attribute, checked by
      the scoped store on every read.
    * Handlers get the request's tenant from the resolver's context (:func:`modelrun.http.tenancy.current_tenant`),
      never from the body or the path.
"""

# The resolver (modelrun.tenants.resolve) is imported from its own module by the functions that resolve keys: every
# store imports this package, and the workers have no API key settings.
from modelrun.tenants.scope import DEFAULT_TENANT, TENANT_TAG, Tenant, tenant_of_key

__all__ = ["DEFAULT_TENANT", "TENANT_TAG", "Tenant", "tenant_of_key"]
