"""Which tenant an API key belongs to: by the key id API Gateway validated (REST), or by its value (WebSocket)."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from aws_lambda_powertools import Logger
from botocore.exceptions import ClientError

from modelrun.aws.errors import error_code
from modelrun.errors import InvalidRequest, ModelrunError
from modelrun.tenants.scope import DEFAULT_TENANT, TENANT_TAG, Tenant

logger = Logger(child=True)

# A WebSocket key that matches no usage plan key re-reads the plan at most this often (a key added a moment ago
# connects within seconds; a flood of wrong keys does not become a flood of API Gateway calls).
KEY_VALUES_MIN_AGE_S = 5.0
# A known value is trusted this long: a removed key stops connecting within a minute.
KEY_VALUES_MAX_AGE_S = 60.0


class MissingApiKey(ModelrunError):
    code = "invalid_api_key"
    status = 401


class InvalidApiKey(ModelrunError):
    code = "invalid_api_key"
    status = 403


@dataclass
class TenantResolver:
    """Maps API keys to tenants, caching what it learns for the life of the sandbox.

    A key's tenant never changes (its tag is set when the key is made), so the id -> tenant map is cached for good;
    the values of the usage plan's keys, which only the WebSocket path needs, are re-read within a minute.

    Attributes:
        apigateway: a boto3 ``apigateway`` client.
        default_key_id: the id of the stack's own key (``RestApiApiKey``), where the function may know it (the
            WebSocket one; a REST function cannot reference it without a cycle in the template). Without it, an
            untagged key of the plan (the stack's own) is the default tenant's.
        usage_plan_id: the stack's usage plan, whose keys the WebSocket path matches values against.
    """

    apigateway: Any
    default_key_id: str | None = None
    usage_plan_id: str | None = None
    _tenants: dict[str, Tenant] = field(default_factory=dict)
    _values: dict[str, str] = field(default_factory=dict)
    _values_read_at: float = float("-inf")
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def from_env(cls, apigateway: Any) -> TenantResolver:
        """The resolver of a function, with ``API_KEY_ID`` and ``USAGE_PLAN_ID`` where the template sets them."""
        return cls(apigateway, os.environ.get("API_KEY_ID") or None, os.environ.get("USAGE_PLAN_ID") or None)

    def for_request(self, event: Mapping[str, Any]) -> Tenant:
        """The tenant of a REST proxy event, from ``requestContext.identity.apiKeyId``.

        Raises:
            InvalidApiKey: the event carries no key id, or the key belongs to no tenant.
        """
        identity = (event.get("requestContext") or {}).get("identity") or {}
        return self.for_key_id(identity.get("apiKeyId"))

    def for_key_id(self, key_id: str | None) -> Tenant:
        """The tenant of a key API Gateway validated.

        Raises:
            InvalidApiKey: no id, an unknown key, or a key with an invalid ``modelrun:tenant`` tag.
        """
        if not key_id:
            raise InvalidApiKey("the request carries no API key: send it in the x-api-key header")
        cached = self._tenants.get(key_id)
        if cached is not None:
            return cached
        tenant = Tenant(DEFAULT_TENANT) if key_id == self.default_key_id else self._tagged(self._read_key(key_id))
        with self._lock:
            self._tenants[key_id] = tenant
        logger.info("tenant resolved", api_key_id=key_id, tenant=tenant.name)
        return tenant

    def for_key_value(self, value: str | None) -> Tenant:
        """The tenant of a key presented by value (WebSocket ``$connect``): it must be an enabled key of the plan.

        Raises:
            MissingApiKey: no value.
            InvalidApiKey: the value is no enabled key of the stack's usage plan.
        """
        if not value:
            raise MissingApiKey("send the API key as the api_key query parameter or the x-api-key header")
        key_id = self._key_id_of(value)
        if key_id is None:
            raise InvalidApiKey("the API key is not valid: use a key of the stack's REST API")
        if key_id not in self._tenants and key_id != self.default_key_id:
            key = self._read_key(key_id)
            if not key.get("enabled", True):
                raise InvalidApiKey("the API key is disabled: ask the stack's operator for an enabled one")
        return self.for_key_id(key_id)

    def _key_id_of(self, value: str) -> str | None:
        with self._lock:
            age = time.monotonic() - self._values_read_at
            if age > KEY_VALUES_MAX_AGE_S or (value not in self._values and age > KEY_VALUES_MIN_AGE_S):
                self._values = self._plan_key_values()
                self._values_read_at = time.monotonic()
            return self._values.get(value)

    def _plan_key_values(self) -> dict[str, str]:
        """{value: key id} of the usage plan's keys; only the stack's own key where no plan is configured."""
        if self.usage_plan_id is None:
            if self.default_key_id is None:
                return {}
            key = self.apigateway.get_api_key(apiKey=self.default_key_id, includeValue=True)
            return {str(key["value"]): self.default_key_id} if key.get("enabled", True) else {}
        values: dict[str, str] = {}
        for page in self.apigateway.get_paginator("get_usage_plan_keys").paginate(usagePlanId=self.usage_plan_id):
            for key in page.get("items", []):
                values[str(key["value"])] = str(key["id"])
        return values

    def _read_key(self, key_id: str) -> dict[str, Any]:
        try:
            key: dict[str, Any] = self.apigateway.get_api_key(apiKey=key_id, includeValue=False)
        except ClientError as exc:
            if error_code(exc) == "NotFoundException":
                raise InvalidApiKey("the API key does not exist any more: ask the operator for a new one") from exc
            raise
        return key

    @staticmethod
    def _tagged(key: dict[str, Any]) -> Tenant:
        # Untagged: the stack's own key (SAM creates it without tags). Every other key is made by `modelrun tenants
        # add`, which tags it; so an operator who adds a key by hand gives its holder the default tenant's data.
        name = (key.get("tags") or {}).get(TENANT_TAG) or DEFAULT_TENANT
        try:
            return Tenant(str(name))
        except InvalidRequest as exc:
            raise InvalidApiKey(f"the API key's tenant tag {name!r} is not a tenant name") from exc


@dataclass
class KnownTenants:
    """Which tenants exist, for work that meets a tenant by name rather than by API key (an upload trigger takes it
    from ``tenants/<name>/`` in an object key): the default tenant, and every tenant an API key of the account and
    region is tagged with (``modelrun tenants add`` tags it; ``remove`` deletes the key, and the name is unknown
    within a minute).

    The account's keys and not the usage plan's: the function that asks (OnUploadFunction) cannot refer to the plan
    without a cycle in the template (bucket -> its notifications -> the function -> the plan -> the API's stage ->
    the API functions -> their policies -> the bucket). The names are read at most every
    :data:`KEY_VALUES_MIN_AGE_S` for an unknown one and every :data:`KEY_VALUES_MAX_AGE_S` in any case, so a flood
    of drops under a name that is no tenant does not become a flood of API Gateway calls.

    Attributes:
        apigateway: a boto3 ``apigateway`` client (``apigateway:GET`` on ``/apikeys``).
    """

    apigateway: Any
    _names: frozenset[str] = frozenset()
    _read_at: float = float("-inf")
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __contains__(self, tenant: object) -> bool:
        if not isinstance(tenant, Tenant):
            return False
        if tenant.name == DEFAULT_TENANT:
            return True
        with self._lock:
            age = time.monotonic() - self._read_at
            if age > KEY_VALUES_MAX_AGE_S or (tenant.name not in self._names and age > KEY_VALUES_MIN_AGE_S):
                self._names = self._tagged_names()
                self._read_at = time.monotonic()
            return tenant.name in self._names

    def _tagged_names(self) -> frozenset[str]:
        names = set()
        for page in self.apigateway.get_paginator("get_api_keys").paginate(includeValues=False):
            for key in page.get("items", []):
                name = (key.get("tags") or {}).get(TENANT_TAG)
                if name and key.get("enabled", True):
                    names.add(str(name))
        logger.info("tenant names read", tenants=len(names))
        return frozenset(names)
