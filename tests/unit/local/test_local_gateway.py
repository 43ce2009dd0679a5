"""The local API Gateway: routes, API key, size limits, the proxy event it builds, and the proxy result it turns
back into HTTP. Routes, binary media types and the stage come from template.yaml; functions are fakes that record
their events, except where a real in-process function is the point."""

from __future__ import annotations

import base64
import json
import textwrap
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from modelrun_local.gateway import MAX_EVENT_BYTES, MAX_REQUEST_BYTES, Gateway, GatewayServer
from modelrun_local.lambdas import Dispatcher, Invocation, LocalFunction, error_payload
from modelrun_local.template import ApiRoute, Template

TEMPLATE = Path(__file__).resolve().parents[3] / "template.yaml"
API = "RestApi"
API_KEY = "unit-test-key"
API_KEY_ID = "localkeyid"
KEYED = {"x-api-key": API_KEY}
JSON_HEADERS = {"Content-Type": "application/json"}
OK = {"statusCode": 200, "headers": {"Content-Type": "application/json"}, "body": '{"ok": true}'}
SOURCE_IP = "203.0.113.7"


class FakeFunction:
    """Stands in for a LocalFunction: records each event and answers with a fixed invocation."""

    def __init__(self, name: str, answer: Invocation) -> None:
        self.name = name
        self.answer = answer
        self.events: list[dict[str, Any]] = []

    def invoke(self, event: dict[str, Any]) -> Invocation:
        self.events.append(event)
        return self.answer


class Stage:
    """A gateway over the template's REST API, with one fake function per routed function."""

    def __init__(self, answer: Invocation | None = None) -> None:
        template = Template.load(TEMPLATE)
        self.stage = str(template.parameters["StageName"])
        routes = [route for route in template.api_routes() if route.api == API]
        dispatcher = Dispatcher()
        self.functions: dict[str, FakeFunction] = {}
        for logical_id in {route.function for route in routes}:
            self.functions[logical_id] = FakeFunction(f"local-{logical_id}", answer or Invocation(OK))
            dispatcher.register(self.functions[logical_id])  # type: ignore[arg-type]
        self.gateway = Gateway(
            routes,
            dispatcher,
            stage=self.stage,
            key_ids={API_KEY: API_KEY_ID}.get,
            binary_media_types=template.binary_media_types(API),
            function_names={logical_id: function.name for logical_id, function in self.functions.items()},
        )

    def request(
        self, method: str, path: str, headers: dict[str, str] | None = None, body: bytes = b""
    ) -> tuple[int, dict[str, str], bytes]:
        return self.gateway.handle(method, path, {**KEYED, **(headers or {})}, body, SOURCE_IP)

    @property
    def events(self) -> list[dict[str, Any]]:
        """Every event any function received, in order."""
        return [event for function in self.functions.values() for event in function.events]

    def only_event(self) -> dict[str, Any]:
        (event,) = self.events
        return event


def error_of(body: bytes) -> dict[str, str]:
    error: dict[str, str] = json.loads(body)["error"]
    return error


@pytest.fixture
def stage() -> Stage:
    return Stage()


# --- routing ---------------------------------------------------------------------------------------------------


def test_a_stage_prefixed_path_reaches_the_function_without_the_stage(stage: Stage) -> None:
    # given the deployed URL form /v1/predictions
    # when it is requested
    status, _, body = stage.request("POST", "/v1/predictions", JSON_HEADERS, b"{}")

    # then the prediction function gets the path without the stage, and the stage in the request context
    assert (status, body) == (200, b'{"ok": true}')
    event = stage.functions["PredictFunction"].events[0]
    assert (event["path"], event["resource"], event["httpMethod"]) == ("/predictions", "/predictions", "POST")
    assert (event["requestContext"]["stage"], event["requestContext"]["path"]) == ("v1", "/v1/predictions")


def test_a_path_without_the_stage_prefix_is_served_too(stage: Stage) -> None:
    # given the short form /models
    # when it is requested
    status, _, _ = stage.request("GET", "/models")

    # then the same route serves it
    assert status == 200
    assert stage.functions["PredictFunction"].events[0]["resource"] == "/models"


def test_a_trailing_slash_still_matches_the_route(stage: Stage) -> None:
    status, _, _ = stage.request("GET", "/v1/models/")
    assert (status, stage.only_event()["resource"]) == (200, "/models")


def test_a_path_parameter_is_passed_by_name(stage: Stage) -> None:
    # given a request for /models/{name}
    # when it is requested
    stage.request("GET", "/v1/models/digits")

    # then the function sees the template's resource and the parameter's value
    event = stage.only_event()
    assert (event["resource"], event["pathParameters"]) == ("/models/{name}", {"name": "digits"})


def test_a_percent_encoded_path_parameter_is_decoded(stage: Stage) -> None:
    stage.request("GET", "/v1/models/my%20model")
    assert stage.only_event()["pathParameters"] == {"name": "my model"}


def test_a_route_without_path_parameters_gets_none(stage: Stage) -> None:
    stage.request("GET", "/v1/models")
    assert stage.only_event()["pathParameters"] is None


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/v1/nothing"), ("DELETE", "/v1/predictions"), ("GET", "/v2/models"), ("GET", "/v1/models/a/b")],
    ids=["unknown-path", "wrong-method", "other-stage", "extra-segment"],
)
def test_a_request_no_route_matches_is_404_route_not_found(stage: Stage, method: str, path: str) -> None:
    # given a method and path the template does not route
    # when it is requested
    status, headers, body = stage.request(method, path)

    # then the gateway answers 404 in the project's error shape, and no function runs
    assert (status, headers["Content-Type"]) == (404, "application/json")
    assert error_of(body)["code"] == "route_not_found"
    assert stage.events == []


# --- API key ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("headers", [{}, {"x-api-key": "wrong"}], ids=["missing", "wrong"])
def test_a_keyed_route_without_the_right_api_key_is_403(stage: Stage, headers: dict[str, str]) -> None:
    # given no key or a wrong one
    # when a keyed route is requested
    status, _, body = stage.gateway.handle("GET", "/v1/models", headers, b"", SOURCE_IP)

    # then it is refused before any function runs
    assert status == 403
    assert error_of(body) == {"code": "invalid_api_key", "message": "send a valid API key in the x-api-key header"}
    assert stage.events == []


def test_the_api_key_header_name_is_case_insensitive(stage: Stage) -> None:
    # given the header as X-Api-Key
    # when a keyed route is requested
    status, _, _ = stage.gateway.handle("GET", "/v1/models", {"X-Api-Key": API_KEY}, b"", SOURCE_IP)

    # then it is accepted, and the key is in the request context identity
    assert status == 200
    assert stage.only_event()["requestContext"]["identity"]["apiKey"] == API_KEY


def test_a_route_whose_api_needs_no_key_is_served_without_one() -> None:
    # given a route on an API without the API key rule
    function = FakeFunction("health", Invocation(OK))
    dispatcher = Dispatcher()
    dispatcher.register(function)  # type: ignore[arg-type]
    route = ApiRoute("HealthFunction", "GET", "/health", "OpenApi", api_key_required=False)
    gateway = Gateway(
        [route],
        dispatcher,
        stage="v1",
        key_ids={API_KEY: API_KEY_ID}.get,
        binary_media_types=[],
        function_names={"HealthFunction": "health"},
    )

    # when it is requested without a key
    status, _, _ = gateway.handle("GET", "/v1/health", {}, b"", SOURCE_IP)

    # then it is served
    assert (status, len(function.events)) == (200, 1)


# --- size limits -----------------------------------------------------------------------------------------------


def test_a_body_over_10_mb_is_413_before_any_function_runs(stage: Stage) -> None:
    # given one byte over API Gateway's payload limit
    body = b"\0" * (MAX_REQUEST_BYTES + 1)

    # when it is posted
    status, _, answer = stage.request("POST", "/v1/predictions", {"Content-Type": "image/png"}, body)

    # then API Gateway's limit refuses it, pointing at the S3 form
    assert status == 413
    error = error_of(answer)
    assert error["code"] == "request_too_large"
    assert "10 MB" in error["message"]
    assert "image_s3" in error["message"]
    assert stage.events == []


def test_a_body_under_10_mb_whose_event_exceeds_6_mb_is_413_naming_the_lambda_limit(stage: Stage) -> None:
    # given a binary body that fits API Gateway but not, once base64-encoded, Lambda's event limit
    body = b"\0" * (MAX_EVENT_BYTES * 3 // 4 + 1024)
    assert len(body) <= MAX_REQUEST_BYTES

    # when it is posted
    status, _, answer = stage.request("POST", "/v1/predictions", {"Content-Type": "image/png"}, body)

    # then it is refused with the reason, and no function runs
    assert status == 413
    assert "6 MB event limit" in error_of(answer)["message"]
    assert stage.events == []


# --- the proxy event -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("content_type", ["image/png", "image/jpeg; charset=binary", "application/octet-stream"])
def test_a_binary_media_type_body_arrives_base64_encoded(stage: Stage, content_type: str) -> None:
    # given raw bytes (not valid UTF-8) with one of the template's binary media types
    data = b"\x89PNG\r\n\x1a\n\xff\xfe\x00"

    # when they are posted
    stage.request("POST", "/v1/predictions", {"Content-Type": content_type}, data)

    # then the function gets them base64-encoded and flagged so
    event = stage.only_event()
    assert event["isBase64Encoded"] is True
    assert base64.b64decode(event["body"]) == data


def test_a_json_body_arrives_as_text(stage: Stage) -> None:
    # given a JSON document
    document = '{"model": "digits", "image_s3": {"bucket": "b", "key": "k"}}'

    # when it is posted
    stage.request("POST", "/v1/predictions", JSON_HEADERS, document.encode())

    # then the function gets the text unchanged
    event = stage.only_event()
    assert (event["body"], event["isBase64Encoded"]) == (document, False)


def test_an_empty_body_arrives_as_none(stage: Stage) -> None:
    stage.request("POST", "/v1/predictions", {"Content-Type": "image/png"}, b"")
    event = stage.only_event()
    assert (event["body"], event["isBase64Encoded"]) == (None, False)


def test_query_parameters_arrive_single_and_multi_valued(stage: Stage) -> None:
    # given a repeated parameter, an encoded value and a blank one
    # when requested
    stage.request("GET", "/v1/models?tag=a&tag=b&name=my%20model&empty=")

    # then the single-value map keeps the last value, the multi-value map all of them, blanks included
    event = stage.only_event()
    assert event["queryStringParameters"] == {"tag": "b", "name": "my model", "empty": ""}
    assert event["multiValueQueryStringParameters"] == {"tag": ["a", "b"], "name": ["my model"], "empty": [""]}


def test_no_query_string_gives_none_for_both_query_maps(stage: Stage) -> None:
    stage.request("GET", "/v1/models")
    event = stage.only_event()
    assert (event["queryStringParameters"], event["multiValueQueryStringParameters"]) == (None, None)


def test_the_event_carries_the_request_headers_and_what_the_gateway_adds(stage: Stage) -> None:
    # given a request with a user agent
    # when it is served
    stage.request("GET", "/v1/models", {"User-Agent": "curl/8.5.0"})

    # then the headers (single and multi-value) include the client's and the forwarding ones, and the identity
    event = stage.only_event()
    assert event["headers"]["User-Agent"] == "curl/8.5.0"
    assert event["headers"]["X-Forwarded-For"] == SOURCE_IP
    assert event["multiValueHeaders"]["User-Agent"] == ["curl/8.5.0"]
    assert event["requestContext"]["identity"]["sourceIp"] == SOURCE_IP
    assert event["requestContext"]["identity"]["userAgent"] == "curl/8.5.0"


def test_each_request_gets_its_own_request_id(stage: Stage) -> None:
    stage.request("GET", "/v1/models")
    stage.request("GET", "/v1/models")
    first, second = (event["requestContext"]["requestId"] for event in stage.events)
    assert first != second


# --- the proxy result ------------------------------------------------------------------------------------------


def test_the_proxy_result_status_headers_and_body_become_the_http_response() -> None:
    # given a function answering 201 with a header and a JSON body
    answer = {"statusCode": 201, "headers": {"Location": "/v1/batches/b-1"}, "body": '{"batch_id": "b-1"}'}
    stage = Stage(Invocation(answer))

    # when it is called
    status, headers, body = stage.request("POST", "/v1/batches", JSON_HEADERS, b"{}")

    # then the HTTP response is that
    assert (status, headers, body) == (201, {"Location": "/v1/batches/b-1"}, b'{"batch_id": "b-1"}')


def test_multi_value_response_headers_are_joined(stage: Stage) -> None:
    # given the REST resolver's multiValueHeaders form
    answer = {"statusCode": 200, "multiValueHeaders": {"Content-Type": ["application/json"], "Vary": ["a", "b"]}}

    # when the proxy result is turned into a response
    status, headers, body = Gateway.response(answer)

    # then each header has its values joined, and a missing body is empty
    assert (status, headers, body) == (200, {"Content-Type": "application/json", "Vary": "a, b"}, b"")


def test_a_base64_encoded_proxy_body_is_sent_as_its_bytes() -> None:
    # given a binary body returned base64-encoded
    data = b"\x89PNG\r\n\x1a\n\x00\xff"
    answer = {"statusCode": 200, "headers": {"Content-Type": "image/png"}, "body": base64.b64encode(data).decode()}

    # when it is turned into a response, then the client receives the raw bytes
    assert Gateway.response({**answer, "isBase64Encoded": True})[2] == data


@pytest.mark.parametrize(
    "payload", [None, "ok", [200], {"body": "no status"}], ids=["none", "string", "list", "no-status-code"]
)
def test_a_malformed_proxy_result_is_502(payload: Any) -> None:
    # given a function that returns something that is not a proxy result
    stage = Stage(Invocation(payload))

    # when it is called
    status, _, body = stage.request("GET", "/v1/models")

    # then API Gateway's 502 comes back
    assert (status, json.loads(body)) == (502, {"message": "Internal server error"})


def test_a_function_error_is_502_internal_server_error() -> None:
    # given a function that raised
    stage = Stage(Invocation(error_payload("KeyError", "'model'"), "KeyError"))

    # when it is called
    status, _, body = stage.request("GET", "/v1/models")

    # then the client sees API Gateway's 502 body, not the error details
    assert (status, json.loads(body)) == (502, {"message": "Internal server error"})


def test_a_function_timeout_is_504() -> None:
    # given a function whose invocation timed out
    stage = Stage(
        Invocation(error_payload("Sandbox.Timedout", "Task timed out after 29.00 seconds"), "Sandbox.Timedout")
    )

    # when it is called
    status, _, body = stage.request("GET", "/v1/models")

    # then API Gateway's integration timeout answer comes back
    assert (status, json.loads(body)) == (504, {"message": "Endpoint request timed out"})


def test_a_proxy_result_whose_body_is_not_a_string_is_502() -> None:
    # given a handler that forgot to serialise its body
    stage = Stage(Invocation({"statusCode": 200, "body": {"label": "7"}}))

    # when it is called
    status, _, body = stage.request("GET", "/v1/models")

    # then API Gateway's malformed-proxy-result answer comes back
    assert (status, body) == (502, b'{"message": "Internal server error"}')


def test_an_answer_that_comes_after_the_integration_timeout_is_504() -> None:
    # given a function that answered successfully, but after 30 s
    stage = Stage(Invocation(OK, None, duration_ms=30_000.0))

    # when it is called
    status, _, body = stage.request("GET", "/v1/models")

    # then the client got API Gateway's timeout, as on AWS
    assert (status, json.loads(body)) == (504, {"message": "Endpoint request timed out"})


# --- with a real in-process function and over HTTP -------------------------------------------------------------

ECHO_HANDLER = """
import base64
import json


def handler(event, context):
    body = base64.b64decode(event["body"]) if event["isBase64Encoded"] else (event["body"] or "").encode()
    summary = {"name": event["pathParameters"]["name"], "body_bytes": len(body), "function": context.function_name}
    return {"statusCode": 200, "headers": {"Content-Type": "application/json"}, "body": json.dumps(summary)}
"""


def echo_gateway(tmp_path: Path) -> Gateway:
    (tmp_path / "app.py").write_text(textwrap.dedent(ECHO_HANDLER), encoding="utf-8")
    function = LocalFunction(
        logical_id="EchoFunction",
        name="local-echo",
        arn="arn:aws:lambda:us-east-1:123456789012:function:local-echo",
        code_dir=tmp_path,
        handler="app.handler",
        environment={},
        timeout=10.0,
        memory_mb=128,
    )
    dispatcher = Dispatcher()
    dispatcher.register(function)
    route = ApiRoute("EchoFunction", "POST", "/echo/{name}", API, api_key_required=True)
    return Gateway(
        [route],
        dispatcher,
        stage="v1",
        key_ids={API_KEY: API_KEY_ID}.get,
        binary_media_types=["image/png"],
        function_names={"EchoFunction": "local-echo"},
    )


def test_a_real_function_behind_the_gateway_answers_the_request(tmp_path: Path) -> None:
    # given an in-process function behind a route
    gateway = echo_gateway(tmp_path)

    # when a binary body is posted to it
    status, _, body = gateway.handle(
        "POST", "/v1/echo/abc", {**KEYED, "Content-Type": "image/png"}, b"\xff" * 10, SOURCE_IP
    )

    # then the handler's answer, computed from the event, comes back
    assert (status, json.loads(body)) == (200, {"name": "abc", "body_bytes": 10, "function": "local-echo"})


@pytest.fixture
def server_url(tmp_path: Path) -> Iterator[str]:
    """The echo gateway served over HTTP on a free local port."""
    server = GatewayServer(echo_gateway(tmp_path), port=0).start()
    try:
        yield server.url
    finally:
        server.stop()


def test_the_gateway_server_answers_an_http_request_with_the_function_response(server_url: str) -> None:
    # given a keyed binary POST over HTTP
    request = urllib.request.Request(
        f"{server_url}/v1/echo/xyz", data=b"12345", headers={**KEYED, "Content-Type": "image/png"}, method="POST"
    )

    # when it is sent
    with urllib.request.urlopen(request, timeout=10) as response:
        answer = (response.status, response.headers["Content-Type"], json.loads(response.read()))

    # then the function's status, header and body come back over the wire
    assert answer == (200, "application/json", {"name": "xyz", "body_bytes": 5, "function": "local-echo"})


def test_the_gateway_server_sends_a_gateway_refusal_as_its_http_status(server_url: str) -> None:
    # given a POST over HTTP without the API key
    request = urllib.request.Request(f"{server_url}/v1/echo/xyz", data=b"", method="POST")

    # when it is sent
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)

    # then the client gets the 403 and its error body
    assert refused.value.code == 403
    assert error_of(refused.value.read())["code"] == "invalid_api_key"


@pytest.mark.parametrize("method", ["TRACE", "QUERY", "PROPFIND"])
def test_the_gateway_server_answers_any_other_method_as_a_route_it_does_not_have(server_url: str, method: str) -> None:
    # given a method no route of the template has, which http.server alone would answer 501
    request = urllib.request.Request(f"{server_url}/v1/echo/xyz", headers=KEYED, method=method)

    # when it is sent
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)

    # then it is API Gateway's answer in the project's shape: 404 route_not_found
    assert refused.value.code == 404
    assert error_of(refused.value.read())["code"] == "route_not_found"
