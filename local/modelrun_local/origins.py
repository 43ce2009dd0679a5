"""Which ``Host`` and ``Origin`` headers the local servers answer to.

Every local server (the gateway and its page, the WebSocket API, the AWS endpoint) listens on loopback. A web page
the user has open elsewhere can still reach loopback through the browser, two ways: by sending requests with its
own ``Origin`` (cross-site requests), or by rebinding a DNS name it controls to 127.0.0.1 (the request then carries
that name in ``Host``). So each server answers only requests whose ``Host`` names a loopback address with its own
port, and the AWS endpoint answers browser requests only from the local page's origin (and ``WebOrigin`` when the
template sets one). Non-browser clients (boto3, the AWS CLI, curl) send no ``Origin`` and are unaffected.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from http import HTTPStatus

LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")
# A server bound to every interface still answers only to its loopback names.
WILDCARDS = ("0.0.0.0", "[::]")  # noqa: S104

HOST_STATUS = HTTPStatus.MISDIRECTED_REQUEST
HOST_CODE = "invalid_host"
ORIGIN_STATUS = HTTPStatus.FORBIDDEN
ORIGIN_CODE = "origin_not_allowed"


def _bracketed(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


@dataclass(frozen=True)
class HostRule:
    """The ``Host`` values one server answers to: each loopback name (and the bound address) with its port."""

    port: int
    bound: str = "127.0.0.1"

    @property
    def names(self) -> tuple[str, ...]:
        bound = _bracketed(self.bound)
        names = LOOPBACK_NAMES if bound in LOOPBACK_NAMES or bound in WILDCARDS else (*LOOPBACK_NAMES, bound)
        return tuple(dict.fromkeys(names))

    def allows(self, host: str | None) -> bool:
        """True when ``host`` (a ``Host`` header, with or without the port) names this server.

        The port may be left out only where it is the scheme's default, which a local server never uses, so a
        ``Host`` without a port is refused.
        """
        if not host:
            return False
        return host.strip().lower() in {f"{name}:{self.port}" for name in self.names}

    def message(self) -> str:
        listed = ", ".join(f"{name}:{self.port}" for name in self.names)
        return f"this local server answers only requests addressed to {listed} (the Host header)"


def page_origins(port: int, web_origin: str | None = None) -> frozenset[str]:
    """The browser origins the local page is served from (``http://<loopback>:<port>``), plus ``web_origin`` when it
    names one origin (``*`` or an empty value adds nothing: any origin is exactly what is refused)."""
    origins = {f"http://{name}:{port}" for name in LOOPBACK_NAMES}
    if web_origin and web_origin.strip() not in ("*", ""):
        origins.add(web_origin.strip().rstrip("/"))
    return frozenset(origins)


def origin_allowed(origin: str | None, allowed: Iterable[str]) -> bool:
    """True for a request without ``Origin`` (not sent by a browser page) or from one of ``allowed``."""
    return origin is None or origin.strip().rstrip("/") in set(allowed)


def error_body(code: str, message: str) -> bytes:
    """The API's error shape, ``{"error": {"code", "message"}}``, as bytes."""
    return json.dumps({"error": {"code": code, "message": message}}).encode()
