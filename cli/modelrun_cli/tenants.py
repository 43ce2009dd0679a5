"""``modelrun tenants add|list|remove``: one API key per tenant in the stack's usage plan.

A tenant is an API key tagged ``modelrun:tenant=<name>`` in the plan the stack's ``UsagePlanId`` output names; the
plan's throttle applies to each key, so every tenant is throttled on its own. The stack's own key (``ApiKeyId``) is
the ``default`` tenant, which cannot be removed here. These are administrator commands: they use the caller's AWS
credentials (``apigateway:*`` on the plan and keys), or the local stack's, never an API key.
"""

from __future__ import annotations

import re
from typing import Any

from modelrun_cli.config import Target
from modelrun_cli.errors import CliError

TENANT_TAG = "modelrun:tenant"
DEFAULT_TENANT = "default"
NAME = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,38}[a-z0-9])?$")


def apigateway_client(target: Target) -> Any:
    """An API Gateway client for the target: the user's AWS setup, or the local stack's endpoint and credentials."""
    import boto3

    kwargs: dict[str, Any] = {"region_name": target.region or "us-east-1"}
    if target.aws_endpoint:
        if target.aws_credentials is None:
            raise CliError(f"the AWS endpoint {target.aws_endpoint} (from {target.source}) needs the local credentials")
        kwargs["endpoint_url"] = target.aws_endpoint
        kwargs["aws_access_key_id"], kwargs["aws_secret_access_key"] = target.aws_credentials
    return boto3.session.Session().client("apigateway", **kwargs)


def check_name(name: str) -> str:
    if not NAME.match(name):
        raise CliError(f"{name!r} is not a tenant name: use 1 to 40 lower-case letters, digits and inner hyphens")
    return name


def _plan(target: Target) -> str:
    if not target.usage_plan_id:
        raise CliError(f"{target.source} names no usage plan (UsagePlanId output): deploy the stack's current template")
    return target.usage_plan_id


def list_tenants(apigateway: Any, target: Target) -> list[dict[str, Any]]:
    """Every key of the plan with its tenant (``default`` for the stack's untagged key), by tenant name."""
    tenants = []
    for page in apigateway.get_paginator("get_usage_plan_keys").paginate(usagePlanId=_plan(target)):
        for item in page.get("items", []):
            try:
                key = apigateway.get_api_key(apiKey=item["id"])
            except apigateway.exceptions.NotFoundException:
                continue
            name = (key.get("tags") or {}).get(TENANT_TAG) or DEFAULT_TENANT
            tenants.append({"tenant": name, "key_id": key["id"], "enabled": bool(key.get("enabled", True))})
    return sorted(tenants, key=lambda tenant: (tenant["tenant"], tenant["key_id"]))


def add_tenant(apigateway: Any, target: Target, name: str) -> dict[str, Any]:
    """A new enabled key for the tenant in the plan; its id and value (shown once, to hand to the tenant).

    Raises:
        CliError: a bad name, ``default``, or a tenant that has a key already.
    """
    check_name(name)
    if name == DEFAULT_TENANT or any(tenant["tenant"] == name for tenant in list_tenants(apigateway, target)):
        raise CliError(f"tenant {name!r} exists already: `modelrun tenants list` shows it")
    key = apigateway.create_api_key(name=f"modelrun-{name}", enabled=True, tags={TENANT_TAG: name})
    apigateway.create_usage_plan_key(usagePlanId=_plan(target), keyId=key["id"], keyType="API_KEY")
    value = apigateway.get_api_key(apiKey=key["id"], includeValue=True)["value"]
    return {"tenant": name, "key_id": key["id"], "api_key": value}


def remove_tenant(apigateway: Any, target: Target, name: str) -> list[str]:
    """Delete the tenant's keys (API Gateway refuses them at once); the ids deleted. Its data stays until it expires.

    Raises:
        CliError: ``default`` or an unknown tenant.
    """
    check_name(name)
    if name == DEFAULT_TENANT:
        raise CliError("the default tenant is the stack's own key: it goes with the stack")
    ids = [tenant["key_id"] for tenant in list_tenants(apigateway, target) if tenant["tenant"] == name]
    if not ids:
        raise CliError(f"no tenant {name!r}: `modelrun tenants list` shows them")
    for key_id in ids:
        apigateway.delete_api_key(apiKey=key_id)
    return ids
