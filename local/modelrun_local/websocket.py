"""The template's WebSocket API served on localhost, and moto's management API wired to it.

**The API.** ``WebSocketApiRoutes.from_template`` reads each ``AWS::ApiGatewayV2::Api`` with ``ProtocolType:
WEBSOCKET``: its ``RouteSelectionExpression`` and its routes, each route's function found through its ``Target``
(``integrations/${Integration}``) and that integration's ``IntegrationUri``. ``LocalWebSocketApi`` serves it with the
``websockets`` package on ``ws://host:port/{stage}`` (``/`` too) and does what API Gateway does in front of the
functions, with real-shaped proxy events invoked through the local dispatcher:

- a handshake whose ``Host`` is not a loopback name with this server's port is refused with 421 ``invalid_host``
  (``modelrun_local.origins``: a page elsewhere cannot reach the server by DNS rebinding);
- the opening handshake is the ``$connect`` route (``eventType: CONNECT``, headers, query string); an answer with a
  ``statusCode`` of 400 or more refuses the connection with that status (a function error: 502);
- each message is routed by the selection expression (``$request.body.action``: the message's JSON ``action``),
  falling back to ``$default`` (``eventType: MESSAGE``); a function error answers the client
  ``{"message": "Internal server error", ...}`` as API Gateway does, and a message without a route ``Forbidden``;
- closing (either side) is the ``$disconnect`` route (``disconnectStatusCode``, ``disconnectReason``);
- a message over 128 KB closes the connection (1009), as API Gateway's limit does; no compression, no server pings.

Not reproduced: the 10-minute idle timeout and the 2-hour connection limit, and per-route throttling. Messages of
one connection are handled one at a time, in order (API Gateway may invoke them concurrently).

**The management API.** Functions post with boto3's ``apigatewaymanagementapi`` client to the AWS-shaped endpoint
``https://{api}.execute-api.{region}.amazonaws.com/{stage}`` from their environment, which moto intercepts in
process. moto's backend accepts anything and never raises ``GoneException``; ``install_management_api()`` patches
its ``post_to_connection``, ``delete_connection`` and ``get_connection`` so that, while a local WebSocket API runs,
a post delivers the bytes to that connection's client (a text frame when they are UTF-8), an unknown or closed
connection answers ``GoneException`` (HTTP 410), a post over 128 KB ``PayloadTooLargeException`` (413), and a
delete closes the connection. With no local WebSocket API running, moto behaves as it does without the patch.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.sync.server import Server, ServerConnection, serve

from modelrun_local import LOGGER
from modelrun_local.lambdas import LocalFunction
from modelrun_local.origins import HOST_CODE, HOST_STATUS, HostRule, error_body
from modelrun_local.template import Template, references

log = logging.getLogger(LOGGER)

MAX_MESSAGE_BYTES = 128 * 1024  # API Gateway's WebSocket message limit (frames are 32 KB; we take whole messages)
MAX_FRAME_GUARD_BYTES = 16 * 1024 * 1024
SHUTDOWN_WAIT_S = 15.0
CONNECT, DISCONNECT, DEFAULT = "$connect", "$disconnect", "$default"
SELECTION_PREFIX = "$request.body."


def new_id() -> str:
    """An id shaped like API Gateway's connection and request ids (16 characters, e.g. ``Tfs0ge4GIAMCJbQ=``)."""
    return base64.urlsafe_b64encode(os.urandom(11)).decode("ascii")


def request_time(now: float) -> str:
    return time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now))


class RouteSelectionError(ValueError):
    """A RouteSelectionExpression the local runtime does not evaluate."""


@dataclass(frozen=True)
class WebSocketApiRoutes:
    """One WebSocket API of the template: how messages select a route, and which function serves each route."""

    api: str
    selection: tuple[str, ...]  # the JSON path in the message body ("$request.body.action" -> ("action",))
    functions: dict[str, str]  # route key -> function logical id

    @classmethod
    def from_template(cls, template: Template) -> list[WebSocketApiRoutes]:
        apis = [
            (name, resource.get("Properties", {}))
            for name, resource in template.of_type("AWS::ApiGatewayV2::Api").items()
            if resource.get("Properties", {}).get("ProtocolType") == "WEBSOCKET"
        ]
        found = []
        for api, props in apis:
            expression = str(props.get("RouteSelectionExpression", ""))
            if not expression.startswith(SELECTION_PREFIX):
                raise RouteSelectionError(f"{api}: RouteSelectionExpression {expression!r} is not $request.body.<path>")
            functions = {}
            for name, route in template.of_type("AWS::ApiGatewayV2::Route").items():
                route_props = route.get("Properties", {})
                if route_props.get("ApiId") != {"Ref": api}:
                    continue
                functions[str(route_props["RouteKey"])] = _route_function(template, name, route_props)
            found.append(
                cls(api=api, selection=tuple(expression[len(SELECTION_PREFIX) :].split(".")), functions=functions)
            )
        return found

    def select(self, body: str | bytes) -> str | None:
        """The route a message takes: the selected key if it has a route, else ``$default`` if there is one."""
        if isinstance(body, str):
            try:
                value: Any = json.loads(body)
            except json.JSONDecodeError:
                value = None
            for part in self.selection:
                value = value.get(part) if isinstance(value, dict) else None
            if isinstance(value, str) and value in self.functions and value not in (CONNECT, DISCONNECT):
                return value
        return DEFAULT if DEFAULT in self.functions else None


def _route_function(template: Template, route: str, props: dict[str, Any]) -> str:
    """The function behind a route: its Target names an integration, whose IntegrationUri names the function."""
    integrations = template.of_type("AWS::ApiGatewayV2::Integration")
    functions = template.of_type("AWS::Serverless::Function")
    for integration in sorted(references(props.get("Target")) & set(integrations)):
        uri = integrations[integration].get("Properties", {}).get("IntegrationUri")
        targets = sorted(references(uri) & set(functions))
        if targets:
            return targets[0]
    raise ValueError(f"{route}: its Target does not lead to an integration with a function of this template")


@dataclass
class _Connection:
    connection_id: str
    socket: ServerConnection | None
    connected_at_ms: int
    source_ip: str
    user_agent: str | None
    last_active_ms: int
    lock: threading.Lock = field(default_factory=threading.Lock)


class ConnectionGoneError(LookupError):
    """No open connection with this id (the management API answers GoneException)."""


class LocalWebSocketApi:
    """A WebSocket API of the template on localhost, its routes served by the local functions."""

    def __init__(
        self,
        routes: WebSocketApiRoutes,
        functions: Callable[[str], LocalFunction],
        *,
        host: str = "127.0.0.1",
        port: int = 3001,
        stage: str = "v1",
        api_id: str = "local",
        region: str = "us-east-1",
    ) -> None:
        self.routes = routes
        self.functions = functions
        self.host = host
        self.stage = stage
        self.api_id = api_id
        self.region = region
        self._opening: dict[ServerConnection, _Connection] = {}
        self._open: dict[str, _Connection] = {}
        self._lock = threading.Lock()
        self._server: Server = serve(
            self._serve,
            host,
            port,
            process_request=self._handshake,
            compression=None,
            ping_interval=None,
            # The 128 KB limit is checked in _serve (a close the server starts there honours close_timeout; the
            # library's max_size failure waits for the client's TCP close with no deadline): this is a memory guard.
            max_size=MAX_FRAME_GUARD_BYTES,
            server_header=None,
        )
        self._thread = threading.Thread(target=self._server.serve_forever, name="local-websocket", daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.socket.getsockname()[1])

    @property
    def url(self) -> str:
        return f"ws://{self.host}:{self.port}/{self.stage}"

    @property
    def domain_name(self) -> str:
        return f"{self.api_id}.execute-api.{self.region}.amazonaws.com"

    def start(self) -> LocalWebSocketApi:
        install_management_api()
        with _registry_lock:
            _running.append(self)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop accepting connections, close the open ones (each gets its $disconnect), and forget this API.

        A client that never completes the closing handshake cannot hold the stop up: after ``SHUTDOWN_WAIT_S`` the
        remaining sockets are closed outright."""
        shutdown = threading.Thread(target=self._server.shutdown, name="local-websocket-shutdown", daemon=True)
        shutdown.start()
        shutdown.join(SHUTDOWN_WAIT_S)
        if shutdown.is_alive():
            with self._server.lock:
                stuck = list(self._server.all_connections)
            for socket in stuck:
                socket.close_socket()
            shutdown.join(SHUTDOWN_WAIT_S)
        self._thread.join(10)
        with _registry_lock:
            if self in _running:
                _running.remove(self)

    # -- the management API's side ---------------------------------------------------------------------------------
    def connection(self, connection_id: str, wait_s: float = 2.0) -> _Connection | None:
        """The open connection with that id. One whose $connect succeeded is postable at once, as on API Gateway,
        even if its serving thread has not picked it up yet: wait (bounded) for that moment."""
        deadline = time.monotonic() + wait_s
        while True:
            with self._lock:
                found = self._open.get(connection_id)
                opening = any(pending.connection_id == connection_id for pending in self._opening.values())
            if found is not None or not opening or time.monotonic() >= deadline:
                return found
            time.sleep(0.01)

    def post(self, connection_id: str, data: bytes) -> None:
        found = self.connection(connection_id)
        if found is None or found.socket is None:
            raise ConnectionGoneError(connection_id)
        try:
            message: str | bytes = data.decode("utf-8")
        except UnicodeDecodeError:
            message = data
        try:
            with found.lock:
                found.socket.send(message)
        except ConnectionClosed as exc:
            raise ConnectionGoneError(connection_id) from exc

    def close(self, connection_id: str) -> None:
        """Start closing a connection (DeleteConnection answers at once; the closing handshake goes on meanwhile)."""
        found = self.connection(connection_id)
        if found is None or found.socket is None:
            raise ConnectionGoneError(connection_id)
        threading.Thread(target=found.socket.close, args=(1000, ""), name="websocket-close", daemon=True).start()

    # -- serving ---------------------------------------------------------------------------------------------------
    def _function(self, route_key: str) -> LocalFunction | None:
        logical_id = self.routes.functions.get(route_key)
        return self.functions(logical_id) if logical_id else None

    def _handshake(self, socket: ServerConnection, request: Request) -> Response | None:
        """The opening handshake: the Host must name this server (``origins.HostRule``: 421 ``invalid_host`` in the
        API's error shape otherwise, against DNS rebinding), the path must be the stage (or /), then $connect
        decides."""
        host_rule = HostRule(port=self.port, bound=self.host)
        hosts = request.headers.get_all("Host")
        if len(hosts) != 1 or not host_rule.allows(hosts[0]):
            refusal = socket.respond(HOST_STATUS, error_body(HOST_CODE, host_rule.message()).decode())
            del refusal.headers["Content-Type"]
            refusal.headers["Content-Type"] = "application/json"
            log.info("websocket connection refused: Host %r", hosts)
            return refusal
        url = urlsplit(request.path)
        if url.path.rstrip("/") not in ("", f"/{self.stage}"):
            return socket.respond(HTTPStatus.FORBIDDEN, '{"message": "Forbidden"}')
        now = time.time()
        address = socket.remote_address
        connection = _Connection(
            connection_id=new_id(),
            socket=None,
            connected_at_ms=int(now * 1000),
            source_ip=str(address[0]) if address else "127.0.0.1",
            user_agent=request.headers.get("User-Agent"),
            last_active_ms=int(now * 1000),
        )
        function = self._function(CONNECT)
        if function is not None:
            invocation = function.invoke(self.connect_event(connection, request, now))
            status = self._status(invocation.payload) if not invocation.failed else HTTPStatus.BAD_GATEWAY
            if status >= HTTPStatus.BAD_REQUEST:
                body = invocation.payload.get("body") if isinstance(invocation.payload, dict) else None
                log.info("websocket connection refused with %d", status)
                return socket.respond(status, str(body or '{"message": "Forbidden"}'))
        with self._lock:
            self._opening[socket] = connection
        return None

    @staticmethod
    def _status(payload: Any) -> int:
        if isinstance(payload, dict) and isinstance(payload.get("statusCode"), int):
            return int(payload["statusCode"])
        return HTTPStatus.BAD_GATEWAY

    def _serve(self, socket: ServerConnection) -> None:
        with self._lock:
            connection = self._opening.pop(socket)
            connection.socket = socket
            self._open[connection.connection_id] = connection
        log.info("websocket %s connected", connection.connection_id)
        closed_with: tuple[int | None, str | None] = (None, None)
        try:
            for message in socket:
                connection.last_active_ms = int(time.time() * 1000)
                size = len(message) if isinstance(message, bytes) else len(message.encode("utf-8"))
                if size > MAX_MESSAGE_BYTES:
                    # API Gateway closes a connection that sends a message over its limit.
                    closed_with = (1009, f"message of {size} bytes: the limit is {MAX_MESSAGE_BYTES} bytes")
                    socket.close(*closed_with)
                    break
                self._message(connection, message)
        except ConnectionClosed:
            pass
        finally:
            with self._lock:
                self._open.pop(connection.connection_id, None)
            code, reason = closed_with if closed_with[0] else (socket.close_code, socket.close_reason)
            function = self._function(DISCONNECT)
            if function is not None:
                function.invoke(self.disconnect_event(connection, code, reason))
            log.info("websocket %s disconnected (%s)", connection.connection_id, code)

    def _message(self, connection: _Connection, message: str | bytes) -> None:
        route_key = self.routes.select(message)
        request_id = new_id()
        function = self._function(route_key) if route_key else None
        if function is None:
            answer = {"message": "Forbidden", "connectionId": connection.connection_id, "requestId": request_id}
            self._answer(connection, answer)
            return
        assert route_key is not None
        invocation = function.invoke(self.message_event(connection, route_key, message, request_id))
        if invocation.failed:
            answer = {
                "message": "Internal server error",
                "connectionId": connection.connection_id,
                "requestId": request_id,
            }
            self._answer(connection, answer)

    def _answer(self, connection: _Connection, answer: dict[str, Any]) -> None:
        with contextlib.suppress(ConnectionGoneError):
            self.post(connection.connection_id, json.dumps(answer).encode())

    # -- events ----------------------------------------------------------------------------------------------------
    def _context(self, connection: _Connection, route_key: str, event_type: str, request_id: str) -> dict[str, Any]:
        now = time.time()
        identity: dict[str, Any] = {"sourceIp": connection.source_ip}
        if connection.user_agent:
            identity["userAgent"] = connection.user_agent
        return {
            "routeKey": route_key,
            "eventType": event_type,
            "extendedRequestId": request_id,
            "requestTime": request_time(now),
            "messageDirection": "IN",
            "stage": self.stage,
            "connectedAt": connection.connected_at_ms,
            "requestTimeEpoch": int(now * 1000),
            "identity": identity,
            "requestId": request_id,
            "domainName": self.domain_name,
            "connectionId": connection.connection_id,
            "apiId": self.api_id,
        }

    def connect_event(self, connection: _Connection, request: Request, now: float) -> dict[str, Any]:
        headers: dict[str, str] = {}
        multi_headers: dict[str, list[str]] = {}
        for name, value in request.headers.raw_items():
            headers[name] = value
            multi_headers.setdefault(name, []).append(value)
        forwarded = {
            "X-Forwarded-For": connection.source_ip,
            "X-Forwarded-Port": str(self.port),
            "X-Forwarded-Proto": "http",
        }
        headers.update(forwarded)
        multi_headers.update({name: [value] for name, value in forwarded.items()})
        event: dict[str, Any] = {
            "headers": headers,
            "multiValueHeaders": multi_headers,
            "requestContext": self._context(connection, CONNECT, "CONNECT", new_id()),
            "isBase64Encoded": False,
        }
        query = parse_qs(urlsplit(request.path).query, keep_blank_values=True)
        if query:
            event["queryStringParameters"] = {name: values[-1] for name, values in query.items()}
            event["multiValueQueryStringParameters"] = query
        return event

    def message_event(
        self, connection: _Connection, route_key: str, message: str | bytes, request_id: str
    ) -> dict[str, Any]:
        context = self._context(connection, route_key, "MESSAGE", request_id)
        context["messageId"] = new_id()
        if isinstance(message, bytes):
            return {
                "requestContext": context,
                "body": base64.b64encode(message).decode("ascii"),
                "isBase64Encoded": True,
            }
        return {"requestContext": context, "body": message, "isBase64Encoded": False}

    def disconnect_event(self, connection: _Connection, code: int | None, reason: str | None) -> dict[str, Any]:
        context = self._context(connection, DISCONNECT, "DISCONNECT", new_id())
        context["disconnectStatusCode"] = code if code is not None else 1006
        context["disconnectReason"] = reason or ""
        headers = {"Host": self.domain_name, "x-api-key": "", "X-Forwarded-For": "", "x-restapi": ""}
        return {
            "headers": headers,
            "multiValueHeaders": {name: [value] for name, value in headers.items()},
            "requestContext": context,
            "isBase64Encoded": False,
        }


# -- moto's management API -------------------------------------------------------------------------------------------
_running: list[LocalWebSocketApi] = []
_registry_lock = threading.Lock()


def _find(connection_id: str) -> tuple[LocalWebSocketApi, _Connection] | None:
    with _registry_lock:
        apis = list(_running)
    for api in apis:
        found = api.connection(connection_id)
        if found is not None:
            return api, found
    return None


def install_management_api() -> None:
    """Patch moto's apigatewaymanagementapi backend (idempotent): see the module docstring."""
    from moto.apigatewaymanagementapi.models import ApiGatewayManagementApiBackend as Backend
    from moto.core.exceptions import JsonRESTError

    if getattr(Backend, "modelrun_patched", False):
        return

    class GoneException(JsonRESTError):
        code = 410

        def __init__(self, connection_id: str) -> None:
            super().__init__("GoneException", f"connection {connection_id} is gone")

    class PayloadTooLargeException(JsonRESTError):
        code = 413

        def __init__(self, size: int) -> None:
            super().__init__("PayloadTooLargeException", f"{size} bytes: the limit is {MAX_MESSAGE_BYTES} bytes")

    original_post = Backend.post_to_connection
    original_delete = Backend.delete_connection
    original_get = Backend.get_connection

    def local() -> bool:
        with _registry_lock:
            return bool(_running)

    def post_to_connection(self: Any, data: bytes, connection_id: str) -> None:
        if not local():
            return original_post(self, data, connection_id)
        connection_id = unquote(connection_id)
        if len(data) > MAX_MESSAGE_BYTES:
            raise PayloadTooLargeException(len(data))
        found = _find(connection_id)
        if found is None:
            raise GoneException(connection_id)
        try:
            found[0].post(connection_id, bytes(data))
        except ConnectionGoneError:
            raise GoneException(connection_id) from None

    def delete_connection(self: Any, connection_id: str) -> None:
        if not local():
            return original_delete(self, connection_id)
        connection_id = unquote(connection_id)
        found = _find(connection_id)
        if found is None:
            raise GoneException(connection_id)
        try:
            found[0].close(connection_id)
        except ConnectionGoneError:
            raise GoneException(connection_id) from None

    def get_connection(self: Any, connection_id: str) -> Any:
        if not local():
            return original_get(self, connection_id)
        connection_id = unquote(connection_id)
        found = _find(connection_id)
        if found is None:
            raise GoneException(connection_id)
        return _ConnectionView(found[1])

    Backend.post_to_connection = post_to_connection  # type: ignore[method-assign]
    Backend.delete_connection = delete_connection  # type: ignore[method-assign]
    Backend.get_connection = get_connection  # type: ignore[method-assign]
    Backend.modelrun_patched = True  # type: ignore[attr-defined]


@dataclass
class _ConnectionView:
    """What GetConnection answers for a live connection (moto's responses call ``to_dict``)."""

    connection: _Connection

    def to_dict(self) -> dict[str, Any]:
        identity = {"sourceIp": self.connection.source_ip, "userAgent": self.connection.user_agent or ""}
        return {
            "connectedAt": self.connection.connected_at_ms / 1000,
            "lastActiveAt": self.connection.last_active_ms / 1000,
            "identity": identity,
        }
