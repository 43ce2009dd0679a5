"""openapi.yaml against the template: a valid OpenAPI 3.0 document whose operations are exactly the REST ``Api``
events of template.yaml, each behind the API key, with every error code a user can cause.

What the API really answers is checked against the document by tests/integration/test_api_fuzz.py."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from openapi_spec_validator import validate
from openapi_spec_validator.validation.exceptions import OpenAPIValidationError

from modelrun import errors
from modelrun_local.template import Template

REPO = Path(__file__).resolve().parents[2]
SPEC_PATH = REPO / "openapi.yaml"
TEMPLATE = Template.load(REPO / "template.yaml")
HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(SPEC_PATH.read_text(encoding="utf-8"))
    return document


def operations(spec: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in spec["paths"].items():
        for method in HTTP_METHODS:
            if method in item:
                yield method.upper(), path, item[method]


def domain_error_classes(
    base: type[errors.ModelrunError] = errors.ModelrunError,
) -> Iterator[type[errors.ModelrunError]]:
    for cls in base.__subclasses__():
        if cls.__module__ == errors.__name__:
            yield cls
            yield from domain_error_classes(cls)


def test_the_document_is_a_valid_openapi_3_0_document(spec: dict[str, Any]) -> None:
    # Given openapi.yaml
    # When it is validated against the OpenAPI specification
    try:
        validate(spec)
    except OpenAPIValidationError as exc:
        pytest.fail(f"openapi.yaml is not valid OpenAPI: {exc}")

    # Then it is valid, and of the 3.0 line (what API Gateway imports and the fuzz test reads)
    assert spec["openapi"].startswith("3.0.")


def test_the_documented_operations_are_exactly_the_rest_api_events_of_the_template(spec: dict[str, Any]) -> None:
    # Given the Api events of every function in template.yaml
    routes = {(route.method, route.path) for route in TEMPLATE.api_routes()}

    # When the operations of openapi.yaml are listed
    documented = {(method, path) for method, path, _ in operations(spec)}

    # Then they are the same set: no route undocumented, no documented route that does not exist
    assert routes, "template.yaml has no Api events"
    assert sorted(routes - documented) == [], "routes in template.yaml missing from openapi.yaml"
    assert sorted(documented - routes) == [], "operations in openapi.yaml that template.yaml does not route"


def test_every_operation_needs_the_api_key_exactly_when_the_template_requires_it(spec: dict[str, Any]) -> None:
    # Given the API key rule of each route, and the document's API key scheme
    required = {(route.method, route.path): route.api_key_required for route in TEMPLATE.api_routes()}
    schemes = spec["components"]["securitySchemes"]
    api_key_schemes = {
        name
        for name, scheme in schemes.items()
        if scheme.get("type") == "apiKey" and scheme.get("in") == "header" and scheme.get("name") == "x-api-key"
    }
    assert api_key_schemes, "openapi.yaml declares no apiKey scheme for the x-api-key header"

    # When each operation's security (its own, or the document's) is read
    for method, path, operation in operations(spec):
        security = operation.get("security", spec.get("security", []))
        needs_key = bool(security) and all(api_key_schemes & set(requirement) for requirement in security)

        # Then it matches the template
        assert needs_key == required[(method, path)], f"{method} {path}: API key rule differs from template.yaml"


def test_every_error_code_a_user_can_cause_is_in_the_documented_error_body(spec: dict[str, Any]) -> None:
    # Given the codes of the domain errors that are the client's (4xx) and of the gateway's own 4xx responses
    domain = {cls.code for cls in domain_error_classes() if cls.status < 500}
    gateway_responses = TEMPLATE.resources["RestApi"]["Properties"]["GatewayResponses"]
    gateway = {
        found.group(1)
        for name, response in gateway_responses.items()
        if not name.startswith("DEFAULT_5") and int(response.get("StatusCode", 400)) < 500
        for found in [re.search(r'"code": "([a-z_]+)"', response["ResponseTemplates"]["application/json"])]
        if found
    }

    # When the error body's code enum is read
    documented = set(spec["components"]["schemas"]["Error"]["properties"]["error"]["properties"]["code"]["enum"])

    # Then it names every one of them
    assert domain, "no domain error classes found"
    assert sorted((domain | gateway) - documented) == []
