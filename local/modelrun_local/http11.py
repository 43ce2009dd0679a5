"""HTTP/1.1 for the local gateway, parsed by h11, within limits that hold whatever a client sends.

A thread per connection on blocking sockets with timeouts. Whatever a client sends, the server guarantees:

- **Framing is h11's.** ``Content-Length`` must be one decimal number (repeated only with the same value); chunked
  bodies are decoded; any other ``Transfer-Encoding``, or ``Transfer-Encoding`` together with ``Content-Length``, is
  refused. A body's bytes are never read as the next request.
- **The head decides first.** The application sees the request line and headers before any byte of the body
  (``Application.head``) and may answer at once (a wrong ``Host``, API key or route); the body is then left unread
  and the connection closed after the answer.
- **Bounded memory.** A body is read only up to ``Limits.max_body_bytes`` (a larger ``Content-Length`` is refused
  before reading, a chunked body as soon as it goes past), in pieces of ``RECV_BYTES``; a head is at most
  ``Limits.max_head_bytes``.
- **Bounded time and connections.** Deadlines for a head, a body and an idle connection, and a cap on connections
  served at once (see ``Limits``).
- **Every refusal in the application's error shape** (``Application.refusal``), with ``Connection: close``:

  ====== ========================== ================================================================================
  status code                       when
  ====== ========================== ================================================================================
  400    ``bad_request``            not HTTP/1.0 or 1.1: request line, header syntax, ``Content-Length`` not one
                                    number or two that differ, a ``Transfer-Encoding`` other than chunked or beside
                                    ``Content-Length``, broken chunks, no or several ``Host`` headers
  408    ``request_timeout``        the head not complete ``header_timeout_s`` after its first byte, or no piece of
                                    the body for ``body_timeout_s``
  413    ``Application.too_large``  a body over ``max_body_bytes``
  421    ``invalid_host``           a ``Host`` that is not a loopback name with this server's port (DNS rebinding)
  431    ``headers_too_large``      a request line and headers over ``max_head_bytes``
  503    ``too_many_connections``   ``max_connections`` connections are being served already
  ====== ========================== ================================================================================

A connection with no request under way is closed without an answer after ``idle_timeout_s``. A failure of the
application itself, or an answer that cannot be sent (a header value with a line break, a 1xx, a 2xx to CONNECT:
this server never switches protocols), is answered ``500 {"message": "Internal server error"}`` and logged.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Protocol

import h11

from modelrun_local import LOGGER
from modelrun_local.origins import HOST_CODE, HOST_STATUS, HostRule

log = logging.getLogger(LOGGER)

RECV_BYTES = 64 * 1024  # one read from a socket: the most a body or a head can grow past its limit before a check
ACCEPT_POLL_S = 0.25  # how often the accept loop looks whether the server is stopping

Response = tuple[int, dict[str, str], bytes]
BodyHandler = Callable[[bytes], Response]

BAD_REQUEST = "bad_request"
REQUEST_TIMEOUT = "request_timeout"
HEADERS_TOO_LARGE = "headers_too_large"
TOO_MANY_CONNECTIONS = "too_many_connections"
INTERNAL_ERROR: Response = (
    HTTPStatus.INTERNAL_SERVER_ERROR,
    {"Content-Type": "application/json"},
    b'{"message": "Internal server error"}',
)
# Status codes whose responses never have a body, whatever Content-Length says.
NO_BODY_STATUSES = frozenset({HTTPStatus.NO_CONTENT, HTTPStatus.NOT_MODIFIED})
_FRAMING_HEADERS = frozenset({"content-length", "connection", "transfer-encoding"})


@dataclass(frozen=True)
class Limits:
    """How much and how long the server waits for a client, and how many clients it serves at once.

    Attributes:
        max_body_bytes: the largest request body read (10 MB, API Gateway's limit): a larger ``Content-Length`` is
            answered ``Application.too_large`` before the body is read, a chunked body as soon as it goes past.
        max_head_bytes: the request line and headers together (16 KB), answered 431 past it.
        header_timeout_s: from the first byte of a request to the end of its head (10 s), answered 408 past it.
        body_timeout_s: the longest wait for the next piece of a body (30 s), answered 408 past it.
        idle_timeout_s: how long a connection waits for the first byte of its next request (60 s) before it is
            closed without an answer.
        max_connections: connections served at once (256); one more is answered 503 and closed.
        linger_s: after an answer that leaves a body unread, how long what the client still sends is read and
            dropped before the close (2 s), so that the client reads the answer rather than a connection reset.
    """

    max_body_bytes: int = 10 * 1024 * 1024
    max_head_bytes: int = 16 * 1024
    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    idle_timeout_s: float = 60.0
    max_connections: int = 256
    linger_s: float = 2.0


@dataclass(frozen=True)
class Head:
    """A request's line and headers, as the application sees them before its body.

    Attributes:
        method: as sent (``GET``, ``QUERY``, ...).
        target: the request target (``/v1/models?limit=2``).
        headers: names as the client spelled them, values decoded as ISO-8859-1; a repeated header keeps its last
            value.
        client: the client's address.
        pairs: every header in the order sent, repeats included (names as spelled, values as in ``headers``).
    """

    method: str
    target: str
    headers: dict[str, str]
    client: str
    pairs: tuple[tuple[str, str], ...] = ()


class Application(Protocol):
    """What the server serves: an answer from the head alone, or a handler for the body."""

    def head(self, head: Head) -> Response | BodyHandler:
        """The answer to a request without reading its body, or the handler to call with the body once it is in."""
        ...

    def refusal(self, status: int, code: str, message: str) -> Response:
        """The server's own refusal (see the module docstring) in the application's error shape."""
        ...

    def too_large(self) -> Response:
        """The answer to a body over ``Limits.max_body_bytes``."""
        ...


class _Refused(Exception):
    """The request cannot be served: answer with this refusal and close the connection."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class _TooLarge(Exception):
    """The body goes past ``Limits.max_body_bytes``."""


def _head_too_large(limits: Limits) -> _Refused:
    return _Refused(
        HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE,
        HEADERS_TOO_LARGE,
        f"the request line and headers exceed {limits.max_head_bytes} bytes",
    )


def _protocol_refusal(error: h11.RemoteProtocolError, limits: Limits) -> _Refused:
    """h11's verdict on a malformed request, with a stable code and a message that says what to fix."""
    text = str(error)
    if error.error_status_hint == HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE:
        return _head_too_large(limits)
    if "Content-Length" in text:
        message = "Content-Length must be one non-negative decimal number of bytes (repeated only with the same value)"
    elif "Transfer-Encoding" in text:
        message = "the only Transfer-Encoding accepted is chunked"
    else:
        # h11's description, shortened: it may quote the client's bytes.
        message = f"the request is not valid HTTP/1.1 ({text[:200]})"
    # Always a 4xx: h11 hints 501 for an unknown transfer coding, but the request is what is wrong.
    return _Refused(HTTPStatus.BAD_REQUEST, BAD_REQUEST, message)


class Http11Server:
    """An ``Application`` served on ``host:port`` (0: a free port) over HTTP/1.1, within ``limits``.

    Only requests whose ``Host`` names this server (``origins.HostRule``) reach the application.
    """

    def __init__(
        self,
        app: Application,
        host: str = "127.0.0.1",
        port: int = 0,
        limits: Limits | None = None,
        name: str = "http",
        access_log: logging.Logger | None = None,
    ) -> None:
        self.app = app
        self.limits = limits or Limits()
        self.name = name
        self.access_log = access_log or log  # a line per answer, at INFO
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.listener = socket.create_server((host, port), family=family, backlog=socket.SOMAXCONN)
        self.listener.settimeout(ACCEPT_POLL_S)
        self.host = host
        self.port = int(self.listener.getsockname()[1])
        self.host_rule = HostRule(port=self.port, bound=host)
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._serving: set[socket.socket] = set()
        self._turning_away = 0
        self._thread = threading.Thread(target=self._accept_loop, name=name, daemon=True)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def connections(self) -> int:
        """Connections being served now (not counting those being turned away)."""
        with self._lock:
            return len(self._serving)

    def start(self) -> Http11Server:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop accepting, and close every open connection (a request being served gets no answer)."""
        self._stopping.set()
        with contextlib.suppress(OSError):
            # Wakes a blocked accept at once on Linux (the poll timeout is the fallback elsewhere).
            self.listener.shutdown(socket.SHUT_RDWR)
        if self._thread.is_alive():
            self._thread.join(10)
        self.listener.close()
        with self._lock:
            serving = list(self._serving)
        for sock in serving:
            # Wakes the connection's thread from its blocking read; it closes the socket itself.
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def _accept_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                sock, address = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                if self._stopping.is_set():
                    return
                # Out of file descriptors, say: let connections finish before accepting more.
                log.exception("%s: accept failed", self.name)
                time.sleep(ACCEPT_POLL_S)
                continue
            with self._lock:
                full = len(self._serving) >= self.limits.max_connections
                if full and self._turning_away >= self.limits.max_connections:
                    # Even the 503 answers are at their cap: drop the connection outright.
                    sock.close()
                    continue
                if full:
                    self._turning_away += 1
                else:
                    self._serving.add(sock)
            target = self._turn_away if full else self._serve
            threading.Thread(target=target, args=(sock, address), name=f"{self.name}-connection", daemon=True).start()

    def _serve(self, sock: socket.socket, address: tuple[str, int]) -> None:
        try:
            _Connection(self, sock, str(address[0])).run()
        except Exception:
            log.exception("%s: connection from %s failed", self.name, address[0])
        finally:
            with self._lock:
                self._serving.discard(sock)
            sock.close()

    def _turn_away(self, sock: socket.socket, address: tuple[str, int]) -> None:
        try:
            connection = _Connection(self, sock, str(address[0]))
            connection.refuse(
                _Refused(
                    HTTPStatus.SERVICE_UNAVAILABLE,
                    TOO_MANY_CONNECTIONS,
                    f"this local server already serves {self.limits.max_connections} connections: retry later",
                )
            )
        except Exception:
            log.exception("%s: turning away %s failed", self.name, address[0])
        finally:
            with self._lock:
                self._turning_away -= 1
            sock.close()


def _length(headers: dict[str, str], data: bytes, head_only: bool) -> int:
    """The Content-Length to send: the body's, or for a HEAD the application's own (what a GET would send)."""
    if head_only and not data:
        given = next((value for name, value in headers.items() if name.lower() == "content-length"), "")
        if given.isdigit():
            return int(given)
    return len(data)


class _Connection:
    """One client connection: h11's state machine over a blocking socket, with the server's deadlines."""

    def __init__(self, server: Http11Server, sock: socket.socket, client: str) -> None:
        self.server = server
        self.limits = server.limits
        self.sock = sock
        self.client = client
        self.h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=self.limits.max_head_bytes)
        # Headers and body go out as one write, but a keep-alive client's next request should not wait for a
        # delayed ACK either.
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def run(self) -> None:
        """Serve requests until the client closes, idles out, or a request leaves the connection unusable."""
        while True:
            try:
                request = self._read_head()
            except _Refused as refused:
                self.refuse(refused)
                return
            if request is None or not self._serve(request):
                return
            self.h11.start_next_cycle()

    # -- reading ---------------------------------------------------------------------------------------------------
    def _recv(self, timeout: float) -> bytes | None:
        """At most ``RECV_BYTES``; ``b""`` at the end of the stream; None when nothing came within ``timeout``."""
        self.sock.settimeout(max(timeout, 0.001))
        try:
            return self.sock.recv(RECV_BYTES)
        except TimeoutError:
            return None
        except OSError:
            return b""

    def _read_head(self) -> h11.Request | None:
        """The next request's head; None when the client closed or sent nothing for ``idle_timeout_s``.

        Raises:
            _Refused: the head is malformed (400), too large (431) or not complete in time (408).
        """
        fed = len(self.h11.trailing_data[0])  # bytes of this head (and maybe more) already received
        deadline = time.monotonic() + self.limits.header_timeout_s if fed else None
        while True:
            try:
                event = self.h11.next_event()
            except h11.RemoteProtocolError as error:
                raise _protocol_refusal(error, self.limits) from error
            if isinstance(event, h11.Request):
                # h11 bounds a head only while it is incomplete: one arriving whole in a single read is measured here.
                if fed - len(self.h11.trailing_data[0]) > self.limits.max_head_bytes:
                    raise _head_too_large(self.limits)
                return event
            if event is not h11.NEED_DATA:
                return None  # ConnectionClosed (or PAUSED, which a server that answers in order never sees)
            if deadline is None:
                data = self._recv(self.limits.idle_timeout_s)
                if not data:
                    return None
                deadline = time.monotonic() + self.limits.header_timeout_s
            else:
                data = self._recv(deadline - time.monotonic())
                if data is None:
                    raise _Refused(
                        HTTPStatus.REQUEST_TIMEOUT,
                        REQUEST_TIMEOUT,
                        f"the request line and headers did not arrive within {self.limits.header_timeout_s:g} s",
                    )
            fed += len(data)
            self.h11.receive_data(data)

    def _read_body(self) -> bytes:
        """The request's whole body, decoded from its framing.

        Raises:
            _Refused: malformed framing or an early end of stream (400), or a pause over ``body_timeout_s`` (408).
            _TooLarge: the body goes past ``max_body_bytes`` (what was read so far is dropped).
        """
        body = bytearray()
        while True:
            try:
                event = self.h11.next_event()
            except h11.RemoteProtocolError as error:
                raise _protocol_refusal(error, self.limits) from error
            if isinstance(event, h11.Data):
                if len(body) + len(event.data) > self.limits.max_body_bytes:
                    raise _TooLarge
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                return bytes(body)
            elif event is h11.NEED_DATA:
                data = self._recv(self.limits.body_timeout_s)
                if data is None:
                    raise _Refused(
                        HTTPStatus.REQUEST_TIMEOUT,
                        REQUEST_TIMEOUT,
                        f"no part of the request body arrived for {self.limits.body_timeout_s:g} s",
                    )
                self.h11.receive_data(data)
            else:
                raise _Refused(HTTPStatus.BAD_REQUEST, BAD_REQUEST, "the connection ended inside the request body")

    # -- serving ---------------------------------------------------------------------------------------------------
    def _serve(self, request: h11.Request) -> bool:
        """Answer one request; True when the connection can carry the next one."""
        method = request.method.decode("ascii")
        target = request.target.decode("ascii", errors="replace")
        hosts = [value for name, value in request.headers if name == b"host"]
        framing = {name for name, _ in request.headers if name in (b"content-length", b"transfer-encoding")}
        pairs = tuple((name.decode("latin-1"), value.decode("latin-1")) for name, value in request.headers.raw_items())
        head = Head(method=method, target=target, headers=dict(pairs), client=self.client, pairs=pairs)
        length = next((int(value) for name, value in request.headers if name == b"content-length"), None)
        if b"transfer-encoding" not in framing and not length:
            # No body: h11 ends the message without reading, and the connection stays usable whatever the answer.
            self.h11.next_event()
        if request.http_version not in (b"1.0", b"1.1"):
            message = f"HTTP/{request.http_version.decode()} is not served: send HTTP/1.1"
            return self.refuse(_Refused(HTTPStatus.BAD_REQUEST, BAD_REQUEST, message), request)
        if len(hosts) != 1:
            return self.refuse(_Refused(HTTPStatus.BAD_REQUEST, BAD_REQUEST, "send exactly one Host header"), request)
        if not self.server.host_rule.allows(hosts[0].decode("latin-1")):
            return self.refuse(_Refused(HOST_STATUS, HOST_CODE, self.server.host_rule.message()), request)
        if len(framing) == 2:
            # Two framings for one body is how requests are smuggled past a proxy: accept neither.
            message = "send either Content-Length or Transfer-Encoding: chunked, not both"
            return self.refuse(_Refused(HTTPStatus.BAD_REQUEST, BAD_REQUEST, message), request)
        try:
            decided = self.server.app.head(head)
        except Exception:
            log.exception("%s failed on %s %s", self.server.name, method, target)
            decided = INTERNAL_ERROR
        if isinstance(decided, tuple):
            return self._answer(request, decided)
        if length is not None and length > self.limits.max_body_bytes:
            return self._answer(request, self.server.app.too_large())
        if self.h11.they_are_waiting_for_100_continue:
            self._send(self.h11.send(h11.InformationalResponse(status_code=HTTPStatus.CONTINUE, headers=[])))
        try:
            body = self._read_body() if self.h11.their_state is h11.SEND_BODY else b""
        except _Refused as refused:
            return self.refuse(refused, request)
        except _TooLarge:
            return self._answer(request, self.server.app.too_large())
        try:
            response = decided(body)
        except Exception:
            log.exception("%s failed on %s %s", self.server.name, method, target)
            response = INTERNAL_ERROR
        return self._answer(request, response)

    def refuse(self, refused: _Refused, request: h11.Request | None = None) -> bool:
        """Answer with a refusal and close the connection; False, for ``_serve``'s callers."""
        self._answer(request, self.server.app.refusal(refused.status, refused.code, refused.message), close=True)
        return False

    def _answer(self, request: h11.Request | None, response: Response, close: bool = False) -> bool:
        """Send ``response``; True when the connection can carry the next request.

        The connection is closed when asked to, when the client asked for it, or when the request's body was not
        read to its end (its remaining bytes cannot be told from a next request).
        """
        unread = self.h11.their_state not in (h11.DONE, h11.MUST_CLOSE, h11.CLOSED)
        close = close or unread
        if self.h11.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            self._close(linger=unread)
            return False
        status, headers, data = response
        head_only = request is not None and request.method == b"HEAD"
        # h11 takes a 2xx to CONNECT as the switch to a tunnel: this server never switches protocols.
        tunnel = request is not None and request.method == b"CONNECT" and 200 <= status < 300
        event = None if tunnel else self._response_event(status, headers, _length(headers, data, head_only), close)
        if event is None:
            log.error("unsendable response headers or status %r from %s", status, self.server.name)
            status, headers, data = INTERNAL_ERROR
            event = self._response_event(status, headers, len(data), close)
            assert event is not None
        # The access log line goes first, so that it is written by the time the client has its answer.
        if self.server.access_log.isEnabledFor(logging.INFO):
            line = f"{request.method.decode()} {request.target.decode('ascii', 'replace')}" if request else "-"
            self.server.access_log.info('%s "%s" %d %d', self.client, line, status, len(data))
        try:
            out = self.h11.send(event) or b""
            if data and not head_only and status not in NO_BODY_STATUSES:
                out += self.h11.send(h11.Data(data=data)) or b""
            out += self.h11.send(h11.EndOfMessage()) or b""
            self._send(out)
        except (OSError, h11.LocalProtocolError):
            self._close(linger=False)
            return False
        if self.h11.our_state is h11.MUST_CLOSE:
            self._close(linger=unread)
            return False
        return True

    @staticmethod
    def _response_event(status: int, headers: dict[str, str], length: int, close: bool) -> h11.Response | None:
        """h11's response event, or None when the status or a header cannot be sent (h11 validates both)."""
        # The server frames the body itself: a handler's own framing headers would contradict it.
        sent = [(name, value) for name, value in headers.items() if name.lower() not in _FRAMING_HEADERS]
        sent.append(("Content-Length", str(length)))
        if close:
            sent.append(("Connection", "close"))
        try:
            reason = HTTPStatus(status).phrase.encode()
        except ValueError:
            reason = b""
        try:
            return h11.Response(status_code=status, headers=sent, reason=reason)
        except (h11.LocalProtocolError, TypeError, ValueError):
            return None

    def _send(self, data: bytes | None) -> None:
        if data:
            self.sock.settimeout(self.limits.body_timeout_s)
            self.sock.sendall(data)

    def _close(self, linger: bool) -> None:
        """Close our side; with ``linger``, first read and drop what the client still sends, for ``linger_s`` at
        most, so that closing with unread bytes does not reset the connection before the client read the answer."""
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_WR)
        if not linger:
            return
        deadline = time.monotonic() + self.limits.linger_s
        scratch = bytearray(RECV_BYTES)
        while (left := deadline - time.monotonic()) > 0:
            self.sock.settimeout(left)
            try:
                if not self.sock.recv_into(scratch):
                    return
            except OSError:
                return
