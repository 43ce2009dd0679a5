"""The Host and Origin rules every local server checks: loopback names with the server's own port, and the page's
origins (plus WebOrigin) for browser requests."""

from __future__ import annotations

import json

import pytest

from modelrun_local.origins import HostRule, error_body, origin_allowed, page_origins

PORT = 3000


@pytest.mark.parametrize(
    "host", ["127.0.0.1:3000", "localhost:3000", "[::1]:3000", "LOCALHOST:3000", " localhost:3000 "]
)
def test_a_loopback_name_with_the_server_port_is_allowed(host: str) -> None:
    assert HostRule(port=PORT).allows(host)


@pytest.mark.parametrize(
    "host",
    [
        "evil.example:3000",  # a name rebound to 127.0.0.1 by its owner's DNS
        "evil.example",
        "127.0.0.1",  # no port: only the scheme's default may be left out, and no local server uses it
        "localhost:3001",
        "127.0.0.2:3000",
        "localhost.evil.example:3000",
        "",
        None,
    ],
)
def test_any_other_host_is_refused(host: str | None) -> None:
    assert not HostRule(port=PORT).allows(host)


@pytest.mark.parametrize("bound", ["0.0.0.0", "::"])
def test_a_server_on_every_interface_still_answers_only_to_its_loopback_names(bound: str) -> None:
    rule = HostRule(port=PORT, bound=bound)
    assert rule.names == ("127.0.0.1", "localhost", "[::1]")
    assert not rule.allows(f"{bound}:{PORT}")


def test_a_server_bound_to_another_address_answers_to_that_address_too() -> None:
    # given a server bound to a specific non-loopback address
    rule = HostRule(port=PORT, bound="192.0.2.10")

    # then the address with the port is one of its names, beside the loopback ones
    assert rule.allows("192.0.2.10:3000")
    assert rule.allows("localhost:3000")


def test_an_ipv6_bound_address_is_matched_in_brackets() -> None:
    rule = HostRule(port=PORT, bound="fd00::1")
    assert rule.allows("[fd00::1]:3000")
    assert not rule.allows("fd00::1:3000")


def test_the_message_lists_every_host_the_server_answers_to() -> None:
    message = HostRule(port=PORT).message()
    assert all(name in message for name in ("127.0.0.1:3000", "localhost:3000", "[::1]:3000"))


def test_the_page_origins_are_the_loopback_names_with_the_gateway_port() -> None:
    assert page_origins(PORT) == {"http://127.0.0.1:3000", "http://localhost:3000", "http://[::1]:3000"}


def test_a_web_origin_is_added_without_its_trailing_slash() -> None:
    assert "https://app.example" in page_origins(PORT, " https://app.example/ ")


@pytest.mark.parametrize("web_origin", ["*", "", "  "])
def test_a_wildcard_or_empty_web_origin_adds_nothing(web_origin: str) -> None:
    assert page_origins(PORT, web_origin) == page_origins(PORT)


def test_a_request_without_origin_is_not_a_browser_page_and_is_allowed() -> None:
    assert origin_allowed(None, page_origins(PORT))


def test_a_page_origin_is_allowed_and_another_is_refused() -> None:
    allowed = page_origins(PORT, "https://app.example")
    assert origin_allowed("http://localhost:3000", allowed)
    assert origin_allowed("https://app.example/", allowed)
    assert not origin_allowed("https://evil.example", allowed)
    assert not origin_allowed("null", allowed)


def test_the_error_body_has_the_api_error_shape() -> None:
    assert json.loads(error_body("invalid_host", "why")) == {"error": {"code": "invalid_host", "message": "why"}}
