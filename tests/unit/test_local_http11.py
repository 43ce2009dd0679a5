"""The local gateway's HTTP/1.1 (h11) over raw sockets: framing, limits, timeouts, the connection cap and the Host rule.

A ``GatewayServer`` on a free port, in front of a stub function that echoes what it received, with short limits so
that the timeouts are reached in a fraction of a second.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from modelrun_local import LOGGER
from modelrun_local.gateway import CompiledRoute, Gateway, GatewayServer
from modelrun_local.http11 import Limits
from modelrun_local.lambdas import Dispatcher, Invocation
from modelrun_local.template import ApiRoute
from tests.rawhttp import RawClient, RawResponse, chunked, head

API_KEY = "unit-test-key"
API_KEY_ID = "localkeyid"
ERROR_HEADERS = {"Access-Control-Allow-Origin": "*"}  # what the template's GatewayResponses add
LIMITS = Limits(
    max_body_bytes=64 * 1024,
    max_head_bytes=4 * 1024,
    header_timeout_s=0.5,
    body_timeout_s=0.5,
    idle_timeout_s=30.0,  # long: the connection cap tests hold connections open; the idle test sets its own
    max_connections=4,
    linger_s=0.2,
)
READ_TIMEOUT_S = 10.0


@dataclass
class Echo:
    """A stub function: records each event and answers with the body it got."""

    name: str = "local-echo"
    logical_id: str = "EchoFunction"
    events: list[dict[str, Any]] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=lambda: {"Content-Type": "application/json"})

    def invoke(self, event: dict[str, Any]) -> Invocation:
        self.events.append(event)
        body = base64.b64decode(event["body"]) if event["isBase64Encoded"] else (event["body"] or "").encode()
        answer = {"path": event["path"], "method": event["httpMethod"], "body": body.decode("latin-1")}
        return Invocation({"statusCode": 200, "headers": self.headers, "body": json.dumps(answer)})


@dataclass
class Served:
    server: GatewayServer
    echo: Echo

    @property
    def port(self) -> int:
        return self.server.http.port

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def connect(self) -> RawClient:
        return RawClient(self.port, timeout=READ_TIMEOUT_S)

    def head(self, method: str, path: str, *lines: str, host: str | None = None) -> bytes:
        """A request head with this server's Host and the API key, then ``lines``."""
        return head(method, path, host or self.host, f"x-api-key: {API_KEY}", *lines)

    def another(self) -> bytes:
        """A request to send on a connection to see whether the server still reads it."""
        return self.head("GET", "/v1/models")


@contextlib.contextmanager
def serve(limits: Limits = LIMITS) -> Iterator[Served]:
    """A gateway over the echo function on a free port, stopped on leaving."""
    echo = Echo()
    dispatcher = Dispatcher()
    dispatcher.register(echo)
    routes = [
        ApiRoute("EchoFunction", "POST", "/echo", "RestApi", api_key_required=True),
        ApiRoute("EchoFunction", "GET", "/models", "RestApi", api_key_required=True),
    ]
    gateway = Gateway(
        routes,
        dispatcher,
        stage="v1",
        key_ids={API_KEY: API_KEY_ID}.get,
        binary_media_types=["image/png"],
        function_names={"EchoFunction": echo.name},
        error_headers=ERROR_HEADERS,
    )
    server = GatewayServer(gateway, port=0, limits=limits).start()
    try:
        yield Served(server, echo)
    finally:
        server.stop()


@pytest.fixture
def served() -> Iterator[Served]:
    with serve() as server:
        yield server


def assert_refused(response: RawResponse, status: int, code: str) -> None:
    """The gateway's own refusal: the status, the API's error shape with the code, the GatewayResponses headers, and
    the connection announced closed."""
    assert response.status == status, response
    assert response.headers["content-type"] == "application/json"
    assert response.headers["access-control-allow-origin"] == "*"
    assert response.headers["connection"] == "close"
    assert response.error()["code"] == code
    assert response.error()["message"]


# --- framing -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "lines",
    [
        ["Content-Length: -1"],
        ["Content-Length: abc"],
        ["Content-Length: 1e3"],
        ["Content-Length: 2", "Content-Length: 3"],
        ["Content-Length: 2, 3"],
        ["Transfer-Encoding: gzip"],
        ["Transfer-Encoding: chunked", "Content-Length: 2"],
    ],
    ids=["negative", "letters", "exponent", "two-headers-differ", "list-differs", "gzip", "chunked-and-length"],
)
def test_a_body_whose_framing_is_invalid_or_ambiguous_is_400_bad_request_and_runs_nothing(
    served: Served, lines: list[str]
) -> None:
    # given a POST whose length cannot be known for sure
    client = served.connect()

    # when it is sent with a few bytes after its head
    response = client.send(served.head("POST", "/v1/echo", *lines) + b"ab\r\n\r\n").response()

    # then the gateway refuses it in the API's error shape, closes, and no function runs
    assert_refused(response, 400, "bad_request")
    assert not client.serves_another(served.another())
    assert served.echo.events == []


def test_a_content_length_repeated_with_the_same_value_is_served(served: Served) -> None:
    response = served.connect().send(served.head("POST", "/v1/echo", "Content-Length: 2", "Content-Length: 2") + b"ok")
    assert (response.response().status, served.echo.events[0]["body"]) == (200, "ok")


def test_a_chunked_body_reaches_the_function_decoded(served: Served) -> None:
    # given a body sent in three chunks
    request = served.head("POST", "/v1/echo", "Transfer-Encoding: chunked") + chunked(b"hello ", b"chunked ", b"world")

    # when it is posted
    response = served.connect().send(request).response()

    # then the function gets the bytes joined, without the chunk framing
    assert response.status == 200
    assert json.loads(response.body)["body"] == "hello chunked world"


def test_a_request_inside_a_chunked_body_is_never_run_as_a_second_request(served: Served) -> None:
    # given a chunked body that holds a whole GET /models request (what http.server ran as the next request)
    smuggled = served.head("GET", "/v1/models?smuggled")
    client = served.connect()

    # when it is posted, then another request is sent on the same connection
    first = client.send(served.head("POST", "/v1/echo", "Transfer-Encoding: chunked") + chunked(smuggled)).response()
    second = client.send(served.head("GET", "/v1/models?after")).response()

    # then the function got those bytes as the POST's body, and the next answer is the next request's: nothing ran
    # in between (requests on a connection are answered in order)
    assert json.loads(first.body)["body"].encode("latin-1") == smuggled
    assert second.status == 200
    runs = [(event["httpMethod"], event["queryStringParameters"]) for event in served.echo.events]
    assert runs == [("POST", None), ("GET", {"after": ""})]


def test_a_broken_chunk_is_400_bad_request(served: Served) -> None:
    request = served.head("POST", "/v1/echo", "Transfer-Encoding: chunked") + b"zz\r\nhello\r\n0\r\n\r\n"
    assert_refused(served.connect().send(request).response(), 400, "bad_request")
    assert served.echo.events == []


@pytest.mark.parametrize("request_line", ["NOT HTTP AT ALL", "GET /v1/models HTTP/9.9", "GET /v1/models"])
def test_bytes_that_are_not_an_http_1_request_are_400_bad_request(served: Served, request_line: str) -> None:
    request = f"{request_line}\r\nHost: {served.host}\r\nx-api-key: {API_KEY}\r\n\r\n".encode()
    assert_refused(served.connect().send(request).response(), 400, "bad_request")
    assert served.echo.events == []


# --- size limits ---------------------------------------------------------------------------------------------------


def test_a_declared_length_over_the_limit_is_413_before_the_body_is_sent(served: Served) -> None:
    # given a head declaring one byte more than the limit, and no body sent yet
    client = served.connect()
    client.send(served.head("POST", "/v1/echo", f"Content-Length: {LIMITS.max_body_bytes + 1}"))

    # when the answer is read, then it is API Gateway's 413 and the connection closes
    assert_refused(client.response(), 413, "request_too_large")
    assert not client.serves_another(served.another())
    assert served.echo.events == []


def test_a_chunked_body_going_past_the_limit_is_413_while_it_is_read(served: Served) -> None:
    # given a chunked body that goes past the limit in its third chunk, and never ends
    piece = b"x" * (LIMITS.max_body_bytes // 2)
    client = served.connect()

    # when its chunks are sent
    client.send(served.head("POST", "/v1/echo", "Transfer-Encoding: chunked"))
    client.send(b"".join(b"%x\r\n%s\r\n" % (len(piece), piece) for _ in range(3)))

    # then it is refused without waiting for its end, and the connection closes
    assert_refused(client.response(), 413, "request_too_large")
    assert not client.serves_another(served.another())
    assert served.echo.events == []


def test_a_body_at_the_limit_is_served(served: Served) -> None:
    body = b"y" * LIMITS.max_body_bytes
    response = served.connect().send(served.head("POST", "/v1/echo", f"Content-Length: {len(body)}") + body)
    assert response.response().status == 200
    assert len(served.echo.events[0]["body"]) == LIMITS.max_body_bytes


def test_a_wrong_api_key_is_403_before_the_body_is_sent(served: Served) -> None:
    # given a head with a wrong key that announces a large body (within the limit), none of it sent
    client = served.connect()
    head = f"POST /v1/echo HTTP/1.1\r\nHost: {served.host}\r\nx-api-key: wrong\r\nContent-Length: 60000\r\n\r\n"

    # when it is sent
    response = client.send(head.encode()).response()

    # then the key is refused at once, and the connection closes since the body was not read
    assert response.status == 403
    assert response.error()["code"] == "invalid_api_key"
    assert response.headers["connection"] == "close"
    assert not client.serves_another(served.another())


def test_an_unknown_route_is_404_before_the_body_is_sent(served: Served) -> None:
    client = served.connect().send(served.head("POST", "/v1/nothing", "Content-Length: 60000"))
    response = client.response()
    assert (response.status, response.error()["code"]) == (404, "route_not_found")


def test_a_head_over_the_limit_is_431_in_json(served: Served) -> None:
    # given a header line longer than the head limit
    request = served.head("GET", "/v1/models", "X-Padding: " + "a" * (LIMITS.max_head_bytes * 4))

    # when it is sent, then the answer is the API's JSON error, not an HTML page
    assert_refused(served.connect().send(request).response(), 431, "headers_too_large")


def test_a_head_over_the_limit_sent_in_pieces_is_431_in_json(served: Served) -> None:
    # given a head growing past the limit over many small writes
    request = served.head("GET", "/v1/models", "X-Padding: " + "a" * (LIMITS.max_head_bytes * 2))
    client = served.connect()

    # when its pieces are sent (the server may answer before the last ones)
    with contextlib.suppress(OSError):
        for start in range(0, len(request), 512):
            client.send(request[start : start + 512])

    # then it is refused with the JSON error as well
    assert_refused(client.response(), 431, "headers_too_large")


def test_an_expect_100_continue_body_is_asked_for_once_the_head_is_accepted(served: Served) -> None:
    # given a client that waits for 100 Continue before sending its body
    client = served.connect()
    client.send(served.head("POST", "/v1/echo", "Content-Length: 5", "Expect: 100-continue"))

    # when the head is accepted, then it is asked for the body, and the body is served
    assert client.response().status == 100
    assert client.send(b"hello").response().status == 200


# --- timeouts and connections --------------------------------------------------------------------------------------


def test_a_head_not_complete_in_time_is_408(served: Served) -> None:
    # given a client that sends half a head and stops
    client = served.connect().send(b"GET /v1/models HTTP/1.1\r\nHost: ")

    # when it waits, then the header timeout answers 408 and closes
    assert_refused(client.response(), 408, "request_timeout")
    assert not client.serves_another(served.another())


def test_a_body_that_stops_arriving_is_408(served: Served) -> None:
    client = served.connect().send(served.head("POST", "/v1/echo", "Content-Length: 10") + b"12345")
    assert_refused(client.response(), 408, "request_timeout")
    assert served.echo.events == []


def test_an_idle_connection_is_closed_without_an_answer() -> None:
    # given a server with a short idle timeout, and a connection that sends nothing
    with serve(dataclasses.replace(LIMITS, idle_timeout_s=0.3)) as served:
        client = served.connect()

        # when the idle timeout passes, then the server closes it and has sent nothing
        assert client.wait_closed()
        assert client.buffer == b""


def test_a_keep_alive_connection_serves_several_requests(served: Served) -> None:
    # given one connection
    client = served.connect()

    # when two requests are sent on it, one after the other
    first = client.send(served.head("GET", "/v1/models")).response()
    second = client.send(served.head("POST", "/v1/echo", "Content-Length: 2") + b"hi").response()

    # then both are answered, and the connection stays open
    assert (first.status, second.status, json.loads(second.body)["body"]) == (200, 200, "hi")
    assert "connection" not in second.headers
    assert client.serves_another(served.another())


def test_pipelined_requests_are_answered_in_order(served: Served) -> None:
    client = served.connect().send(
        served.head("POST", "/v1/echo", "Content-Length: 1") + b"a" + served.head("GET", "/")
    )
    assert (client.response().status, client.response().status) == (200, 404)


def test_a_head_request_gets_the_headers_without_the_body(served: Served) -> None:
    # given HEAD on a route that has no HEAD method (404 with a body for GET)
    client = served.connect()
    response = client.send(served.head("HEAD", "/v1/models")).response(head_only=True)

    # then the length of the body is announced, and the next request on the connection is read correctly
    assert int(response.headers["content-length"]) > 0
    assert client.send(served.head("GET", "/v1/models")).response().status == 200


@pytest.mark.parametrize("method", ["TRACE", "QUERY", "PROPFIND", "CONNECT"])
def test_any_other_method_is_a_route_the_api_does_not_have(served: Served, method: str) -> None:
    response = served.connect().send(served.head(method, "/v1/echo")).response()
    assert (response.status, response.error()["code"]) == (404, "route_not_found")


def test_past_the_connection_cap_a_client_gets_503_and_the_others_are_still_served(served: Served) -> None:
    # given as many open connections as the cap, each having been served once
    held = [served.connect() for _ in range(LIMITS.max_connections)]
    for client in held:
        assert client.send(served.head("GET", "/v1/models")).response().status == 200

    # when one more client connects
    extra = served.connect().send(served.head("GET", "/v1/models"))

    # then it is turned away with 503, and the held connections still work
    assert_refused(extra.response(), 503, "too_many_connections")
    assert held[0].send(served.head("GET", "/v1/models")).response().status == 200


def test_a_freed_connection_slot_serves_a_new_client(served: Served) -> None:
    # given the cap reached, then one connection closed by its client
    held = [served.connect() for _ in range(LIMITS.max_connections)]
    for client in held:
        client.send(served.head("GET", "/v1/models")).response()
    held.pop().close()

    # when a new client connects (the server notices the close asynchronously: retry until a deadline)
    deadline = time.monotonic() + READ_TIMEOUT_S
    while True:
        status = served.connect().send(served.head("GET", "/v1/models")).response().status
        if status == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.05)

    # then it is served
    assert status == 200


# --- Host ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["evil.example:{port}", "evil.example", "127.0.0.1", "localhost:1"])
def test_a_host_that_is_not_this_server_is_421_invalid_host(served: Served, host: str) -> None:
    # given a Host that a rebound DNS name, another port or no port gives
    request = served.head("GET", "/v1/models", host=host.format(port=served.port))

    # when it is sent, then it is refused before any function runs
    assert_refused(served.connect().send(request).response(), 421, "invalid_host")
    assert served.echo.events == []


@pytest.mark.parametrize("name", ["localhost", "127.0.0.1"])
def test_a_loopback_name_with_the_port_is_served(served: Served, name: str) -> None:
    response = served.connect().send(served.head("GET", "/v1/models", host=f"{name}:{served.port}")).response()
    assert response.status == 200


def test_a_request_without_host_is_400(served: Served) -> None:
    response = served.connect().send(b"GET /v1/models HTTP/1.0\r\nx-api-key: " + API_KEY.encode() + b"\r\n\r\n")
    assert_refused(response.response(), 400, "bad_request")


def test_two_host_headers_are_400(served: Served) -> None:
    request = served.head("GET", "/v1/models", f"Host: {served.host}")
    assert_refused(served.connect().send(request).response(), 400, "bad_request")


# --- what goes back ------------------------------------------------------------------------------------------------


def test_a_function_header_that_cannot_be_sent_is_500_not_a_dropped_connection(served: Served) -> None:
    # given a function answering a header value with a line break in it
    served.echo.headers = {"X-Broken": "a\r\nInjected: yes"}

    # when it is called
    response = served.connect().send(served.head("GET", "/v1/models")).response()

    # then the client gets an error, and no injected header
    assert response.status == 500
    assert "injected" not in response.headers


def test_a_success_answer_to_connect_is_500_and_never_opens_a_tunnel() -> None:
    # given a route that serves any method, CONNECT included, and answers 200
    with serve() as served:
        served.server.gateway.routes[0] = CompiledRoute.compile(
            ApiRoute("EchoFunction", "ANY", "/echo", "RestApi", api_key_required=True)
        )
        client = served.connect()

        # when CONNECT is sent to it
        response = client.send(served.head("CONNECT", "/v1/echo")).response()

    # then the client gets an error rather than a connection switched to a tunnel
    assert response.status == 500


def test_a_function_framing_header_is_replaced_by_the_server_own(served: Served) -> None:
    served.echo.headers = {"Content-Length": "999", "Transfer-Encoding": "chunked", "Content-Type": "application/json"}
    response = served.connect().send(served.head("GET", "/v1/models")).response()
    assert (response.status, int(response.headers["content-length"])) == (200, len(response.body))
    assert "transfer-encoding" not in response.headers


def test_each_request_gets_an_access_log_line(served: Served, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger=LOGGER):
        served.connect().send(served.head("GET", "/v1/models?x=1")).response()
    assert any('"GET /v1/models?x=1" 200' in record.getMessage() for record in caplog.records)
