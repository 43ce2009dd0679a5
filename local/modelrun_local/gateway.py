"""The template's ``Api`` events served over HTTP as API Gateway REST proxy events.

Routes, binary media types and the API key rule come from template.yaml. What API Gateway does in front of the
function is reproduced: API key check (403), 10 MB request limit (413), base64 for binary media types, proxy
result to HTTP response, a function error as 502 and an integration timeout (29 s) as 504. Paths are served with
and without the stage prefix (``/v1/predictions`` and ``/predictions``).

CORS as the API's ``Cors`` setting makes API Gateway do it: a preflight ``OPTIONS`` on a path with routes is answered
by the gateway itself (200, no API key, no function call) with the configured origin, headers, max age and the
path's methods; the gateway's own error responses carry the headers of the template's ``GatewayResponses``; function
responses pass through untouched (the functions add their CORS headers themselves). A ``static`` handler answers
paths outside the API first (the web page under ``/ui/``, see ``modelrun_local.webui``).

``Gateway.route_request`` decides from the head alone (page, preflight, 404, 403), so ``GatewayServer`` answers those
without reading the body; the HTTP itself (h11's parsing, limits, timeouts, the ``Host`` rule against DNS rebinding,
the transport's own refusals) is ``modelrun_local.http11``'s.
"""

from __future__ import annotations

import base64
import fnmatch
import json
import logging
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from modelrun_local import LOGGER
from modelrun_local.http11 import BodyHandler, Head, Http11Server, Limits
from modelrun_local.lambdas import Dispatcher
from modelrun_local.template import ApiRoute, Template

log = logging.getLogger(LOGGER)

MAX_REQUEST_BYTES = 10 * 1024 * 1024  # API Gateway REST payload limit
MAX_EVENT_BYTES = 6 * 1024 * 1024  # Lambda synchronous invocation payload limit
INTEGRATION_TIMEOUT_S = 29.0


@dataclass(frozen=True)
class CompiledRoute:
    route: ApiRoute
    pattern: re.Pattern[str]

    @classmethod
    def compile(cls, route: ApiRoute) -> CompiledRoute:
        regex = ""
        for part in re.split(r"(\{[^}]+\})", route.path):
            if part.startswith("{") and part.endswith("+}"):
                regex += f"(?P<{part[1:-2]}>.+)"
            elif part.startswith("{"):
                regex += f"(?P<{part[1:-1]}>[^/]+)"
            else:
                regex += re.escape(part)
        return cls(route, re.compile(f"^{regex}/?$"))


def _gateway_error(status: int, code: str, message: str) -> tuple[int, dict[str, str], bytes]:
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    return status, {"Content-Type": "application/json"}, body


Response = tuple[int, dict[str, str], bytes]
# Answers (method, path) before the API routes, or returns None to leave the request to them.
StaticHandler = Callable[[str, str], Response | None]
ALL_METHODS = frozenset({"DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT"})


def _literal(value: Any) -> str:
    """API Gateway header values are expressions: "'*'" is the literal *."""
    text = str(value)
    return text[1:-1] if len(text) >= 2 and text[0] == text[-1] == "'" else text


@dataclass(frozen=True)
class CorsRule:
    """An ``AWS::Serverless::Api`` ``Cors`` property, resolved: what API Gateway's OPTIONS mock integration answers."""

    allow_origin: str
    allow_headers: str | None = None
    allow_methods: str | None = None  # None: the requested path's methods plus OPTIONS, as SAM generates them
    max_age: str | None = None
    allow_credentials: bool = False

    @classmethod
    def from_property(cls, value: Any) -> CorsRule | None:
        if not value:
            return None
        if isinstance(value, str):
            return cls(allow_origin=_literal(value))
        return cls(
            allow_origin=_literal(value["AllowOrigin"]),
            allow_headers=_literal(value["AllowHeaders"]) if "AllowHeaders" in value else None,
            allow_methods=_literal(value["AllowMethods"]) if "AllowMethods" in value else None,
            max_age=_literal(value["MaxAge"]) if "MaxAge" in value else None,
            allow_credentials=str(value.get("AllowCredentials", False)).lower() == "true",
        )

    def preflight(self, path_methods: set[str]) -> Response:
        headers = {"Content-Type": "application/json", "Access-Control-Allow-Origin": self.allow_origin}
        headers["Access-Control-Allow-Methods"] = self.allow_methods or ",".join(sorted({*path_methods, "OPTIONS"}))
        if self.allow_headers:
            headers["Access-Control-Allow-Headers"] = self.allow_headers
        if self.max_age:
            headers["Access-Control-Max-Age"] = self.max_age
        if self.allow_credentials:
            headers["Access-Control-Allow-Credentials"] = "true"
        return HTTPStatus.OK, headers, b"{}"


def cors_rule(template: Template, api: str, resolve: Callable[[Any], Any]) -> CorsRule | None:
    """The API's ``Cors`` property with its intrinsics resolved, or None when it has none."""
    return CorsRule.from_property(resolve(template.resources.get(api, {}).get("Properties", {}).get("Cors")))


def gateway_response_headers(template: Template, api: str, resolve: Callable[[Any], Any]) -> dict[str, str]:
    """The headers the API's ``DEFAULT_4XX`` gateway response adds (each entry in template.yaml adds the same)."""
    responses = template.resources.get(api, {}).get("Properties", {}).get("GatewayResponses", {})
    headers = resolve(responses.get("DEFAULT_4XX", {}).get("ResponseParameters", {}).get("Headers", {}))
    return {str(name): _literal(value) for name, value in (headers or {}).items()}


@dataclass(frozen=True)
class Routed:
    """A request the gateway passes to a function once its body is in: the route, the path without the stage, the
    query string, and the path parameters (decoded)."""

    route: ApiRoute
    path: str
    query: str
    path_parameters: dict[str, str]


class Gateway:
    """The routing and API Gateway behaviour, independent of the HTTP server that feeds it."""

    def __init__(
        self,
        routes: list[ApiRoute],
        dispatcher: Dispatcher,
        *,
        stage: str,
        key_ids: Callable[[str], str | None],
        binary_media_types: list[str],
        function_names: dict[str, str],
        cors: CorsRule | None = None,
        error_headers: dict[str, str] | None = None,
        static: StaticHandler | None = None,
    ) -> None:
        self.cors = cors
        self.error_headers = dict(error_headers or {})
        self.static = static
        self.routes = [CompiledRoute.compile(route) for route in routes]
        self.dispatcher = dispatcher
        self.stage = stage
        # x-api-key -> the key's id (None: no valid key), as API Gateway checks it against the usage plan's keys.
        self.key_ids = key_ids
        self.binary_media_types = binary_media_types
        self.function_names = function_names

    def is_binary(self, content_type: str) -> bool:
        media_type = content_type.split(";", 1)[0].strip().lower()
        return bool(media_type) and any(fnmatch.fnmatch(media_type, pattern) for pattern in self.binary_media_types)

    def match(self, method: str, path: str) -> tuple[CompiledRoute, dict[str, str]] | None:
        for compiled in self.routes:
            found = compiled.pattern.match(path)
            if found and compiled.route.method in (method, "ANY"):
                return compiled, {key: unquote(value) for key, value in found.groupdict().items()}
        return None

    def path_methods(self, path: str) -> set[str]:
        """Every method some route serves on this path (ANY counts as all of them)."""
        methods: set[str] = set()
        for compiled in self.routes:
            if compiled.pattern.match(path):
                methods |= ALL_METHODS if compiled.route.method == "ANY" else {compiled.route.method}
        return methods

    def error(self, status: int, code: str, message: str) -> Response:
        """An error the gateway answers itself, with the headers the template's GatewayResponses add."""
        status, headers, body = _gateway_error(status, code, message)
        return status, {**headers, **self.error_headers}, body

    def too_large(self) -> Response:
        """API Gateway's answer to a request over its 10 MB limit."""
        return self.error(
            HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
            "request_too_large",
            "the request is larger than API Gateway's 10 MB limit: upload the image to S3 and send image_s3",
        )

    def route_request(self, method: str, raw_path: str, headers: dict[str, str]) -> Response | Routed:
        """What the gateway decides before the body: an answer, or the route that the body goes to.

        The answer is the static handler's page, a CORS preflight, 404 ``route_not_found`` or 403
        ``invalid_api_key``; none of them depends on the body, so a server can send it without reading the body.
        """
        url = urlsplit(raw_path)
        if self.static is not None:
            served = self.static(method, url.path)
            if served is not None:
                return served
        path = url.path
        if path == f"/{self.stage}" or path.startswith(f"/{self.stage}/"):
            path = path[len(self.stage) + 1 :] or "/"
        lowered = {key.lower(): value for key, value in headers.items()}
        found = self.match(method, path)
        if found is None and method == "OPTIONS" and self.cors is not None and self.path_methods(path):
            # API Gateway's mock integration answers the preflight: no API key needed, no function called.
            return self.cors.preflight(self.path_methods(path))
        if found is None:
            return self.error(HTTPStatus.NOT_FOUND, "route_not_found", f"no route for {method} {path}")
        compiled, path_parameters = found
        if compiled.route.api_key_required and self.key_id(lowered.get("x-api-key")) is None:
            return self.error(HTTPStatus.FORBIDDEN, "invalid_api_key", "send a valid API key in the x-api-key header")
        return Routed(compiled.route, path, url.query, path_parameters)

    def key_id(self, value: str | None) -> str | None:
        return self.key_ids(value) if value else None

    def handle(self, method: str, raw_path: str, headers: dict[str, str], body: bytes, source_ip: str) -> Response:
        """The whole request's answer: ``route_request``, then ``invoke`` when it names a route."""
        routed = self.route_request(method, raw_path, headers)
        if not isinstance(routed, Routed):
            return routed
        return self.invoke(routed, method, headers, body, source_ip)

    def invoke(self, routed: Routed, method: str, headers: dict[str, str], body: bytes, source_ip: str) -> Response:
        """The routed request's answer with its body: the size limits, then the function's proxy result (or 502/504).

        Never raises for anything the client sent; a failure of the gateway itself propagates.
        """
        if len(body) > MAX_REQUEST_BYTES:
            return self.too_large()
        # What API Gateway adds in front of the function.
        headers = {**headers, "X-Forwarded-Proto": "http", "X-Forwarded-For": source_ip}
        event = self.event(
            routed.route, method, routed.path, routed.query, headers, body, routed.path_parameters, source_ip
        )
        # The size Lambda would see (json.dumps escapes to ASCII: characters are bytes); the string is not kept, the
        # event is this request's own and goes to the function as it is.
        if len(json.dumps(event)) > MAX_EVENT_BYTES:
            # On AWS, Lambda refuses an event over 6 MB and API Gateway answers 500; locally we say why.
            return self.error(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                "request_too_large",
                "the request exceeds Lambda's 6 MB event limit (about 4.5 MB of image once base64-encoded): "
                "upload the image to S3 and send image_s3",
            )
        function = self.dispatcher.functions[self.function_names[routed.route.function]]
        invocation = function.invoke(event)
        if invocation.duration_ms > INTEGRATION_TIMEOUT_S * 1000:
            # API Gateway stops waiting at 29 s whatever the function does afterwards.
            return (
                HTTPStatus.GATEWAY_TIMEOUT,
                {"Content-Type": "application/json", **self.error_headers},
                b'{"message": "Endpoint request timed out"}',
            )
        if invocation.failed:
            if invocation.error_type == "Sandbox.Timedout":
                return (
                    HTTPStatus.GATEWAY_TIMEOUT,
                    {"Content-Type": "application/json", **self.error_headers},
                    b'{"message": "Endpoint request timed out"}',
                )
            bad_gateway = {"Content-Type": "application/json", **self.error_headers}
            return HTTPStatus.BAD_GATEWAY, bad_gateway, b'{"message": "Internal server error"}'
        return self.response(invocation.payload)

    def event(
        self,
        route: ApiRoute,
        method: str,
        path: str,
        query: str,
        headers: dict[str, str],
        body: bytes,
        path_parameters: dict[str, str],
        source_ip: str,
    ) -> dict[str, Any]:
        multi_query = parse_qs(query, keep_blank_values=True)
        content_type = next((value for key, value in headers.items() if key.lower() == "content-type"), "")
        binary = self.is_binary(content_type)
        if not body:
            event_body: str | None = None
        elif binary:
            event_body = base64.b64encode(body).decode("ascii")
        else:
            event_body = body.decode("utf-8", errors="replace")
        now = time.time()
        request_id = str(uuid.uuid4())
        api_key = next((value for key, value in headers.items() if key.lower() == "x-api-key"), None)
        return {
            "resource": route.path,
            "path": path,
            "httpMethod": method,
            "headers": dict(headers),
            "multiValueHeaders": {key: [value] for key, value in headers.items()},
            "queryStringParameters": {key: values[-1] for key, values in multi_query.items()} or None,
            "multiValueQueryStringParameters": multi_query or None,
            "pathParameters": path_parameters or None,
            "stageVariables": None,
            "requestContext": {
                "resourceId": "local",
                "resourcePath": route.path,
                "httpMethod": method,
                "path": f"/{self.stage}{path}",
                "stage": self.stage,
                "requestId": request_id,
                "extendedRequestId": request_id,
                "requestTime": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now)),
                "requestTimeEpoch": int(now * 1000),
                "accountId": "123456789012",
                "apiId": "local",
                "domainName": "127.0.0.1",
                "protocol": "HTTP/1.1",
                # As API Gateway passes them to a proxy integration: the key and the id of the usage plan key it is.
                "identity": {
                    "sourceIp": source_ip,
                    "apiKey": api_key,
                    "apiKeyId": self.key_id(api_key),
                    "userAgent": headers.get("User-Agent"),
                },
            },
            "body": event_body,
            "isBase64Encoded": binary and bool(body),
        }

    @staticmethod
    def response(payload: Any) -> tuple[int, dict[str, str], bytes]:
        body_ok = isinstance(payload, dict) and isinstance(payload.get("body", ""), str | None)
        if not isinstance(payload, dict) or "statusCode" not in payload or not body_ok:
            log.error("malformed Lambda proxy response: %r", payload)
            return HTTPStatus.BAD_GATEWAY, {"Content-Type": "application/json"}, b'{"message": "Internal server error"}'
        headers = {str(key): str(value) for key, value in (payload.get("headers") or {}).items()}
        for key, values in (payload.get("multiValueHeaders") or {}).items():
            headers[str(key)] = ", ".join(str(value) for value in values)
        body = payload.get("body") or ""
        data = base64.b64decode(body) if payload.get("isBase64Encoded") else str(body).encode()
        return int(payload["statusCode"]), headers, data


class _GatewayApplication:
    """A ``Gateway`` as the HTTP server's ``Application``: route and API key from the head, the function with the
    body."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    def head(self, head: Head) -> Response | BodyHandler:
        routed = self.gateway.route_request(head.method, head.target, head.headers)
        if not isinstance(routed, Routed):
            return routed
        return lambda body: self.gateway.invoke(routed, head.method, head.headers, body, head.client)

    def refusal(self, status: int, code: str, message: str) -> Response:
        return self.gateway.error(status, code, message)

    def too_large(self) -> Response:
        return self.gateway.too_large()


class GatewayServer:
    """A ``Gateway`` served over HTTP/1.1 on ``host:port`` (0: a free port) by ``modelrun_local.http11``: h11's
    parsing, the Host rule, and ``limits`` (``Limits()`` when None: a 10 MB body, API Gateway's limit, 10 s for a
    head, 30 s of silence in a body, 60 s idle, 256 connections)."""

    def __init__(
        self, gateway: Gateway, host: str = "127.0.0.1", port: int = 3000, limits: Limits | None = None
    ) -> None:
        self.gateway = gateway
        limits = limits or Limits(max_body_bytes=MAX_REQUEST_BYTES)
        self.http = Http11Server(_GatewayApplication(gateway), host, port, limits, "local-gateway")

    @property
    def url(self) -> str:
        return self.http.url

    def start(self) -> GatewayServer:
        self.http.start()
        return self

    def stop(self) -> None:
        self.http.stop()
