"""The local AWS endpoint's guard (modelrun_local.endpoint): requests signed by botocore itself, then changed the
ways a forger or a hostile page would change them, checked against a stand-in for moto's app."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import pytest
from botocore.auth import HmacV1QueryAuth, S3SigV4Auth, S3SigV4QueryAuth, SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from moto.core.request import PRESERVED_HEADER_NAMES_ENVIRON_KEY

from modelrun_local.endpoint import AwsEndpointGuard, LocalCredentials, WsgiOverHttp11
from modelrun_local.http11 import Head
from modelrun_local.origins import HostRule

PORT = 5001
ENDPOINT = f"http://127.0.0.1:{PORT}"
PAGE = "http://127.0.0.1:3000"
CREDENTIALS = LocalCredentials("AKIAEXAMPLEEXAMPLE23", "the-local-secret-access-key-of-this-stack")
SIGNED_AT = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC).timestamp()


class Moto:
    """Stands in for moto's app: answers 200 and remembers what reached it."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, bytes]] = []

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        self.seen.append((environ["REQUEST_METHOD"], environ["wsgi.input"].read()))
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"moto"]


@pytest.fixture
def moto() -> Moto:
    return Moto()


def guard(moto: Moto, now: float = SIGNED_AT + 5) -> AwsEndpointGuard:
    return AwsEndpointGuard(moto, CREDENTIALS, HostRule(PORT), frozenset({PAGE}), clock=lambda: now)


def sign(request: AWSRequest, signer: Any) -> AWSRequest:
    """Sign as botocore would have at SIGNED_AT."""
    if isinstance(signer, HmacV1QueryAuth):
        # A V2 URL carries its expiry time where V4 carries its signing time.
        signer._get_date = lambda: str(int(SIGNED_AT) + int(signer._expires))  # type: ignore[method-assign]
    frozen = datetime.fromtimestamp(SIGNED_AT, UTC).replace(tzinfo=None)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("botocore.auth.get_current_datetime", lambda: frozen)
        signer.add_auth(request)
    return request


def s3_request(method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None) -> AWSRequest:
    return AWSRequest(method=method, url=ENDPOINT + path, data=body, headers=headers or {})


def credentials(secret: str = CREDENTIALS.secret_access_key, key_id: str = CREDENTIALS.access_key_id) -> Credentials:
    return Credentials(key_id, secret)


def send(
    app: AwsEndpointGuard, request: AWSRequest, *, body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    """Through the guard as the endpoint's server hands it a request: the head and the body read by the HTTP server,
    the WSGI environ made by ``WsgiOverHttp11``."""
    url = urlsplit(request.url)
    target = url.path + (f"?{url.query}" if url.query else "")
    data = request.body if body is None else body
    data = data if isinstance(data, bytes) else (data or b"").encode() if isinstance(data, str) else b""
    pairs = {"Host": url.netloc, **dict(request.headers), **(headers or {})}
    pairs = {name: value for name, value in pairs.items() if name.lower() != "content-length"}
    pairs["Content-Length"] = str(len(data))
    head = Head(request.method, target, dict(pairs), "127.0.0.1", tuple(pairs.items()))
    return WsgiOverHttp11(app, "127.0.0.1", PORT).call(head, data)


def xml_code(content: bytes) -> str:
    return content.decode().split("<Code>", 1)[1].split("</Code>", 1)[0]


# -- Signature V4 in the header ----------------------------------------------------------------------------------
def test_a_put_signed_by_botocore_reaches_moto_with_its_body(moto: Moto) -> None:
    # Given an S3 PutObject signed with the stack's credentials, its payload hashed, under an awkward key
    request = s3_request("PUT", "/bucket-one/scans/a%20b%2Bc/%C3%A9t%C3%A9.png", b"image bytes")
    sign(request, S3SigV4Auth(credentials(), "s3", "us-east-1"))

    # When the endpoint receives it
    status, _, _ = send(guard(moto), request)

    # Then moto answers it, with the body intact
    assert status == 200
    assert moto.seen == [("PUT", b"image bytes")]


def test_a_signature_made_with_another_secret_gets_s3_s_signature_error(moto: Moto) -> None:
    # Given a request signed with a guessed secret
    request = sign(s3_request("GET", "/bucket-one?list-type=2"), S3SigV4Auth(credentials("guessed"), "s3", "us-east-1"))

    # When it arrives
    status, headers, content = send(guard(moto), request)

    # Then S3's own error comes back and moto never sees it
    assert (status, xml_code(content)) == (403, "SignatureDoesNotMatch")
    assert headers["Content-Type"] == "application/xml"
    assert moto.seen == []


def test_an_unknown_access_key_id_gets_invalid_access_key_id(moto: Moto) -> None:
    request = sign(s3_request("GET", "/bucket-one"), S3SigV4Auth(credentials(key_id="AKIAOTHER"), "s3", "us-east-1"))
    status, _, content = send(guard(moto), request)
    assert (status, xml_code(content)) == (403, "InvalidAccessKeyId")


def test_a_signed_request_changed_in_transit_is_refused(moto: Moto) -> None:
    # Given a correctly signed GET of one object
    request = sign(s3_request("GET", "/bucket-one/mine.png"), S3SigV4Auth(credentials(), "s3", "us-east-1"))

    # When its path is changed to another object
    request.url = ENDPOINT + "/bucket-one/theirs.png"
    status, _, content = send(guard(moto), request)

    # Then the signature no longer matches
    assert (status, xml_code(content)) == (403, "SignatureDoesNotMatch")


def test_a_body_that_does_not_match_its_signed_hash_is_refused(moto: Moto) -> None:
    # Given a PUT signed for one body
    request = sign(
        s3_request("PUT", "/bucket-one/key.png", b"what was signed"), S3SigV4Auth(credentials(), "s3", "us-east-1")
    )

    # When another body is sent with its headers
    status, _, content = send(guard(moto), request, body=b"something else")

    # Then S3's payload error comes back
    assert (status, xml_code(content)) == (400, "XAmzContentSHA256Mismatch")
    assert moto.seen == []


def test_a_request_signed_too_long_ago_gets_request_time_too_skewed(moto: Moto) -> None:
    request = sign(s3_request("GET", "/bucket-one"), S3SigV4Auth(credentials(), "s3", "us-east-1"))
    status, _, content = send(guard(moto, now=SIGNED_AT + 16 * 60), request)
    assert (status, xml_code(content)) == (403, "RequestTimeTooSkewed")


@pytest.mark.parametrize(
    "payload_hash", ["UNSIGNED-PAYLOAD", "STREAMING-UNSIGNED-PAYLOAD-TRAILER", "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"]
)
def test_s3_s_literal_payload_hashes_are_signed_as_themselves(moto: Moto, payload_hash: str) -> None:
    # Given a PUT whose x-amz-content-sha256 is one of S3's literal values, as botocore sets it before signing
    body = b"a\r\nx\r\n0\r\nx-amz-checksum-crc32:AAAAAA==\r\n\r\n"
    headers = {"X-Amz-Content-SHA256": payload_hash, "Content-Encoding": "aws-chunked"}
    request = sign(
        s3_request("PUT", "/bucket-one/streamed.png", body, headers), S3SigV4Auth(credentials(), "s3", "us-east-1")
    )

    # When it arrives, and again with that header swapped for another literal
    accepted = send(guard(moto), request)[0]
    swapped = "UNSIGNED-PAYLOAD" if payload_hash != "UNSIGNED-PAYLOAD" else "STREAMING-UNSIGNED-PAYLOAD-TRAILER"
    status, _, content = send(guard(moto), request, headers={"X-Amz-Content-SHA256": swapped})

    # Then the body is not hashed (it is not what the literal stands for) but the literal itself is signed
    assert accepted == 200
    assert (status, xml_code(content)) == (403, "SignatureDoesNotMatch")


def test_a_json_service_request_is_checked_and_refused_in_its_own_shape(moto: Moto) -> None:
    # Given a DynamoDB call signed with a wrong secret, and the same one signed right
    def call(secret: str) -> AWSRequest:
        headers = {"Content-Type": "application/x-amz-json-1.0", "X-Amz-Target": "DynamoDB_20120810.ListTables"}
        request = AWSRequest(method="POST", url=ENDPOINT + "/", data=b"{}", headers=headers)
        return sign(request, SigV4Auth(credentials(secret), "dynamodb", "us-east-1"))

    # When both arrive
    forged_status, forged_headers, forged = send(guard(moto), call("guessed"))
    good_status = send(guard(moto), call(CREDENTIALS.secret_access_key))[0]

    # Then the forged one gets DynamoDB's JSON error, the good one reaches moto
    assert (forged_status, json.loads(forged)["__type"]) == (403, "InvalidSignatureException")
    assert forged_headers["x-amzn-ErrorType"] == "InvalidSignatureException"
    assert good_status == 200


# -- presigned URLs ----------------------------------------------------------------------------------------------
def test_a_v4_presigned_get_works_until_it_expires(moto: Moto) -> None:
    # Given a URL presigned with Signature V4 for 60 seconds
    request = sign(
        s3_request("GET", "/bucket-one/result%20file.json"),
        S3SigV4QueryAuth(credentials(), "s3", "us-east-1", expires=60),
    )

    # When it is followed in time, and after
    in_time = send(guard(moto, now=SIGNED_AT + 59), request)[0]
    status, _, content = send(guard(moto, now=SIGNED_AT + 61), request)

    # Then it works, then gets S3's expiry refusal
    assert in_time == 200
    assert (status, xml_code(content)) == (403, "AccessDenied")
    assert b"Request has expired" in content


def test_a_v4_presigned_url_with_a_forged_signature_is_refused(moto: Moto) -> None:
    request = sign(s3_request("GET", "/bucket-one/result.json"), S3SigV4QueryAuth(credentials(), "s3", "us-east-1"))
    request.url = request.url.split("X-Amz-Signature=")[0] + "X-Amz-Signature=00"
    status, _, content = send(guard(moto), request)
    assert (status, xml_code(content)) == (403, "SignatureDoesNotMatch")


def test_a_v2_presigned_get_as_botocore_makes_by_default_works_and_a_forged_one_does_not(moto: Moto) -> None:
    # Given a URL presigned the way botocore presigns S3 unless told s3v4 (the functions' result links)
    request = sign(s3_request("GET", "/bucket-one/a%20b.json"), HmacV1QueryAuth(credentials(), expires=60))
    assert "AWSAccessKeyId=" in request.url

    # When it is followed, forged, and followed late
    good = send(guard(moto), request)[0]
    forged_request = s3_request(
        "GET", urlsplit(request.url).path + "?" + urlsplit(request.url).query.replace("Signature=", "Signature=AA")
    )
    forged_status, _, forged = send(guard(moto), forged_request)
    late_status, _, late = send(guard(moto, now=SIGNED_AT + 61), request)

    # Then only the genuine URL in time reaches moto
    assert good == 200
    assert (forged_status, xml_code(forged)) == (403, "SignatureDoesNotMatch")
    assert (late_status, xml_code(late)) == (403, "AccessDenied")


def test_a_presigned_put_is_bound_to_the_content_type_it_was_signed_for(moto: Moto) -> None:
    # Given a PUT presigned for image/png (the header signed with the URL)
    request = s3_request("PUT", "/bucket-one/upload.png", headers={"Content-Type": "image/png"})
    sign(request, S3SigV4QueryAuth(credentials(), "s3", "us-east-1"))

    # When the upload comes as image/png, and as text/html
    png = send(guard(moto), request, body=b"png")[0]
    html_status, _, html = send(guard(moto), request, body=b"<script>", headers={"Content-Type": "text/html"})

    # Then only the signed type is taken
    assert png == 200
    assert (html_status, xml_code(html)) == (403, "SignatureDoesNotMatch")


# -- anonymous requests, SigV2 headers ---------------------------------------------------------------------------
def test_an_anonymous_s3_request_gets_access_denied(moto: Moto) -> None:
    status, _, content = send(guard(moto), s3_request("GET", "/bucket-one?list-type=2"))
    assert (status, xml_code(content)) == (403, "AccessDenied")
    assert moto.seen == []


def test_an_anonymous_json_request_gets_missing_authentication_token(moto: Moto) -> None:
    headers = {"Content-Type": "application/x-amz-json-1.0", "X-Amz-Target": "DynamoDB_20120810.ListTables"}
    status, _, content = send(guard(moto), AWSRequest(method="POST", url=ENDPOINT + "/", data=b"{}", headers=headers))
    assert (status, json.loads(content)["__type"]) == (403, "MissingAuthenticationTokenException")


def test_a_signature_v2_header_is_not_supported(moto: Moto) -> None:
    request = s3_request(
        "GET", "/bucket-one", headers={"Authorization": f"AWS {CREDENTIALS.access_key_id}:c2lnbmF0dXJl"}
    )
    status, _, content = send(guard(moto), request)
    assert (status, xml_code(content)) == (400, "InvalidRequest")


# -- Host, Origin and moto's routes ------------------------------------------------------------------------------
def test_a_cors_preflight_from_the_page_reaches_moto_unsigned_and_from_another_origin_does_not(moto: Moto) -> None:
    # Given the preflight of a presigned PUT, from the page and from elsewhere
    preflight = {"Access-Control-Request-Method": "PUT"}
    from_page = s3_request("OPTIONS", "/bucket-one/up.png", headers={**preflight, "Origin": PAGE})
    from_elsewhere = s3_request(
        "OPTIONS", "/bucket-one/up.png", headers={**preflight, "Origin": "https://evil.example"}
    )

    # When both arrive
    page_status = send(guard(moto), from_page)[0]
    status, headers, content = send(guard(moto), from_elsewhere)

    # Then the page's goes to moto (S3 answers preflights from the bucket's CORS rules); the other is refused here
    assert page_status == 200
    assert (status, json.loads(content)["error"]["code"]) == (403, "origin_not_allowed")
    assert "Access-Control-Allow-Origin" not in headers
    assert moto.seen == [("OPTIONS", b"")]


def test_moto_s_admin_routes_are_not_found_even_signed(moto: Moto) -> None:
    # Given a reset signed with the stack's own credentials
    request = sign(s3_request("POST", "/moto-api/reset"), S3SigV4Auth(credentials(), "s3", "us-east-1"))

    # When it arrives
    status, _, content = send(guard(moto), request)

    # Then the route does not exist here
    assert (status, json.loads(content)["error"]["code"]) == (404, "not_found")
    assert moto.seen == []


def test_a_request_for_another_host_is_misdirected(moto: Moto) -> None:
    request = sign(s3_request("GET", "/bucket-one"), S3SigV4Auth(credentials(), "s3", "us-east-1"))
    status, _, content = send(guard(moto), request, headers={"Host": "rebound.example:5001"})
    assert (status, json.loads(content)["error"]["code"]) == (421, "invalid_host")


def test_a_refusal_to_the_page_carries_its_origin_so_the_page_can_read_it(moto: Moto) -> None:
    request = s3_request("PUT", "/bucket-one/up.png", headers={"Origin": PAGE})
    status, headers, _ = send(guard(moto), request)
    assert (status, headers["Access-Control-Allow-Origin"]) == (403, PAGE)


# -- credentials -------------------------------------------------------------------------------------------------
def test_generated_credentials_look_like_aws_ones_and_differ_at_every_start() -> None:
    first, second = LocalCredentials.generate(), LocalCredentials.generate()
    assert first.access_key_id.startswith("AKIA")
    assert len(first.access_key_id) == 20
    assert first.access_key_id.isalnum()
    assert len(first.secret_access_key) == 40
    assert first != second
    assert first.environment() == {
        "AWS_ACCESS_KEY_ID": first.access_key_id,
        "AWS_SECRET_ACCESS_KEY": first.secret_access_key,
    }


# -- the WSGI environ ------------------------------------------------------------------------------------------
def test_the_environ_joins_repeated_headers_and_keeps_only_s3_metadata_underscores() -> None:
    # Given a head with a repeated header, an underscored name that could pose as a dashed one, and S3 metadata
    # spelt with underscores (one of them beside its dashed twin)
    pairs = (
        ("Host", f"127.0.0.1:{PORT}"),
        ("X-Amz-Acl", "private"),
        ("x-forwarded-for", "10.0.0.1"),
        ("x-forwarded-for", "10.0.0.2"),
        ("X_Amz_Acl", "public-read"),
        ("x-amz-meta-scan_id", "s-1"),
        ("x-amz-meta-site-name", "dashed"),
        ("x-amz-meta-site_name", "underscored"),
        ("Content-Type", "image/png"),
    )
    head = Head("PUT", "/bucket/a%20b.png?x=1", dict(pairs), "127.0.0.1", pairs)

    # When the endpoint makes its environ
    environ = WsgiOverHttp11(Moto(), "127.0.0.1", PORT).environ(head, b"body")

    # Then the repeat is joined, the poser is dropped, the metadata keeps its spelling unless a dashed twin exists
    assert environ["HTTP_X_FORWARDED_FOR"] == "10.0.0.1,10.0.0.2"
    assert environ["HTTP_X_AMZ_ACL"] == "private"
    assert environ["HTTP_X_AMZ_META_SCAN_ID"] == "s-1"
    assert environ["HTTP_X_AMZ_META_SITE_NAME"] == "dashed"
    assert environ[PRESERVED_HEADER_NAMES_ENVIRON_KEY] == {"HTTP_X_AMZ_META_SCAN_ID": "x-amz-meta-scan_id"}
    assert (environ["CONTENT_TYPE"], environ["PATH_INFO"]) == ("image/png", "/bucket/a b.png")
    assert environ["QUERY_STRING"] == "x=1"
    assert environ["RAW_URI"] == "/bucket/a%20b.png?x=1"
    assert environ["wsgi.input"].read() == b"body"
