"""The local WebSocket API: routes read from template.yaml, real-shaped events for recording fake functions, and
moto's management API delivering to (or refusing) the connected clients."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import boto3
import pytest
import websocket
from moto import mock_aws

from modelrun_local.lambdas import Invocation, error_payload
from modelrun_local.template import DEFAULT_TEMPLATE, Template
from modelrun_local.websocket import (
    MAX_MESSAGE_BYTES,
    LocalWebSocketApi,
    RouteSelectionError,
    WebSocketApiRoutes,
    install_management_api,
)
from tests.batchfixtures import use_fake_credentials

ROUTES = WebSocketApiRoutes(
    api="WebSocketApi",
    selection=("action",),
    functions={key: "Routes" for key in ("$connect", "$disconnect", "subscribe", "$default")},
)
TIMEOUT_S = 30


# -- routes from the template ------------------------------------------------------------------------------------
def test_the_template_websocket_api_routes_every_route_to_the_websocket_function() -> None:
    (api,) = WebSocketApiRoutes.from_template(Template.load(DEFAULT_TEMPLATE))
    assert api.api == "WebSocketApi"
    assert api.functions == {
        key: "WebSocketFunction" for key in ("$connect", "$disconnect", "subscribe", "unsubscribe", "$default")
    }


def test_the_template_route_selection_expression_selects_by_the_action_field() -> None:
    (api,) = WebSocketApiRoutes.from_template(Template.load(DEFAULT_TEMPLATE))
    assert api.selection == ("action",)


def test_a_route_selection_expression_other_than_a_body_path_is_refused(tmp_path: Any) -> None:
    template = Template.load(DEFAULT_TEMPLATE)
    template.data["Resources"]["WebSocketApi"]["Properties"]["RouteSelectionExpression"] = "$request.header.x"
    with pytest.raises(RouteSelectionError, match=r"\$request.body"):
        WebSocketApiRoutes.from_template(template)


@pytest.mark.parametrize(
    ("message", "route"),
    [
        ('{"action": "subscribe", "batch_id": "b"}', "subscribe"),
        ('{"action": "status"}', "$default"),
        ('{"action": "$connect"}', "$default"),
        ('{"action": 7}', "$default"),
        ("not json", "$default"),
        ("[1]", "$default"),
        (b"\x00\x01", "$default"),
    ],
    ids=["known", "unknown", "connect", "number", "text", "array", "binary"],
)
def test_a_message_takes_the_route_its_action_selects_or_the_default_route(message: str | bytes, route: str) -> None:
    assert ROUTES.select(message) == route


def test_a_message_without_a_route_and_no_default_route_has_no_route() -> None:
    routes = WebSocketApiRoutes(api="A", selection=("action",), functions={"subscribe": "F"})
    assert routes.select('{"action": "other"}') is None


def test_a_nested_selection_path_is_followed() -> None:
    routes = WebSocketApiRoutes(api="A", selection=("request", "kind"), functions={"ping": "F"})
    assert routes.select('{"request": {"kind": "ping"}}') == "ping"


# -- the server with recording functions -------------------------------------------------------------------------
@dataclass
class Routes:
    """A fake function serving every route: records each event; answers $connect with ``connect_status``."""

    connect_status: int = 200
    fail_messages: bool = False
    events: list[dict[str, Any]] = field(default_factory=list)
    logical_id: str = "Routes"
    arn: str = "arn:aws:lambda:us-east-1:123456789012:function:routes"
    disconnected: threading.Event = field(default_factory=threading.Event)

    def invoke(self, event: dict[str, Any]) -> Invocation:
        self.events.append(event)
        context = event["requestContext"]
        if context["eventType"] == "CONNECT":
            body = json.dumps({"error": {"code": "invalid_api_key", "message": "no"}})
            return Invocation({"statusCode": self.connect_status, "body": body})
        if context["eventType"] == "DISCONNECT":
            self.disconnected.set()
        if context["eventType"] == "MESSAGE" and self.fail_messages:
            return Invocation(error_payload("RuntimeError", "boom"), "RuntimeError")
        return Invocation({"statusCode": 200})

    def of(self, event_type: str) -> list[dict[str, Any]]:
        return [event for event in self.events if event["requestContext"]["eventType"] == event_type]


@pytest.fixture
def routes() -> Routes:
    return Routes()


@pytest.fixture
def server(routes: Routes) -> Iterator[LocalWebSocketApi]:
    api = LocalWebSocketApi(ROUTES, lambda _: routes, port=0, stage="v1", api_id="abc123", region="us-east-1")  # type: ignore[arg-type,return-value]
    api.start()
    yield api
    api.stop()


@pytest.fixture
def client(server: LocalWebSocketApi) -> Iterator[Callable[..., websocket.WebSocket]]:
    opened: list[websocket.WebSocket] = []

    def open_client(path: str = "/v1?api_key=k", **options: Any) -> websocket.WebSocket:
        opened.append(websocket.create_connection(f"ws://127.0.0.1:{server.port}{path}", timeout=TIMEOUT_S, **options))
        return opened[-1]

    yield open_client
    for ws in opened:
        ws.close()


def test_connecting_invokes_connect_with_a_real_shaped_event(
    client: Callable[..., websocket.WebSocket], routes: Routes
) -> None:
    client("/v1?api_key=k&x=1", header={"x-api-key": "h"})

    (event,) = routes.of("CONNECT")
    context = event["requestContext"]
    assert context["routeKey"] == "$connect"
    assert context["domainName"] == "abc123.execute-api.us-east-1.amazonaws.com"
    assert (context["stage"], context["apiId"]) == ("v1", "abc123")
    assert context["identity"]["sourceIp"] == "127.0.0.1"
    assert len(context["connectionId"]) == 16
    assert isinstance(context["connectedAt"], int)
    assert event["queryStringParameters"] == {"api_key": "k", "x": "1"}
    assert event["headers"]["x-api-key"] == "h"


def test_a_connect_answer_of_403_refuses_the_connection_with_403(
    client: Callable[..., websocket.WebSocket], routes: Routes
) -> None:
    routes.connect_status = 403
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        client()
    assert refused.value.status_code == 403


def test_a_path_other_than_the_stage_is_refused(client: Callable[..., websocket.WebSocket], routes: Routes) -> None:
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        client("/other")
    assert refused.value.status_code == 403
    assert routes.of("CONNECT") == []


@pytest.mark.parametrize("host", ["evil.example", "evil.example:{port}", "127.0.0.1:1", "127.0.0.1"])
def test_a_handshake_whose_host_is_not_this_server_is_refused_421_before_connect(
    client: Callable[..., websocket.WebSocket], server: LocalWebSocketApi, routes: Routes, host: str
) -> None:
    # given a Host another name resolves to (DNS rebinding), another port, or no port
    # when the client opens a connection with it
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        client(host=host.format(port=server.port))

    # then the upgrade is refused with 421 and the API's error shape, and no $connect runs
    assert refused.value.status_code == 421
    assert refused.value.resp_headers["content-type"] == "application/json"
    assert json.loads(refused.value.resp_body)["error"]["code"] == "invalid_host"
    assert routes.of("CONNECT") == []


def test_a_handshake_addressed_to_localhost_with_the_port_is_accepted(
    client: Callable[..., websocket.WebSocket], server: LocalWebSocketApi, routes: Routes
) -> None:
    client(host=f"localhost:{server.port}")
    assert len(routes.of("CONNECT")) == 1


def test_the_root_path_is_accepted_as_well(client: Callable[..., websocket.WebSocket], routes: Routes) -> None:
    client("/?api_key=k")
    assert len(routes.of("CONNECT")) == 1


def test_a_message_is_delivered_to_its_route_as_a_message_event(
    client: Callable[..., websocket.WebSocket], routes: Routes, server: LocalWebSocketApi
) -> None:
    ws = client()
    body = json.dumps({"action": "subscribe", "batch_id": "b-1"})
    ws.send(body)
    ws.close()
    assert routes.disconnected.wait(TIMEOUT_S)

    (event,) = routes.of("MESSAGE")
    assert event["body"] == body
    assert event["isBase64Encoded"] is False
    assert event["requestContext"]["routeKey"] == "subscribe"
    assert event["requestContext"]["connectionId"] == routes.of("CONNECT")[0]["requestContext"]["connectionId"]


def test_closing_invokes_disconnect_with_the_close_code(
    client: Callable[..., websocket.WebSocket], routes: Routes
) -> None:
    ws = client()
    ws.close(status=1000)
    assert routes.disconnected.wait(TIMEOUT_S)
    (event,) = routes.of("DISCONNECT")
    assert event["requestContext"]["routeKey"] == "$disconnect"
    assert event["requestContext"]["disconnectStatusCode"] == 1000


def test_a_function_error_on_a_message_is_answered_internal_server_error(
    client: Callable[..., websocket.WebSocket], routes: Routes
) -> None:
    routes.fail_messages = True
    ws = client()
    ws.send("{}")
    answer = json.loads(ws.recv())
    assert answer["message"] == "Internal server error"
    assert set(answer) == {"message", "connectionId", "requestId"}


def test_a_message_over_128_kb_closes_the_connection_with_1009(
    client: Callable[..., websocket.WebSocket], routes: Routes
) -> None:
    ws = client()
    ws.send("x" * (MAX_MESSAGE_BYTES + 1))
    opcode, data = ws.recv_data()
    assert (opcode, int.from_bytes(data[:2], "big")) == (websocket.ABNF.OPCODE_CLOSE, 1009)
    ws.shutdown()  # the client drops the TCP connection once the closing handshake is done, as browsers do
    assert routes.disconnected.wait(TIMEOUT_S)
    assert routes.of("DISCONNECT")[0]["requestContext"]["disconnectStatusCode"] == 1009
    assert routes.of("MESSAGE") == []


def test_the_url_names_the_port_and_the_stage(server: LocalWebSocketApi) -> None:
    assert server.url == f"ws://127.0.0.1:{server.port}/v1"


# -- the management API ------------------------------------------------------------------------------------------
@pytest.fixture
def management(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    use_fake_credentials(monkeypatch)
    with mock_aws():
        endpoint = "https://abc123.execute-api.us-east-1.amazonaws.com/v1"
        yield boto3.client("apigatewaymanagementapi", endpoint_url=endpoint, region_name="us-east-1")


def connection_id(routes: Routes) -> str:
    return str(routes.of("CONNECT")[-1]["requestContext"]["connectionId"])


def test_a_post_is_delivered_to_the_connected_client_as_text(
    management: Any, client: Callable[..., websocket.WebSocket], routes: Routes
) -> None:
    ws = client()
    management.post_to_connection(ConnectionId=connection_id(routes), Data=b'{"type": "progress"}')
    assert ws.recv() == '{"type": "progress"}'


def test_a_post_to_an_unknown_connection_is_answered_gone(management: Any, server: LocalWebSocketApi) -> None:
    with pytest.raises(management.exceptions.GoneException) as gone:
        management.post_to_connection(ConnectionId="Tfs0ge4GIAMCJbQ=", Data=b"{}")
    assert gone.value.response["ResponseMetadata"]["HTTPStatusCode"] == 410


def test_a_post_to_a_closed_connection_is_answered_gone(
    management: Any, client: Callable[..., websocket.WebSocket], routes: Routes
) -> None:
    client().close()
    assert routes.disconnected.wait(TIMEOUT_S)
    with pytest.raises(management.exceptions.GoneException):
        management.post_to_connection(ConnectionId=connection_id(routes), Data=b"{}")


def test_a_post_over_128_kb_is_refused_as_too_large(
    management: Any, client: Callable[..., websocket.WebSocket], routes: Routes
) -> None:
    client()
    with pytest.raises(management.exceptions.PayloadTooLargeException):
        management.post_to_connection(ConnectionId=connection_id(routes), Data=b"x" * (MAX_MESSAGE_BYTES + 1))


def test_deleting_a_connection_closes_it(
    management: Any, client: Callable[..., websocket.WebSocket], routes: Routes
) -> None:
    ws = client()
    management.delete_connection(ConnectionId=connection_id(routes))
    assert ws.recv_data()[0] == websocket.ABNF.OPCODE_CLOSE
    ws.shutdown()
    assert routes.disconnected.wait(TIMEOUT_S)


def test_get_connection_describes_a_live_connection(
    management: Any, client: Callable[..., websocket.WebSocket], routes: Routes
) -> None:
    client()
    described = management.get_connection(ConnectionId=connection_id(routes))
    assert described["Identity"]["SourceIp"] == "127.0.0.1"


def test_without_a_local_websocket_api_moto_behaves_as_before(management: Any) -> None:
    # Given the patch installed and no local WebSocket API running
    install_management_api()

    # When posting to any connection
    response = management.post_to_connection(ConnectionId="anything", Data=b"{}")

    # Then moto accepts it, as it does unpatched
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 200
