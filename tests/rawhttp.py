"""HTTP/1.1 over a raw socket, for tests that send what an ordinary client never would: broken framing, slow or
oversized heads, smuggled requests. Responses are read one at a time, so keep-alive and pipelining can be observed."""

from __future__ import annotations

import json
import socket
from dataclasses import dataclass


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]  # names in lower case
    body: bytes

    def error(self) -> dict[str, str]:
        """The API's error, ``{"code", "message"}``."""
        error: dict[str, str] = json.loads(self.body)["error"]
        return error


def head(method: str, path: str, host: str, *lines: str) -> bytes:
    """A request head: the request line, ``Host``, then each of ``lines`` (``"Name: value"``)."""
    text = f"{method} {path} HTTP/1.1\r\nHost: {host}\r\n" + "".join(f"{line}\r\n" for line in lines) + "\r\n"
    return text.encode("latin-1")


def chunked(*pieces: bytes) -> bytes:
    """``pieces`` in the chunked transfer coding, with the last chunk."""
    return b"".join(b"%x\r\n%s\r\n" % (len(piece), piece) for piece in pieces) + b"0\r\n\r\n"


class RawClient:
    """One connection: send bytes as they are, read responses one at a time."""

    def __init__(self, port: int, timeout: float = 30.0, host: str = "127.0.0.1") -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.buffer = b""

    def send(self, data: bytes) -> RawClient:
        self.sock.sendall(data)
        return self

    def _fill(self) -> None:
        piece = self.sock.recv(65536)
        if not piece:
            raise ConnectionAbortedError(f"the server closed the connection; unread: {self.buffer[:200]!r}")
        self.buffer += piece

    def response(self, head_only: bool = False) -> RawResponse:
        """The next response (a 100 Continue included); ``head_only`` for the answer to HEAD.

        Raises:
            ConnectionAbortedError: the server closed the connection before a whole response.
            TimeoutError: nothing more came within the socket's timeout.
        """
        while b"\r\n\r\n" not in self.buffer:
            self._fill()
        raw_head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        status_line, *lines = raw_head.decode("latin-1").split("\r\n")
        headers = {name.strip().lower(): value.strip() for name, value in (line.split(":", 1) for line in lines)}
        length = 0 if head_only else int(headers.get("content-length", "0"))
        while len(self.buffer) < length:
            self._fill()
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        return RawResponse(int(status_line.split(" ")[1]), headers, body)

    def serves_another(self, request: bytes) -> bool:
        """True when ``request``, sent on this connection, is answered; False when the server closed it."""
        try:
            return self.send(request).response().status > 0
        except OSError:
            return False

    def wait_closed(self) -> bool:
        """True when the server closes the connection within the socket's timeout (what it sent is kept)."""
        try:
            while True:
                self._fill()
        except (ConnectionAbortedError, ConnectionResetError):
            return True
        except TimeoutError:
            return False

    def answered_yet(self) -> bool:
        """True when some bytes of a response (or the close) are already there, without waiting."""
        if self.buffer:
            return True
        self.sock.setblocking(False)
        try:
            self.buffer += self.sock.recv(65536) or b"<closed>"
            return True
        except BlockingIOError:
            return False
        finally:
            self.sock.setblocking(True)

    def close(self) -> None:
        self.sock.close()
