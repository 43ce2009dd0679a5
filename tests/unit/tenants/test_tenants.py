"""Tenants: names, their S3 space, and which tenant an API key belongs to (on moto's API Gateway)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from modelrun.errors import InvalidRequest
from modelrun.tenants import DEFAULT_TENANT, TENANT_TAG, Tenant
from modelrun.tenants.resolve import InvalidApiKey, KnownTenants, MissingApiKey, TenantResolver
from modelrun.tenants.scope import tenant_of_key


@pytest.fixture
def apigateway() -> Iterator[Any]:
    with mock_aws():
        yield boto3.client("apigateway", region_name="us-east-1")


def make_key(apigateway: Any, plan_id: str, value: str, tenant: str | None) -> str:
    tags = {TENANT_TAG: tenant} if tenant else {}
    key_id: str = apigateway.create_api_key(name=f"k-{value}", value=value, enabled=True, tags=tags)["id"]
    apigateway.create_usage_plan_key(usagePlanId=plan_id, keyId=key_id, keyType="API_KEY")
    return key_id


@pytest.fixture
def plan(apigateway: Any) -> str:
    plan_id: str = apigateway.create_usage_plan(name="plan")["id"]
    return plan_id


def test_a_tenant_space_is_its_prefix_with_the_slash() -> None:
    tenant = Tenant("acme")

    assert tenant.key("inputs", "u1", "a.png") == "tenants/acme/inputs/u1/a.png"
    assert tenant.owns("tenants/acme/x.png")
    assert not tenant.owns("tenants/acme-2/x.png")
    assert not tenant.owns("tenants/acm")
    assert not tenant.owns("inputs/x.png")


@pytest.mark.parametrize("name", ["", "A", "a/b", "a#b", "-a", "a-", "a" * 41, "tenants/x", "a b"])
def test_a_name_that_could_break_a_key_is_refused(name: str) -> None:
    with pytest.raises(InvalidRequest):
        Tenant(name)


def test_the_default_tenant_owns_the_bucket_outside_tenants_and_nothing_in_it() -> None:
    default = Tenant(DEFAULT_TENANT)

    assert default.key("inputs", "u1", "a.png") == "inputs/u1/a.png"
    assert default.owns("samples/a.png")
    assert not default.owns("tenants/acme/a.png")


def test_the_tenant_of_an_uploaded_key_comes_from_its_prefix() -> None:
    assert tenant_of_key("tenants/acme/uploads/a.png") == Tenant("acme")
    assert tenant_of_key("uploads/a.png") == Tenant(DEFAULT_TENANT)
    assert tenant_of_key("tenants/Bad/uploads/a.png") is None
    assert tenant_of_key("tenants/acme") is None


def test_the_stack_key_is_the_default_tenant_and_a_tagged_key_its_tag(apigateway: Any, plan: str) -> None:
    default_id = make_key(apigateway, plan, "d" * 24, None)
    acme_id = make_key(apigateway, plan, "a" * 24, "acme")
    resolver = TenantResolver(apigateway, default_id, plan)

    assert resolver.for_key_id(default_id) == Tenant(DEFAULT_TENANT)
    assert resolver.for_request({"requestContext": {"identity": {"apiKeyId": acme_id}}}) == Tenant("acme")


def test_an_untagged_key_is_the_default_tenants_and_no_key_is_refused(apigateway: Any, plan: str) -> None:
    untagged_id = make_key(apigateway, plan, "s" * 24, None)
    resolver = TenantResolver(apigateway, None, plan)

    assert resolver.for_key_id(untagged_id) == Tenant(DEFAULT_TENANT)
    with pytest.raises(InvalidApiKey):
        resolver.for_request({"requestContext": {"identity": {}}})
    with pytest.raises(InvalidApiKey):
        resolver.for_key_id("no-such-key")


def test_a_websocket_key_value_resolves_through_the_usage_plan(apigateway: Any, plan: str) -> None:
    default_id = make_key(apigateway, plan, "d" * 24, None)
    make_key(apigateway, plan, "a" * 24, "acme")
    resolver = TenantResolver(apigateway, default_id, plan)

    assert resolver.for_key_value("a" * 24) == Tenant("acme")
    assert resolver.for_key_value("d" * 24) == Tenant(DEFAULT_TENANT)
    with pytest.raises(InvalidApiKey):
        resolver.for_key_value("x" * 24)
    with pytest.raises(MissingApiKey):
        resolver.for_key_value(None)


def test_a_disabled_key_does_not_connect(apigateway: Any, plan: str) -> None:
    key_id = make_key(apigateway, plan, "a" * 24, "acme")
    apigateway.update_api_key(apiKey=key_id, patchOperations=[{"op": "replace", "path": "/enabled", "value": "false"}])
    resolver = TenantResolver(apigateway, "the-stack-key", plan)

    with pytest.raises(InvalidApiKey):
        resolver.for_key_value("a" * 24)


class CountingApiGateway:
    """An API Gateway client that counts the key listings made through it."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.listings = 0

    def get_paginator(self, name: str) -> Any:
        self.listings += name == "get_api_keys"
        return self.client.get_paginator(name)


def test_the_known_tenants_are_the_default_one_and_those_an_enabled_key_is_tagged_with(
    apigateway: Any, plan: str
) -> None:
    # given keys tagged acme (enabled), gone (disabled), and an untagged one
    make_key(apigateway, plan, "value-of-acmes-key-0001", "acme")
    gone = make_key(apigateway, plan, "value-of-gones-key-0001", "gone")
    apigateway.update_api_key(apiKey=gone, patchOperations=[{"op": "replace", "path": "/enabled", "value": "false"}])
    make_key(apigateway, plan, "value-of-the-stack-key-01", None)

    # when the tenants are asked for, then acme and default exist, gone and a name no key has do not
    known = KnownTenants(apigateway)
    assert Tenant("acme") in known
    assert Tenant(DEFAULT_TENANT) in known
    assert Tenant("gone") not in known
    assert Tenant("ghost") not in known
    assert "acme" not in known  # only a Tenant is a tenant


def test_unknown_tenant_names_do_not_list_the_keys_again_within_seconds(apigateway: Any, plan: str) -> None:
    # given the known tenants, read once
    counting = CountingApiGateway(apigateway)
    known = KnownTenants(counting)
    assert Tenant("ghost") not in known

    # when a flood of drops names tenants that do not exist (and the default tenant, which needs no listing)
    for number in range(50):
        assert Tenant(f"ghost-{number}") not in known
        assert Tenant(DEFAULT_TENANT) in known

    # then the keys were listed once
    assert counting.listings == 1
