"""The running local stack against malformed and hostile HTTP, over raw sockets: framing, smuggling, slow and idle
clients, oversized heads and bodies, foreign Host headers (DNS rebinding), and the memory all of that costs.

The stack's gateway runs with its default limits; where a test must wait for a timeout, it serves the same gateway
on a second port with a short one.
"""

from __future__ import annotations

import contextlib
import gc
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
import websocket

from modelrun_local.gateway import GatewayServer
from modelrun_local.http11 import Limits
from modelrun_local.runtime import LocalRuntime
from tests.integration.conftest import API_KEY, sample
from tests.rawhttp import RawClient, RawResponse, chunked, head

MB = 1024 * 1024
PIECE = b"\0" * (64 * 1024)  # what a streaming client sends again and again, so that the test itself stays small
SLOW_HEAD_TIMEOUT_S = 2.0


def port_of(stack: LocalRuntime) -> int:
    assert stack.server is not None
    return stack.server.http.port


def request(stack: LocalRuntime, method: str, path: str, *lines: str, key: str = API_KEY) -> bytes:
    return head(method, path, f"127.0.0.1:{port_of(stack)}", f"x-api-key: {key}", *lines)


def connect(stack: LocalRuntime) -> RawClient:
    return RawClient(port_of(stack))


def predict_png(stack: LocalRuntime, client: RawClient, label: int) -> RawResponse:
    """POST /predictions of a sample image on ``client``'s connection."""
    image = sample(label).read_bytes()
    lines = ("Content-Type: image/png", f"Content-Length: {len(image)}")
    return client.send(request(stack, "POST", "/v1/predictions?model=digits", *lines) + image).response()


def stream(client: RawClient, total: int) -> None:
    """Send up to ``total`` bytes of body, stopping quietly when the server closes the connection."""
    with contextlib.suppress(OSError):
        for _ in range(total // len(PIECE)):
            client.send(PIECE)


def vm_rss() -> int:
    """This process's resident memory in bytes (the stack runs in the test process)."""
    for line in open("/proc/self/status", encoding="ascii"):  # noqa: SIM115 - a /proc file, read once
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


@pytest.fixture(scope="module")
def warm(stack: LocalRuntime) -> LocalRuntime:
    """The stack after one prediction: the function's sandbox and the model are loaded, so what follows measures
    the requests, not a first start."""
    assert predict_png(stack, connect(stack), 7).status == 200
    return stack


def assert_refused(response: RawResponse, status: int, code: str) -> None:
    assert (response.status, response.headers["content-type"]) == (status, "application/json"), response
    assert response.error()["code"] == code
    assert response.error()["message"]


# --- framing -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "lengths", [["-1"], ["abc"], ["1e3"], ["4", "5"]], ids=["negative", "letters", "exponent", "conflicting"]
)
def test_a_content_length_that_is_not_one_number_is_400_bad_request(warm: LocalRuntime, lengths: list[str]) -> None:
    # given a prediction whose body length cannot be known for sure
    lines = ["Content-Type: image/png", *(f"Content-Length: {length}" for length in lengths)]

    # when it is sent with some bytes after the head
    response = connect(warm).send(request(warm, "POST", "/v1/predictions", *lines) + b"\x89PNG").response()

    # then the gateway refuses it in the API's error shape, with the GatewayResponses' CORS header
    assert_refused(response, 400, "bad_request")
    assert response.headers["connection"] == "close"
    assert "access-control-allow-origin" in response.headers


def test_a_content_length_repeated_with_the_same_value_is_served(warm: LocalRuntime) -> None:
    image = sample(4).read_bytes()
    lines = ("Content-Type: image/png", f"Content-Length: {len(image)}", f"Content-Length: {len(image)}")
    response = connect(warm).send(request(warm, "POST", "/v1/predictions", *lines) + image).response()
    assert (response.status, json.loads(response.body)["label"]) == (200, "4")


def test_a_chunked_image_is_decoded_and_predicted(warm: LocalRuntime) -> None:
    # given a sample image sent in three chunks
    image = sample(2).read_bytes()
    third = len(image) // 3
    body = chunked(image[:third], image[third : 2 * third], image[2 * third :])
    lines = ("Content-Type: image/png", "Transfer-Encoding: chunked")

    # when it is posted
    response = connect(warm).send(request(warm, "POST", "/v1/predictions?model=digits", *lines) + body).response()

    # then the function got the image whole and predicted it
    assert response.status == 200, response
    assert json.loads(response.body)["label"] == "2"


def test_a_request_inside_a_chunked_body_is_never_run(warm: LocalRuntime) -> None:
    # given a chunked JSON body that holds a whole GET /models request
    smuggled = request(warm, "GET", "/v1/models")
    client = connect(warm)
    lines = ("Content-Type: application/json", "Transfer-Encoding: chunked")

    # when it is posted, and GET /models/digits follows on the same connection
    first = client.send(request(warm, "POST", "/v1/predictions", *lines) + chunked(smuggled)).response()
    second = client.send(request(warm, "GET", "/v1/models/digits")).response()

    # then the body was the prediction's (not JSON: 400), and the next answer is the model's, not the catalogue's
    assert (first.status, first.error()["code"]) == (400, "invalid_json")
    assert second.status == 200
    assert json.loads(second.body)["latest"] == "1"
    assert "models" not in json.loads(second.body)


# --- sizes ---------------------------------------------------------------------------------------------------------


def test_a_70_kb_header_line_is_431_in_json(warm: LocalRuntime) -> None:
    response = connect(warm).send(request(warm, "GET", "/v1/models", "X-Padding: " + "a" * 70_000)).response()
    assert_refused(response, 431, "headers_too_large")


def test_a_20_mb_body_with_a_wrong_key_is_403_before_the_body_is_sent(warm: LocalRuntime) -> None:
    # given the head of a 20 MB upload with a wrong key, none of the body sent
    client = connect(warm)
    lines = ("Content-Type: image/png", f"Content-Length: {20 * MB}")

    # when the head is sent
    response = client.send(request(warm, "POST", "/v1/predictions", *lines, key="wrong")).response()

    # then the key is refused at once, and the connection will close
    assert (response.status, response.error()["code"]) == (403, "invalid_api_key")
    assert response.headers["connection"] == "close"


def test_a_declared_body_over_10_mb_is_413_before_it_is_sent(warm: LocalRuntime) -> None:
    lines = ("Content-Type: image/png", f"Content-Length: {10 * MB + 1}")
    response = connect(warm).send(request(warm, "POST", "/v1/predictions", *lines)).response()
    assert_refused(response, 413, "request_too_large")


# --- slow and idle clients -----------------------------------------------------------------------------------------


@pytest.fixture
def short_header_timeout(warm: LocalRuntime) -> Iterator[GatewayServer]:
    """The stack's gateway served again on a free port, with a short header timeout."""
    assert warm.server is not None
    server = GatewayServer(warm.server.gateway, port=0, limits=Limits(header_timeout_s=SLOW_HEAD_TIMEOUT_S)).start()
    try:
        yield server
    finally:
        server.stop()


def test_a_slow_head_gets_408_after_the_timeout_while_another_client_is_served(
    warm: LocalRuntime, short_header_timeout: GatewayServer
) -> None:
    # given a client that sends the first line of a head and nothing more
    port = short_header_timeout.http.port
    slow = RawClient(port).send(f"POST /v1/predictions HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n".encode())
    started = time.monotonic()

    # when another client asks for a prediction meanwhile
    other = RawClient(port)
    image = sample(1).read_bytes()
    lines = (f"x-api-key: {API_KEY}", "Content-Type: image/png", f"Content-Length: {len(image)}")
    served = other.send(head("POST", "/v1/predictions", f"127.0.0.1:{port}", *lines) + image).response()

    # then that one is answered while the slow one waits, and the slow one gets 408 once its time is up
    assert (served.status, json.loads(served.body)["label"]) == (200, "1")
    assert not slow.answered_yet()
    assert_refused(slow.response(), 408, "request_timeout")
    assert time.monotonic() - started >= SLOW_HEAD_TIMEOUT_S
    assert slow.wait_closed()


def test_200_idle_connections_do_not_stop_a_prediction(warm: LocalRuntime) -> None:
    # given 200 connections that send nothing, all accepted and held by the gateway
    assert warm.server is not None
    idle = [connect(warm) for _ in range(200)]
    try:
        deadline = time.monotonic() + 30
        while warm.server.http.connections < 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert warm.server.http.connections >= 200

        # when a client asks for a prediction
        response = predict_png(warm, connect(warm), 8)

        # then it is answered
        assert (response.status, json.loads(response.body)["label"]) == (200, "8")
    finally:
        for client in idle:
            client.close()


# --- Host (DNS rebinding) ------------------------------------------------------------------------------------------


def test_the_api_refuses_a_foreign_host_with_421(warm: LocalRuntime) -> None:
    foreign = head("GET", "/v1/models", f"evil.example:{port_of(warm)}", f"x-api-key: {API_KEY}")
    assert_refused(connect(warm).send(foreign).response(), 421, "invalid_host")


def test_the_page_config_with_the_api_key_is_refused_to_a_foreign_host(warm: LocalRuntime) -> None:
    # given the page's config.json, which holds the API key, asked for under a rebound name
    foreign = connect(warm).send(head("GET", "/ui/config.json", f"evil.example:{port_of(warm)}")).response()

    # then it is refused without the key, while the loopback name still gets it
    assert_refused(foreign, 421, "invalid_host")
    assert API_KEY.encode() not in foreign.body
    own = connect(warm).send(head("GET", "/ui/config.json", f"localhost:{port_of(warm)}")).response()
    assert (own.status, json.loads(own.body)["apiKey"]) == (200, API_KEY)


def test_the_websocket_api_refuses_a_foreign_host(warm: LocalRuntime) -> None:
    assert warm.websocket is not None
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        websocket.create_connection(
            f"{warm.websocket.url}?api_key={API_KEY}", host=f"evil.example:{warm.websocket.port}", timeout=30
        )
    assert refused.value.status_code == 421
    assert json.loads(refused.value.resp_body)["error"]["code"] == "invalid_host"


# --- memory --------------------------------------------------------------------------------------------------------


def test_hostile_requests_grow_the_process_by_less_than_20_mb(warm: LocalRuntime) -> None:
    # given the warmed-up stack's resident memory
    gc.collect()
    before = vm_rss()
    answers: list[Any] = []

    # when a -1 length streams 64 MB, a wrong key sends a whole 20 MB body, a chunked body goes past 10 MB,
    # a 70 KB header line is sent and 200 connections stay idle
    for lines, total in [
        (("Content-Length: -1",), 64 * MB),
        ((f"Content-Length: {20 * MB}",), 20 * MB),
        (("Transfer-Encoding: chunked",), 11 * MB),
    ]:
        client = connect(warm)
        key = "wrong" if total == 20 * MB else API_KEY
        client.send(request(warm, "POST", "/v1/predictions", "Content-Type: image/png", *lines, key=key))
        if "chunked" in lines[0]:
            with contextlib.suppress(OSError):
                for _ in range(total // len(PIECE)):
                    client.send(b"%x\r\n" % len(PIECE) + PIECE + b"\r\n")
        else:
            stream(client, total)
        answers.append(client.response().status)
    answers.append(connect(warm).send(request(warm, "GET", "/v1/models", "X-A: " + "a" * 70_000)).response().status)
    idle = [connect(warm) for _ in range(200)]
    answers.append(predict_png(warm, connect(warm), 6).status)
    for client in idle:
        client.close()
    gc.collect()
    grown = vm_rss() - before

    # then each was refused, and the process grew by less than 20 MB
    assert answers == [400, 403, 413, 431, 200]
    assert grown < 20 * MB, f"grew by {grown / MB:.1f} MB"
