"""The local AWS endpoint: moto's server app behind the checks AWS itself makes before a request reaches a service.

moto's server answers anything: unsigned and forged requests, its admin routes (``/moto-api/reset`` wipes the
stack), any ``Origin``. ``AwsEndpointGuard`` is a WSGI middleware around moto's app that answers, in this order:

1. a ``Host`` that does not name this server on loopback: 421 ``invalid_host`` (``origins.HostRule``; DNS rebinding);
2. an ``Origin`` other than the local page's (``origins.page_origins``, with the template's ``WebOrigin``): 403
   ``origin_not_allowed``, CORS preflights included;
3. moto's own routes (``/moto-api/...``: reset, seed, state manager, dashboard; ``/favicon.ico``; the instance
   metadata stand-in under ``/latest/``): 404 ``not_found``, as the paths do not exist on AWS and nothing outside
   this process has a use for them;
4. authentication, as AWS does it: Signature V4 in the ``Authorization`` header or in the query (presigned URLs),
   recomputed with botocore's own signer from the stack's credentials (``LocalCredentials``, new at every start).
   A bad signature, an unknown key, an expired URL or a skewed clock get the service's 403 in its own error shape
   (S3's XML, the JSON of JSON services, the XML of query services). A request without a signature is AWS's
   anonymous principal: a CORS preflight (S3 answers those from the bucket's CORS rules, unsigned), or a read of an
   object that the bucket's policy or the object's ACL makes public (a page hosted in a public bucket); anything
   else anonymous gets ``AccessDenied`` / ``MissingAuthenticationToken``.

Why a middleware and not moto's IAM authentication (``INITIAL_NO_AUTH_ACTION_COUNT``): that switch is process-wide,
so it would also check the in-process calls the stack makes through ``mock_aws`` (deployment, Step Functions tasks,
the functions' DynamoDB and SQS clients), which are not HTTP and need no check; it authorizes as well, so every
caller would need IAM users and policies; and it reads only the ``Authorization`` header, so presigned URLs would
pass unchecked. Here only the server is guarded, with the exact algorithm the SDKs sign with.

Payload hashes: a hex SHA-256 is checked against the body (400 ``XAmzContentSHA256Mismatch``); S3's
``UNSIGNED-PAYLOAD`` and ``STREAMING-*`` values are taken as the literal the signature covers, as S3 does. For
``STREAMING-AWS4-HMAC-SHA256-PAYLOAD`` (chunk signatures, which botocore never sends) the seed signature is
verified and the chunk signatures are not: the seed already proves the caller holds the secret.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import json
import logging
import secrets
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any
from urllib.parse import quote, unquote, unquote_plus, urlsplit
from xml.sax.saxutils import escape

from botocore.auth import HmacV1QueryAuth, S3SigV4Auth, S3SigV4QueryAuth, SigV4Auth, SigV4QueryAuth
from botocore.awsrequest import AWSRequest, HTTPHeaders
from botocore.credentials import Credentials
from moto.core.request import (
    PRESERVED_HEADER_NAMES_ENVIRON_KEY,
    environ_key_for_header,
    should_preserve_original_header_name,
)

from modelrun_local import LOGGER, http11, origins

ALGORITHM = "AWS4-HMAC-SHA256"
AMZ_DATE = "%Y%m%dT%H%M%SZ"
MAX_SKEW_S = 15 * 60  # AWS refuses a signed request whose time is further than this from its own
MAX_EXPIRES_S = 7 * 24 * 3600  # the longest a presigned URL may be valid
ADMIN_PREFIXES = ("/moto-api", "/favicon.ico", "/latest/")
LITERAL_PAYLOADS = ("UNSIGNED-PAYLOAD", "STREAMING-")  # S3 payload hashes that are not a digest of the body
# Every sandbox keeps up to ten connections per client open (botocore's pool): more than the gateway's cap.
MAX_CONNECTIONS = 1024
ACCESS_LOG = f"{LOGGER}.aws_endpoint"  # a line per AWS request: shown by ``modelrun-local --verbose`` only

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


@dataclass(frozen=True)
class LocalCredentials:
    """The one key pair the local endpoint accepts; the functions sign with it too."""

    access_key_id: str
    secret_access_key: str

    @classmethod
    def generate(cls) -> LocalCredentials:
        """A fresh pair shaped like AWS's: ``AKIA`` and 16 base32 characters; a 40-character secret."""
        key_id = "AKIA" + base64.b32encode(secrets.token_bytes(10)).decode()
        return cls(key_id, secrets.token_urlsafe(30))

    def environment(self) -> dict[str, str]:
        """The SDKs' environment variables for this pair."""
        return {"AWS_ACCESS_KEY_ID": self.access_key_id, "AWS_SECRET_ACCESS_KEY": self.secret_access_key}


@dataclass(frozen=True)
class Refusal:
    status: int
    code: str
    message: str


UNSUPPORTED = Refusal(
    400,
    "InvalidRequest",
    "The authorization mechanism you have provided is not supported. Please use AWS4-HMAC-SHA256.",
)
MALFORMED = Refusal(400, "AuthorizationHeaderMalformed", "The authorization header or query parameters are malformed.")
EXPIRED = Refusal(403, "AccessDenied", "Request has expired")
CONTENT_MISMATCH = Refusal(
    400, "XAmzContentSHA256Mismatch", "The provided 'x-amz-content-sha256' header does not match what was computed."
)
SKEWED = Refusal(
    403, "RequestTimeTooSkewed", "The difference between the request time and the current time is too large."
)
# What each error shape calls a wrong signature, an unknown key and a missing signature.
SIGNATURE_MESSAGE = (
    "The request signature we calculated does not match the signature you provided. Check your key and signing method."
)
MISMATCH = {
    "s3": Refusal(403, "SignatureDoesNotMatch", SIGNATURE_MESSAGE),
    "json": Refusal(403, "InvalidSignatureException", SIGNATURE_MESSAGE),
    "query": Refusal(403, "SignatureDoesNotMatch", SIGNATURE_MESSAGE),
}
UNKNOWN_KEY = {
    "s3": Refusal(403, "InvalidAccessKeyId", "The AWS Access Key Id you provided does not exist in our records."),
    "json": Refusal(403, "UnrecognizedClientException", "The security token included in the request is invalid."),
    "query": Refusal(403, "InvalidClientTokenId", "The security token included in the request is invalid."),
}
ANONYMOUS = {
    "s3": Refusal(403, "AccessDenied", "Access Denied"),
    "json": Refusal(403, "MissingAuthenticationTokenException", "Missing Authentication Token"),
    "query": Refusal(403, "MissingAuthenticationToken", "Request is missing Authentication Token"),
}


@dataclass(frozen=True)
class Signed:
    """What a request claims about its signature, from its ``Authorization`` header or its query."""

    key_id: str
    date: str
    region: str
    service: str
    signed_headers: tuple[str, ...]
    signature: str
    timestamp: str
    presigned: bool
    expires_s: int = 0
    version: int = 4  # 2: an S3 URL presigned with Signature V2 (``timestamp`` is then its Expires, epoch seconds)


@dataclass(frozen=True)
class HttpRequest:
    """One request as it arrived: the path and query exactly as sent, headers by lower-case name."""

    method: str
    raw_path: str
    raw_query: str
    headers: Mapping[str, str]
    body: bytes = b""

    def query_pairs(self) -> list[tuple[str, str]]:
        pairs = []
        for part in self.raw_query.split("&") if self.raw_query else []:
            name, _, value = part.partition("=")
            pairs.append((unquote_plus(name), unquote_plus(value)))
        return pairs

    @classmethod
    def from_environ(cls, environ: dict[str, Any]) -> HttpRequest:
        """The request of a WSGI environ, its body read (and put back for the app behind)."""
        raw = str(environ.get("RAW_URI") or environ.get("REQUEST_URI") or "")
        if raw.startswith(("http://", "https://")):  # an absolute-form request line: only its path is signed
            raw = "/" + raw.split("/", 3)[3] if raw.count("/") >= 3 else "/"
        if not raw:  # a WSGI server that does not pass the request line on
            query = environ.get("QUERY_STRING")
            raw = quote(str(environ.get("PATH_INFO", ""))) + (f"?{query}" if query else "")
        raw_path, _, raw_query = raw.partition("?")
        # moto's request handler keeps the spelling of names with underscores (S3 metadata), which WSGI folds into "-".
        spelt: Mapping[str, str] = environ.get(PRESERVED_HEADER_NAMES_ENVIRON_KEY) or {}
        headers = {
            spelt.get(key, key[5:].replace("_", "-")).lower(): str(value)
            for key, value in environ.items()
            if key.startswith("HTTP_")
        }
        for key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            if environ.get(key):
                headers[key.replace("_", "-").lower()] = str(environ[key])
        stream = environ["wsgi.input"]
        length = int(environ["CONTENT_LENGTH"]) if str(environ.get("CONTENT_LENGTH") or "").isdigit() else 0
        body = stream.read(length) if length else (stream.read() if environ.get("wsgi.input_terminated") else b"")
        environ["wsgi.input"] = io.BytesIO(body)
        return cls(str(environ["REQUEST_METHOD"]).upper(), raw_path, raw_query, headers, body)


def error_shape(request: HttpRequest, service: str | None) -> str:
    """Which error shape the caller parses: ``s3`` (S3's XML), ``json`` or ``query`` (the query services' XML)."""
    if service == "s3":
        return "s3"
    content_type = request.headers.get("content-type", "")
    if "x-amz-target" in request.headers or "json" in content_type:
        return "json"
    if content_type.startswith("application/x-www-form-urlencoded"):
        return "query"
    return "s3" if service is None else "json"


def render(refusal: Refusal, shape: str) -> tuple[int, dict[str, str], bytes]:
    """A refusal as the service would word it: status, headers and body."""
    request_id = uuid.uuid4().hex.upper()[:16]
    if shape == "json":
        body = json.dumps({"__type": refusal.code, "message": refusal.message}).encode()
        headers = {"Content-Type": "application/x-amz-json-1.0", "x-amzn-ErrorType": refusal.code}
        return refusal.status, {**headers, "x-amzn-RequestId": request_id}, body
    code, message = escape(refusal.code), escape(refusal.message)
    if shape == "query":
        text = (
            f"<ErrorResponse><Error><Type>Sender</Type><Code>{code}</Code><Message>{message}</Message></Error>"
            f"<RequestId>{request_id}</RequestId></ErrorResponse>"
        )
    else:
        text = f"<Error><Code>{code}</Code><Message>{message}</Message><RequestId>{request_id}</RequestId></Error>"
    body = ('<?xml version="1.0" encoding="UTF-8"?>\n' + text).encode()
    return refusal.status, {"Content-Type": "application/xml", "x-amz-request-id": request_id}, body


# -- signatures --------------------------------------------------------------------------------------------------
def parse_signature(request: HttpRequest) -> Signed | Refusal | None:
    """The signature a request carries; None if it carries none, a Refusal if it is not a SigV4 one or is malformed."""
    authorization = request.headers.get("authorization")
    query = dict(request.query_pairs())
    if authorization is not None:
        algorithm, _, rest = authorization.strip().partition(" ")
        if algorithm != ALGORITHM:
            return UNSUPPORTED
        fields = dict(part.strip().partition("=")[::2] for part in rest.split(","))
        credential, names, signature = fields.get("Credential"), fields.get("SignedHeaders"), fields.get("Signature")
        timestamp = request.headers.get("x-amz-date")
        expires = "0"
    elif "X-Amz-Signature" in query or "X-Amz-Credential" in query:
        if query.get("X-Amz-Algorithm") != ALGORITHM:
            return UNSUPPORTED
        credential, names, signature = (
            query.get("X-Amz-Credential"),
            query.get("X-Amz-SignedHeaders"),
            query.get("X-Amz-Signature"),
        )
        timestamp, expires = query.get("X-Amz-Date"), query.get("X-Amz-Expires", "")
    elif "Signature" in query or "AWSAccessKeyId" in query:
        return _presigned_v2(query)
    else:
        return None
    scope = (credential or "").split("/")
    if not (names and signature and timestamp and len(scope) == 5 and scope[4] == "aws4_request"):
        return MALFORMED
    try:
        datetime.strptime(timestamp, AMZ_DATE)
        expires_s = int(expires)
    except ValueError:
        return MALFORMED
    if authorization is None and not 0 < expires_s <= MAX_EXPIRES_S:
        return Refusal(400, "AuthorizationQueryParametersError", "X-Amz-Expires must be between 1 and 604800 seconds")
    key_id, date, region, service, _ = scope
    return Signed(
        key_id,
        date,
        region,
        service,
        tuple(names.lower().split(";")),
        signature,
        timestamp,
        authorization is None,
        expires_s,
    )


def _presigned_v2(query: Mapping[str, str]) -> Signed | Refusal:
    """An S3 URL presigned with Signature V2, the form botocore gives ``generate_presigned_url`` for S3 unless the
    client is configured for ``s3v4`` (the functions' result links); S3 still accepts it in us-east-1."""
    key_id, signature, expires = query.get("AWSAccessKeyId"), query.get("Signature"), query.get("Expires", "")
    if not (key_id and signature and expires.isdigit()):
        return MALFORMED
    return Signed(key_id, "", "us-east-1", "s3", (), signature, expires, presigned=True, version=2)


def _v2_signature(request: HttpRequest, signed: Signed, secret: str) -> str:
    """What botocore's Signature V2 query signer gives this request with ``secret``."""

    class Presigned(HmacV1QueryAuth):
        def _get_date(self) -> str:
            return signed.timestamp  # the URL's Expires stands where a header-signed request has its Date

    # The headers the URL was signed with travel in its query; the request's own headers of those names win.
    signed_headers = {
        name.lower(): value
        for name, value in (*request.query_pairs(), *request.headers.items())
        if name.lower() in ("content-md5", "content-type") or name.lower().startswith("x-amz-")
    }
    headers = HTTPHeaders()
    for name, value in signed_headers.items():
        headers[name] = value
    signer = Presigned(Credentials(signed.key_id, secret))
    url = urlsplit(f"http://host{request.raw_path}?{request.raw_query}")
    # The signer reads repeated values with HTTPHeaders.get_all, which the stubs' Mapping does not name.
    return str(signer.get_signature(request.method, url, headers))  # type: ignore[arg-type]


def expected_signature(request: HttpRequest, signed: Signed, secret: str) -> str | None:
    """The signature botocore's signer gives this request with ``secret``; None when a signed header is missing."""
    if signed.version == 2:
        return _v2_signature(request, signed, secret)
    headers = {}
    for name in signed.signed_headers:
        if name not in request.headers:
            return None
        headers[name] = request.headers[name]
    s3 = signed.service == "s3"
    signer_class = (
        (S3SigV4QueryAuth if signed.presigned else S3SigV4Auth)
        if s3
        else (SigV4QueryAuth if signed.presigned else SigV4Auth)
    )
    signer = signer_class(Credentials(signed.key_id, secret), signed.service, signed.region)
    # S3 signs the path as the SDK encoded it, other services their path normalised and encoded once more (the
    # signer does that); encoding S3's path again here makes a client that escaped a safe character still match.
    path = quote(unquote(request.raw_path), safe="/~") if s3 else request.raw_path
    params = [
        (name, value) for name, value in request.query_pairs() if not (signed.presigned and name == "X-Amz-Signature")
    ]
    aws_request = AWSRequest(
        method=request.method,
        url=f"http://{headers.get('host', '')}{path}",
        headers=headers,
        data=request.body,
        params=params,  # type: ignore[arg-type]  # pairs, as botocore also takes them: a name may repeat
    )
    aws_request.context["timestamp"] = signed.timestamp
    canonical = signer.canonical_request(aws_request)
    return str(signer.signature(signer.string_to_sign(aws_request, canonical), aws_request))


def _same(given: str, expected: str) -> bool:
    """A constant-time comparison that also takes text a client made up (``compare_digest`` refuses non-ASCII str)."""
    return hmac.compare_digest(given.encode("utf-8", "surrogateescape"), expected.encode("utf-8", "surrogateescape"))


def authenticate(request: HttpRequest, signed: Signed, credentials: LocalCredentials, now: float) -> Refusal | None:
    """None when ``signed`` is a valid signature of ``request`` by ``credentials`` at ``now`` (epoch seconds)."""
    shape = error_shape(request, signed.service)
    if not _same(signed.key_id, credentials.access_key_id):
        return UNKNOWN_KEY[shape]
    if signed.version == 4 and ("host" not in signed.signed_headers or signed.date != signed.timestamp[:8]):
        return MISMATCH[shape]
    out_of_time = _outside_validity(signed, now)
    if out_of_time is not None:
        return out_of_time
    expected = expected_signature(request, signed, credentials.secret_access_key)
    if expected is None or not _same(expected, signed.signature):
        return MISMATCH[shape]
    payload_hash = request.headers.get("x-amz-content-sha256", "")
    digest = not signed.presigned and bool(payload_hash) and not payload_hash.startswith(LITERAL_PAYLOADS)
    if digest and not _same(payload_hash, hashlib.sha256(request.body).hexdigest()):
        return CONTENT_MISMATCH
    return None


def _outside_validity(signed: Signed, now: float) -> Refusal | None:
    """Why a signature is not valid at ``now`` (expired, not yet valid, clock skew), or None."""
    if signed.version == 2:
        return EXPIRED if now > int(signed.timestamp) else None
    signed_at = datetime.strptime(signed.timestamp, AMZ_DATE).replace(tzinfo=UTC).timestamp()
    if signed.presigned:
        if now > signed_at + signed.expires_s:
            return EXPIRED
        if signed_at > now + MAX_SKEW_S:
            return Refusal(403, "AccessDenied", "Request is not valid yet")
    elif abs(now - signed_at) > MAX_SKEW_S:
        return SKEWED
    return None


# -- anonymous requests ------------------------------------------------------------------------------------------
def public_object(raw_path: str) -> bool:
    """Whether anyone may read the object at a path-style ``/bucket/key``: the bucket's policy allows ``s3:GetObject``
    to everyone (and does not deny it), or the object's ACL is public-read. moto evaluates the policy."""
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.iam.access_control import PermissionResult
    from moto.s3.models import s3_backends

    bucket_name, _, key_name = unquote(raw_path).lstrip("/").partition("/")
    if not bucket_name or not key_name:
        return False
    backend = s3_backends[DEFAULT_ACCOUNT_ID]["aws"]
    bucket = backend.buckets.get(bucket_name)
    if bucket is None:
        return False
    permission = bucket.get_permission("s3:GetObject", f"arn:aws:s3:::{bucket_name}/{key_name}")
    if permission == PermissionResult.DENIED:
        return False
    if permission == PermissionResult.PERMITTED:
        return True
    key = bucket.keys.get(key_name)
    return bool(key is not None and key.acl is not None and key.acl.public_read)


def is_preflight(request: HttpRequest) -> bool:
    return (
        request.method == "OPTIONS"
        and "origin" in request.headers
        and "access-control-request-method" in request.headers
    )


# -- the middleware ----------------------------------------------------------------------------------------------
@dataclass
class AwsEndpointGuard:
    """The WSGI app in front of moto's: see the module docstring for what it answers itself."""

    app: WsgiApp
    credentials: LocalCredentials
    hosts: origins.HostRule
    allowed_origins: frozenset[str] = frozenset()
    clock: Callable[[], float] = time.time

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        answer = self.check(environ)
        if answer is None:
            return self.app(environ, start_response)
        status, headers, body = answer
        origin = environ.get("HTTP_ORIGIN")
        if origin and origins.origin_allowed(origin, self.allowed_origins):
            # As S3 does for a bucket's allowed origins, so the page can read why it was refused.
            headers = {**headers, "Access-Control-Allow-Origin": origin, "Vary": "Origin"}
        phrase = HTTPStatus(status).phrase
        start_response(f"{status} {phrase}", [*headers.items(), ("Content-Length", str(len(body)))])
        return [b"" if environ.get("REQUEST_METHOD") == "HEAD" else body]

    def check(self, environ: dict[str, Any]) -> tuple[int, dict[str, str], bytes] | None:
        """None to let moto answer the request; otherwise the answer (status, headers, body) the guard gives."""
        json_type = {"Content-Type": "application/json"}
        if not self.hosts.allows(environ.get("HTTP_HOST")):
            return origins.HOST_STATUS, json_type, origins.error_body(origins.HOST_CODE, self.hosts.message())
        origin = environ.get("HTTP_ORIGIN")
        if not origins.origin_allowed(origin, self.allowed_origins):
            allowed = ", ".join(sorted(self.allowed_origins)) or "the local page"
            message = f"the local AWS endpoint answers browser requests only from {allowed}, not {origin}"
            return origins.ORIGIN_STATUS, json_type, origins.error_body(origins.ORIGIN_CODE, message)
        path = str(environ.get("PATH_INFO", ""))
        if path.startswith(ADMIN_PREFIXES):
            message = "moto's own routes are not served by the local AWS endpoint"
            return HTTPStatus.NOT_FOUND, json_type, origins.error_body("not_found", message)
        request = HttpRequest.from_environ(environ)
        if is_preflight(request):
            return None  # a browser sends a preflight without credentials; S3 answers it from the bucket's CORS rules
        signed = parse_signature(request)
        if isinstance(signed, Refusal):
            return render(signed, error_shape(request, None))
        if signed is None:
            if request.method in ("GET", "HEAD") and public_object(request.raw_path):
                return None
            return render(ANONYMOUS[error_shape(request, None)], error_shape(request, None))
        refusal = authenticate(request, signed, self.credentials, self.clock())
        return None if refusal is None else render(refusal, error_shape(request, signed.service))


def _moto_app() -> Any:
    """moto's server app, finding a request's backend without reading the disk.

    moto's dispatcher lists its package folder (a ``stat`` per service, about 250) twice per request, under a lock
    every request takes: with every function's AWS calls coming through this endpoint, that was a third of its CPU.
    The list cannot change while the process runs, so it is read once.
    """
    from moto.backends import list_of_moto_modules
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

    modules = frozenset(list_of_moto_modules())

    class Dispatcher(DomainDispatcherApplication):
        def get_backend_for_host(self, host: str | None) -> Any:
            if host is None:
                return None
            if host == "moto_api" or host in modules:
                return host
            return next(
                (backend for backend, pattern in self.backend_url_patterns if pattern.match(f"http://{host}")), None
            )

    return Dispatcher(create_backend_app)


MAX_BODY_BYTES = 1024**3  # the largest request body the endpoint reads: it holds a body in memory, as moto does


class WsgiOverHttp11:
    """The guarded moto app as an ``http11.Application``: HTTP/1.1 with keep-alive, h11's parsing and its limits.

    werkzeug's development server, which moto's own ``ThreadedMotoServer`` uses, closes the connection after every
    answer, so each AWS call of every function paid a new connection and a new server thread; botocore keeps its
    connections open, and this server serves them. The environ is the one werkzeug builds (``make_environ``),
    including moto's preserved spelling of ``x-amz-meta-`` names with underscores (``MotoRequestHandler``).
    """

    def __init__(self, app: WsgiApp, host: str, port: int) -> None:
        self.app = app
        self.host, self.port = host, port

    def head(self, head: http11.Head) -> http11.BodyHandler:
        return lambda body: self.call(head, body)

    def refusal(self, status: int, code: str, message: str) -> http11.Response:
        return status, {"Content-Type": "application/json"}, origins.error_body(code, message)

    def too_large(self) -> http11.Response:
        message = f"Your proposed upload exceeds the local endpoint's maximum of {MAX_BODY_BYTES} bytes."
        return render(Refusal(400, "EntityTooLarge", message), "s3")

    def environ(self, head: http11.Head, body: bytes) -> dict[str, Any]:
        """WSGI's environ for a request, as werkzeug's ``make_environ`` builds it."""
        url = urlsplit(head.target)
        path = f"/{url.netloc}{url.path}" if url.netloc and not url.scheme else url.path
        environ: dict[str, Any] = {
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": "http",
            "wsgi.input": io.BytesIO(body),
            "wsgi.input_terminated": True,
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": True,
            "wsgi.multiprocess": False,
            "wsgi.run_once": False,
            "REQUEST_METHOD": head.method,
            "SCRIPT_NAME": "",
            "PATH_INFO": unquote(path).encode().decode("latin-1"),
            "QUERY_STRING": url.query,
            "REQUEST_URI": head.target,
            "RAW_URI": head.target,
            "REMOTE_ADDR": head.client,
            "SERVER_NAME": self.host,
            "SERVER_PORT": str(self.port),
            "SERVER_PROTOCOL": "HTTP/1.1",
        }
        spelt: dict[str, str] = {}
        for name, value in head.pairs:
            key = environ_key_for_header(name)
            if "_" in name:
                # WSGI cannot tell X_Foo from X-Foo: only S3 metadata keeps its underscores, never over a dashed name.
                if not should_preserve_original_header_name(name) or any(
                    "_" not in other and environ_key_for_header(other) == key for other, _ in head.pairs
                ):
                    continue
                spelt.setdefault(key, name)
            repeated = key in environ and key.startswith("HTTP_")
            environ[key] = f"{environ[key]},{value}" if repeated else value
        environ[PRESERVED_HEADER_NAMES_ENVIRON_KEY] = spelt
        if url.scheme and url.netloc:
            environ["HTTP_HOST"] = url.netloc
        return environ

    def call(self, head: http11.Head, body: bytes) -> http11.Response:
        answer: dict[str, Any] = {}
        written: list[bytes] = []

        def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable[..., Any]:
            answer["status"], answer["headers"] = int(status.split(" ", 1)[0]), headers
            return written.append

        chunks = self.app(self.environ(head, body), start_response)
        try:
            written.extend(chunks)
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()
        headers: dict[str, str] = {}
        for name, value in answer["headers"]:
            headers[name] = f"{headers[name]}, {value}" if name in headers and name.lower() != "set-cookie" else value
        return answer["status"], headers, b"".join(written)


@dataclass
class LocalAwsEndpoint:
    """moto's server app behind ``AwsEndpointGuard``, served by ``http11.Http11Server`` on a thread per connection
    (moto's ``ThreadedMotoServer`` uses werkzeug's development server instead: see ``WsgiOverHttp11``)."""

    credentials: LocalCredentials
    host: str = "127.0.0.1"
    port: int = 5001
    _server: http11.Http11Server | None = None
    guard: AwsEndpointGuard | None = field(default=None, init=False)

    def start(self) -> LocalAwsEndpoint:
        moto_app = _moto_app()
        # Bound first, so that the guard knows the port (0: a free one); nothing is served before start().
        application = WsgiOverHttp11(moto_app, self.host, self.port)
        limits = http11.Limits(max_body_bytes=MAX_BODY_BYTES, max_connections=MAX_CONNECTIONS)
        self._server = http11.Http11Server(
            application, self.host, self.port, limits, "aws-endpoint", logging.getLogger(ACCESS_LOG)
        )
        application.port = self._server.port
        self.guard = AwsEndpointGuard(moto_app, self.credentials, self._server.host_rule)
        application.app = self.guard
        self._server.start()
        return self

    def allow_origins(self, allowed: Iterable[str]) -> None:
        """The browser origins whose requests are answered (the page's, known once the gateway is listening)."""
        assert self.guard is not None, "start() first"
        self.guard.allowed_origins = frozenset(allowed)

    @property
    def url(self) -> str:
        assert self._server is not None, "start() first"
        return self._server.url

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None
