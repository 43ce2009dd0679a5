"""The web page (``web/``) served by the local gateway, next to the API and without an API key.

``GET /`` redirects to ``/ui/``; ``/ui/...`` are the files of ``web/``; ``/ui/config.json`` is made from the running
stack's outputs (API URL, WebSocket URL when the stack has one, and the API key: local mode only, on 127.0.0.1 —
the deployed page's config.json, written by scripts/deploy_web.py, never holds a key). The gateway's server answers
only requests whose ``Host`` names it (``modelrun_local.http11``), so a page elsewhere cannot read the key through a
rebound DNS name.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from urllib.parse import unquote

from modelrun_local.template import REPO_ROOT

WEB_ROOT = REPO_ROOT / "web"
PREFIX = "/ui"
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".md": "text/markdown; charset=utf-8",
    ".txt": "text/plain; charset=utf-8",
}

Response = tuple[int, dict[str, str], bytes]


def page_config(outputs: Mapping[str, str]) -> dict[str, str]:
    """What the page reads from config.json, from the stack's outputs."""
    config = {"apiUrl": outputs["ApiUrl"]}
    if outputs.get("WebSocketUrl"):
        config["webSocketUrl"] = outputs["WebSocketUrl"]
    if outputs.get("ApiKey"):
        config["apiKey"] = outputs["ApiKey"]
    return config


def _error(status: int, code: str, message: str) -> Response:
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    return status, {"Content-Type": "application/json"}, body


@dataclass
class WebUI:
    """A ``StaticHandler`` for ``modelrun_local.gateway.Gateway``: answers ``/`` and ``/ui/...``, nothing else."""

    outputs: Callable[[], Mapping[str, str]]
    root: Path = WEB_ROOT

    def __call__(self, method: str, path: str) -> Response | None:
        if path not in ("/", PREFIX) and not path.startswith(PREFIX + "/"):
            return None
        if method not in ("GET", "HEAD"):
            status, headers, body = _error(
                HTTPStatus.METHOD_NOT_ALLOWED, "method_not_allowed", f"{path} is a page: use GET"
            )
            return status, {**headers, "Allow": "GET, HEAD"}, body
        if path in ("/", PREFIX):
            return HTTPStatus.FOUND, {"Location": PREFIX + "/", "Content-Type": "text/plain"}, b""
        relative = unquote(path[len(PREFIX) + 1 :]) or "index.html"
        if relative == "config.json":
            body = json.dumps(page_config(self.outputs()), indent=2).encode()
            return HTTPStatus.OK, {"Content-Type": "application/json", "Cache-Control": "no-store"}, body
        root = self.root.resolve()
        target = (root / relative).resolve()
        if not target.is_relative_to(root) or not target.is_file():
            return _error(HTTPStatus.NOT_FOUND, "not_found", f"no file {relative!r} in the web page: open {PREFIX}/")
        headers = {
            "Content-Type": CONTENT_TYPES.get(target.suffix.lower(), "application/octet-stream"),
            "Cache-Control": "no-cache",
            "X-Content-Type-Options": "nosniff",
        }
        return HTTPStatus.OK, headers, target.read_bytes()
