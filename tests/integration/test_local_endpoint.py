"""The local AWS endpoint against the running stack, tried as outside clients and a hostile web page would.

The AWS CLI is not in the virtualenv: clients outside the process are boto3 and plain HTTP requests signed with
botocore's signer (``test_upload_triggers.py`` runs ``aws s3 cp`` when the CLI is installed).
"""

from __future__ import annotations

import json
import re
import secrets
import socket
import stat
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import boto3
import pytest
import requests
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from modelrun_local.origins import HOST_CODE, ORIGIN_CODE
from modelrun_local.runtime import LocalRuntime
from tests.integration.conftest import Api, outside_s3, sample
from tests.integration.helpers import upload, wait_for

EVIL = "https://evil.example"


def error_code(response: requests.Response) -> str:
    """The code of an S3 XML error or of the local servers' JSON error."""
    if response.headers.get("Content-Type", "").startswith("application/json"):
        return str(response.json()["error"]["code"])
    text = response.text
    return text.split("<Code>", 1)[1].split("</Code>", 1)[0]


def submit_batch(api: Api, s3: Any, bucket: str, count: int = 3) -> str:
    prefix = f"endpoint-tests/{secrets.token_hex(4)}/"
    upload(s3, bucket, {f"{prefix}{n}.png": sample(n).read_bytes() for n in range(count)})
    response = api.post("/batches", json={"model": "digits", "s3_prefix": prefix})
    assert response.status_code == 202, response.text
    return str(response.json()["batch_id"])


@pytest.fixture(scope="module")
def finished_batch(api: Api, s3: Any, images_bucket: str) -> dict[str, Any]:
    return wait_for(api, submit_batch(api, s3, images_bucket))


# -- moto's admin routes ---------------------------------------------------------------------------------------
def test_a_cross_origin_reset_is_refused_and_the_stack_keeps_working(
    stack: LocalRuntime, api: Api, s3: Any, images_bucket: str, finished_batch: dict[str, Any]
) -> None:
    # Given a batch made before, and a hostile page's "simple" request (no preflight) to moto's reset
    headers = {"Origin": EVIL, "Content-Type": "text/plain"}

    # When it posts to /moto-api/reset
    response = requests.post(f"{stack.aws_endpoint}/moto-api/reset", headers=headers, data="x", timeout=10)

    # Then it is refused before moto sees it, without a CORS grant
    assert (response.status_code, error_code(response)) == (403, ORIGIN_CODE)
    assert "Access-Control-Allow-Origin" not in response.headers
    # and the stack still predicts, runs batches and knows the earlier one
    prediction = api.post("/predictions", data=sample(4).read_bytes(), headers={"Content-Type": "image/png"})
    assert (prediction.status_code, prediction.json()["label"]) == (200, "4")
    assert wait_for(api, submit_batch(api, s3, images_bucket))["status"] == "COMPLETED"
    earlier = api.get(f"/batches/{finished_batch['batch_id']}")
    assert (earlier.status_code, earlier.json()["status"]) == (200, "COMPLETED")


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/moto-api/reset"),
        ("POST", "/moto-api/seed?a=42"),
        ("GET", "/moto-api/"),
        ("GET", "/moto-api/data.json"),
        ("POST", "/moto-api/state-manager/set-transition"),
        ("GET", "/latest/meta-data/iam/security-credentials/"),
    ],
)
def test_moto_s_own_routes_are_not_found_even_without_an_origin(stack: LocalRuntime, method: str, path: str) -> None:
    # Given a client on this machine, no browser involved
    # When it calls one of moto's own routes
    response = requests.request(method, f"{stack.aws_endpoint}{path}", timeout=10)

    # Then the endpoint does not have it
    assert (response.status_code, error_code(response)) == (404, "not_found")


# -- authentication ----------------------------------------------------------------------------------------------
def test_an_anonymous_listing_of_the_images_bucket_is_refused(stack: LocalRuntime, images_bucket: str) -> None:
    # Given no credentials at all
    # When the bucket is listed
    response = requests.get(f"{stack.aws_endpoint}/{images_bucket}?list-type=2", timeout=10)

    # Then S3's anonymous refusal comes back, and no key
    assert (response.status_code, error_code(response)) == (403, "AccessDenied")
    assert "<Key>" not in response.text


def test_the_stack_s_presigned_link_works_and_a_forged_one_is_refused(
    stack: LocalRuntime, finished_batch: dict[str, Any]
) -> None:
    # Given the results file link the stack presigned (GET /batches/{id})
    link = finished_batch["links"]["results_file"]
    assert urlsplit(link).netloc == urlsplit(stack.aws_endpoint).netloc

    # When it is followed, and followed again with its signature replaced
    good = requests.get(link, timeout=10)
    forged = requests.get(re.sub(r"Signature=[^&]*", "Signature=00", link), timeout=10)
    anonymous = requests.get(link.split("?", 1)[0], timeout=10)

    # Then only the stack's own link gets the bytes
    assert good.status_code == 200
    assert len(good.text.splitlines()) == 3
    assert (forged.status_code, error_code(forged)) == (403, "SignatureDoesNotMatch")
    assert (anonymous.status_code, error_code(anonymous)) == (403, "AccessDenied")
    assert good.text not in (forged.text, anonymous.text)


def test_a_forged_v4_presigned_get_is_refused(stack: LocalRuntime, images_bucket: str, s3: Any) -> None:
    # Given an object, and a Signature V4 URL for it signed with another secret
    key = f"endpoint-tests/{secrets.token_hex(4)}.png"
    s3.put_object(Bucket=images_bucket, Key=key, Body=sample(1).read_bytes())
    forger = boto3.client(
        "s3",
        region_name=stack.region,
        endpoint_url=stack.aws_endpoint,
        aws_access_key_id=stack.aws_credentials.access_key_id,
        aws_secret_access_key="guessed",
        config=Config(signature_version="s3v4"),
    )
    url = forger.generate_presigned_url("get_object", Params={"Bucket": images_bucket, "Key": key})

    # When it is followed
    response = requests.get(url, timeout=10)

    # Then S3's signature error comes back, not the image
    assert (response.status_code, error_code(response)) == (403, "SignatureDoesNotMatch")


def test_boto3_with_the_printed_credentials_works_and_with_wrong_ones_gets_403(
    stack: LocalRuntime, images_bucket: str, s3: Any
) -> None:
    # Given an object in the images bucket
    key = f"endpoint-tests/{secrets.token_hex(4)}.png"
    s3.put_object(Bucket=images_bucket, Key=key, Body=b"bytes")
    outputs = stack.outputs()

    # When boto3 reads it with the stack's credentials, a wrong secret, and an unknown key id
    good = outside_s3(stack).get_object(Bucket=images_bucket, Key=key)["Body"].read()
    refused = {}
    for key_id, secret in (
        (outputs["AwsAccessKeyId"], "wrong"),
        ("AKIAIOSFODNN7EXAMPLE", outputs["AwsSecretAccessKey"]),
    ):
        client = boto3.client(
            "s3",
            region_name=stack.region,
            endpoint_url=outputs["AwsEndpoint"],
            aws_access_key_id=key_id,
            aws_secret_access_key=secret,
        )
        with pytest.raises(ClientError) as raised:
            client.get_object(Bucket=images_bucket, Key=key)
        refused[key_id] = (
            raised.value.response["ResponseMetadata"]["HTTPStatusCode"],
            raised.value.response["Error"]["Code"],
        )

    # Then only the stack's own credentials are answered, with S3's error codes otherwise
    assert good == b"bytes"
    assert refused == {
        outputs["AwsAccessKeyId"]: (403, "SignatureDoesNotMatch"),
        "AKIAIOSFODNN7EXAMPLE": (403, "InvalidAccessKeyId"),
    }


def test_a_request_signed_by_hand_with_botocore_reaches_dynamodb_and_a_wrong_signature_does_not(
    stack: LocalRuntime,
) -> None:
    # Given a DynamoDB ListTables signed with the printed credentials, and one signed with another secret
    def signed(secret: str) -> requests.Response:
        request = AWSRequest(
            method="POST",
            url=f"{stack.aws_endpoint}/",
            data=b"{}",
            headers={"Content-Type": "application/x-amz-json-1.0", "X-Amz-Target": "DynamoDB_20120810.ListTables"},
        )
        credentials = Credentials(stack.aws_credentials.access_key_id, secret)
        SigV4Auth(credentials, "dynamodb", stack.region).add_auth(request)
        return requests.post(request.url, data=request.body, headers=dict(request.headers), timeout=10)

    # When both are sent
    good, forged = signed(stack.aws_credentials.secret_access_key), signed("wrong")

    # Then the first lists the stack's tables, the second gets DynamoDB's own error shape
    assert stack.stack is not None
    assert good.status_code == 200
    assert stack.stack.ref("JobsTable") in good.json()["TableNames"]
    assert (forged.status_code, forged.json()["__type"]) == (403, "InvalidSignatureException")


# -- HTTP ------------------------------------------------------------------------------------------------------
def test_boto3_keeps_one_connection_for_its_calls_and_put_head_get_see_the_same_object(
    stack: LocalRuntime, images_bucket: str
) -> None:
    # Given an outside client whose pool holds one connection, and a body large enough that botocore sends
    # "Expect: 100-continue" before it
    credentials = stack.aws_credentials
    client = boto3.client(
        "s3",
        region_name=stack.region,
        endpoint_url=stack.aws_endpoint,
        aws_access_key_id=credentials.access_key_id,
        aws_secret_access_key=credentials.secret_access_key,
        config=Config(max_pool_connections=1),
    )
    key, body = f"endpoint-tests/{secrets.token_hex(4)}.bin", secrets.token_bytes(300_000)
    sockets = set()

    # When it writes the object, asks for its head, and reads it back
    client.put_object(Bucket=images_bucket, Key=key, Body=body, Metadata={"scan_id": "s-1"})
    for _ in range(3):
        head = client.head_object(Bucket=images_bucket, Key=key)
        got = client.get_object(Bucket=images_bucket, Key=key)
        read = got["Body"].read()
        pool = client._endpoint.http_session._manager.connection_from_url(stack.aws_endpoint)
        sockets.update(
            connection.sock.getsockname() for connection in list(pool.pool.queue) if connection and connection.sock
        )

    # Then the head gives the object's real length (not the empty HEAD body's), the metadata keeps its
    # underscore, and every call went over the same open connection
    assert head["ContentLength"] == len(body) == len(read)
    assert read == body
    assert head["Metadata"] == {"scan_id": "s-1"}
    assert len(sockets) == 1


def test_a_request_body_over_the_endpoint_s_limit_is_refused_before_it_is_read(
    stack: LocalRuntime, images_bucket: str
) -> None:
    # Given a PUT announcing a body of more than the endpoint holds in memory (none of it sent)
    host, port = urlsplit(stack.aws_endpoint).hostname or "", urlsplit(stack.aws_endpoint).port or 0
    with socket.create_connection((host, port), timeout=10) as sock:
        sock.sendall(
            f"PUT /{images_bucket}/too-large.bin HTTP/1.1\r\nHost: {host}:{port}\r\n"
            f"Content-Length: {5 * 1024**3}\r\n\r\n".encode()
        )
        # When the endpoint answers
        answer = b""
        while b"</Error>" not in answer:
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk

    # Then it is S3's EntityTooLarge, at once
    assert answer.startswith(b"HTTP/1.1 400 ")
    assert b"<Code>EntityTooLarge</Code>" in answer


# -- Host and Origin ---------------------------------------------------------------------------------------------
def test_a_request_addressed_to_another_host_is_refused(stack: LocalRuntime, images_bucket: str) -> None:
    # Given a rebound DNS name pointing at the endpoint
    # When a request carries it in Host
    response = requests.get(
        f"{stack.aws_endpoint}/{images_bucket}?list-type=2", headers={"Host": "rebound.evil.example"}, timeout=10
    )

    # Then the endpoint does not answer for that name
    assert (response.status_code, error_code(response)) == (421, HOST_CODE)


def create_upload(api: Api, size: int = 10) -> dict[str, Any]:
    """A presigned PUT from POST /uploads: it pins the content type and the size."""
    response = api.post("/uploads", json={"files": [{"name": "scan.png", "content_type": "image/png", "size": size}]})
    assert response.status_code in (200, 201), response.text
    upload_: dict[str, Any] = response.json()["uploads"][0]
    return upload_


def test_the_page_s_preflight_and_presigned_put_are_answered(stack: LocalRuntime, api: Api, s3: Any) -> None:
    # Given a presigned upload URL from POST /uploads, used from the local page's origin
    image = sample(2).read_bytes()
    target = create_upload(api, size=len(image))
    page = stack.url
    preflight_headers = {
        "Origin": page,
        "Access-Control-Request-Method": "PUT",
        "Access-Control-Request-Headers": "content-type",
    }

    # When the browser's preflight and then its PUT arrive
    preflight = requests.options(target["url"], headers=preflight_headers, timeout=10)
    put = requests.put(target["url"], data=image, headers={"Origin": page, "Content-Type": "image/png"}, timeout=10)

    # Then both are allowed for the page, and the image is in the bucket
    assert preflight.status_code == 200
    assert preflight.headers["Access-Control-Allow-Origin"] in (page, "*")
    assert put.status_code == 200, put.text
    assert put.headers["Access-Control-Allow-Origin"] in (page, "*")
    path = urlsplit(target["url"]).path.lstrip("/")
    bucket, _, key = path.partition("/")
    assert s3.get_object(Bucket=bucket, Key=requests.utils.unquote(key))["Body"].read() == image


def test_a_presigned_put_of_another_size_than_signed_is_refused(stack: LocalRuntime, api: Api) -> None:
    # Given a presigned upload URL for 10 bytes
    target = create_upload(api, size=10)

    # When 11 bytes are sent to it
    put = requests.put(target["url"], data=b"x" * 11, headers={"Content-Type": "image/png"}, timeout=10)

    # Then the signature does not cover that request, as on S3
    assert (put.status_code, error_code(put)) == (403, "SignatureDoesNotMatch")


def test_another_origin_s_preflight_and_put_are_refused(stack: LocalRuntime, api: Api) -> None:
    # Given a presigned upload URL that a hostile page got hold of
    target = create_upload(api)

    # When that page's preflight and PUT arrive
    preflight = requests.options(
        target["url"], headers={"Origin": EVIL, "Access-Control-Request-Method": "PUT"}, timeout=10
    )
    put = requests.put(target["url"], data=b"x", headers={"Origin": EVIL, "Content-Type": "image/png"}, timeout=10)

    # Then neither reaches moto, and neither grants the origin anything
    for response in (preflight, put):
        assert (response.status_code, error_code(response)) == (403, ORIGIN_CODE)
        assert "Access-Control-Allow-Origin" not in response.headers


# -- what clients are told ---------------------------------------------------------------------------------------
def test_the_state_file_carries_the_credentials_and_the_instance_for_this_user_only(
    stack: LocalRuntime, tmp_path: Path
) -> None:
    # Given the running stack
    # When it writes its state file
    path = stack.write_state(tmp_path / "local.json")

    # Then the file names the credentials and this run of the stack, and only its owner can read it
    state = json.loads(path.read_text())
    assert (state["AwsAccessKeyId"], state["AwsSecretAccessKey"]) == (
        stack.aws_credentials.access_key_id,
        stack.aws_credentials.secret_access_key,
    )
    assert state["AwsAccessKeyId"].startswith("AKIA")
    assert len(state["AwsAccessKeyId"]) == 20
    assert (state["InstanceId"], state["StartedAt"]) == (stack.instance_id, stack.started_at)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
