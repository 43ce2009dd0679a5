"""POST /uploads (functions/create_uploads): presigned PUT URLs under inputs/{upload_id}/, on moto's S3."""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import parse_qs, urlsplit

import boto3
import pytest
import requests
from moto import mock_aws

from modelrun.datasets.ids import image_id_of, new_dataset_id
from modelrun.datasets.store import READY, DatasetStore
from modelrun.tenants import DEFAULT_TENANT, Tenant
from modelrun.uploads.presign import upload_id_for
from tests.batchfixtures import create_table

REPO = Path(__file__).resolve().parents[3]
HANDLER = REPO / "functions" / "create_uploads" / "app.py"
SAMPLE_EVENT = REPO / "events" / "create_uploads" / "two-images.json"
BUCKET = "modelrun-test-images"
MAX_IMAGE_BYTES = 10_000
STACK_KEY_ID = "stackkey01"  # the stack's own key: the default tenant's
PNG = {"name": "scan 1.png", "content_type": "image/png", "size": 1234}


@dataclass
class Context:
    function_name: str = "CreateUploadsFunction"
    memory_limit_in_mb: int = 512
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:123456789012:function:CreateUploadsFunction"
    aws_request_id: str = "c0ffee00-0000-4000-8000-000000000000"


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: dict[str, Any]

    @property
    def error(self) -> dict[str, Any]:
        error: dict[str, Any] = self.body["error"]
        return error


@pytest.fixture
def handler(monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    """The handler module imported as Lambda would, with its template variables, on moto."""
    for name, value in {
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "POWERTOOLS_TRACE_DISABLED": "true",
        "POWERTOOLS_SERVICE_NAME": "modelrun",
        "IMAGES_BUCKET": BUCKET,
        "MAX_IMAGE_BYTES": str(MAX_IMAGE_BYTES),
        "CORS_ALLOW_ORIGIN": "*",
        "API_KEY_ID": STACK_KEY_ID,
        "AUDIT_TABLE": "unit-audit",
        "DATASETS_TABLE": "unit-datasets",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    with mock_aws():
        boto3.client("s3").create_bucket(Bucket=BUCKET)
        create_table(boto3.resource("dynamodb"), "AuditTable", "unit-audit")
        create_table(boto3.resource("dynamodb"), "DatasetsTable", "unit-datasets")
        spec = importlib.util.spec_from_file_location("create_uploads_under_test", HANDLER)
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        monkeypatch.setitem(sys.modules, spec.name, module)  # as an import registers it (dataclasses look it up)
        spec.loader.exec_module(module)
        yield module


def post(handler: ModuleType, body: Any, headers: dict[str, str] | None = None) -> Answer:
    event = json.loads(SAMPLE_EVENT.read_text())
    event["body"] = body if isinstance(body, str) else json.dumps(body)
    event["headers"] = {**event["headers"], **(headers or {})}
    event["multiValueHeaders"] = {key: [value] for key, value in event["headers"].items()}
    event["requestContext"].setdefault("identity", {})["apiKeyId"] = STACK_KEY_ID
    response = handler.lambda_handler(event, Context())
    headers_out = {key: ", ".join(values) for key, values in (response.get("multiValueHeaders") or {}).items()}
    headers_out.update(response.get("headers") or {})
    return Answer(response["statusCode"], headers_out, json.loads(response["body"]))


# --- what a good request gets --------------------------------------------------------------------------------


def test_each_file_gets_a_put_url_for_a_key_under_inputs_of_one_new_upload(handler: ModuleType) -> None:
    # Given two image files
    files = [PNG, {"name": "knee.jpg", "content_type": "image/jpeg", "size": 99}]

    # When their uploads are asked for
    answer = post(handler, {"files": files})

    # Then each gets a key under inputs/<upload id>/, in order, with a PUT URL for that key
    assert answer.status == 200
    upload_id = answer.body["upload_id"]
    assert [item["key"] for item in answer.body["uploads"]] == [
        f"inputs/{upload_id}/scan_1.png",
        f"inputs/{upload_id}/knee.jpg",
    ]
    assert [item["name"] for item in answer.body["uploads"]] == ["scan 1.png", "knee.jpg"]
    for item in answer.body["uploads"]:
        assert urlsplit(item["url"]).path.endswith(item["key"])


def test_the_url_signs_the_content_type_and_the_declared_size_for_15_minutes(handler: ModuleType) -> None:
    # Given one PNG file
    # When its upload is asked for
    (upload,) = post(handler, {"files": [PNG]}).body["uploads"]

    # Then the URL is SigV4, valid 900 s, signing content type and length, and the client is told the header to send
    query = parse_qs(urlsplit(upload["url"]).query)
    assert query["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"]
    assert query["X-Amz-Expires"] == ["900"]
    assert query["X-Amz-SignedHeaders"] == ["content-length;content-type;host"]
    assert upload["headers"] == {"Content-Type": "image/png"}


def test_a_put_to_the_url_stores_the_file_under_its_key(handler: ModuleType) -> None:
    # Given the URL for a 1,234-byte PNG
    (upload,) = post(handler, {"files": [PNG]}).body["uploads"]

    # When the file is put there with the headers it was given
    response = requests.put(upload["url"], data=b"\x89PNG" + b"\0" * 1230, headers=upload["headers"], timeout=10)

    # Then the bucket holds it under the key, with its content type
    assert response.status_code == 200
    stored = boto3.client("s3").get_object(Bucket=BUCKET, Key=upload["key"])
    assert (stored["ContentLength"], stored["ContentType"]) == (1234, "image/png")


@pytest.mark.parametrize(
    ("name", "key_name"),
    [
        ("scan 1.png", "scan_1.png"),
        ("../../etc/passwd.PNG", "passwd.png"),
        ("C:\\scans\\left knee.jpeg", "left_knee.jpeg"),
        ("Röntgen-Übersicht.tif", "Rontgen-Ubersicht.tif"),
        ("写真.png", "image.png"),
        (".hidden.webp", "hidden.webp"),
        ("no-extension", "no-extension"),
    ],
)
def test_a_file_name_becomes_a_plain_key_name(handler: ModuleType, name: str, key_name: str) -> None:
    # Given a file name with spaces, folders, accents or other scripts
    # When its upload is asked for
    (upload,) = post(handler, {"files": [{**PNG, "name": name}]}).body["uploads"]

    # Then the key ends in a plain ASCII name, and the original name is given back as it was
    assert upload["key"].rsplit("/", 1)[1] == key_name
    assert upload["name"] == name


def test_two_files_whose_key_names_collide_get_distinct_keys(handler: ModuleType) -> None:
    # Given three files that all become "a_b.png"
    files = [{**PNG, "name": name} for name in ("a b.png", "a_b.png", "a?b.png")]

    # When their uploads are asked for
    uploads = post(handler, {"files": files}).body["uploads"]

    # Then each gets its own key
    assert [item["key"].rsplit("/", 1)[1] for item in uploads] == ["a_b.png", "a_b-2.png", "a_b-3.png"]


def test_each_call_gets_its_own_upload_id(handler: ModuleType) -> None:
    # Given the same file asked for twice
    # When both calls are answered
    first, second = (post(handler, {"files": [PNG]}).body["upload_id"] for _ in range(2))

    # Then their keys cannot overwrite each other
    assert first != second


def test_calls_with_the_same_idempotency_key_sign_the_same_keys(handler: ModuleType) -> None:
    # Given a call with an Idempotency-Key (as the CLI's staging of a batch sends)
    first = post(handler, {"files": [PNG]}, {"Idempotency-Key": "nightly-part-0"})

    # When it is retried, and another key is used
    again = post(handler, {"files": [PNG]}, {"idempotency-key": "nightly-part-0"})
    other = post(handler, {"files": [PNG]}, {"Idempotency-Key": "nightly-part-1"})

    # Then the retry has the same upload id and keys, the other key another upload
    assert first.body["upload_id"].startswith("u-k-")
    assert again.body["upload_id"] == first.body["upload_id"] != other.body["upload_id"]
    assert [item["key"] for item in again.body["uploads"]] == [item["key"] for item in first.body["uploads"]]


def test_another_tenants_same_idempotency_key_is_another_upload() -> None:
    assert upload_id_for(Tenant("acme"), "k") != upload_id_for(Tenant("beta"), "k")
    assert upload_id_for(Tenant("acme"), "k") == upload_id_for(Tenant("acme"), "k")


def test_an_idempotency_key_over_256_characters_is_400(handler: ModuleType) -> None:
    answer = post(handler, {"files": [PNG]}, {"Idempotency-Key": "k" * 257})

    assert answer.status == 400
    assert answer.error["code"] == "invalid_request"


def test_a_response_to_a_browser_on_another_origin_carries_the_cors_headers(handler: ModuleType) -> None:
    # Given a request from the deployed web page's origin
    # When it is answered
    answer = post(handler, {"files": [PNG]}, headers={"Origin": "https://d111111abcdef8.cloudfront.net"})

    # Then the browser may read the answer
    assert answer.headers["Access-Control-Allow-Origin"] in ("*", "https://d111111abcdef8.cloudfront.net")
    assert "x-api-key" in answer.headers["Access-Control-Allow-Headers"].lower()


# --- what a bad request gets ---------------------------------------------------------------------------------


def test_a_file_that_is_not_an_image_is_415_unsupported_media_type_naming_it(handler: ModuleType) -> None:
    # Given an image and a PDF
    files = [PNG, {"name": "report.pdf", "content_type": "application/pdf", "size": 500}]

    # When their uploads are asked for
    answer = post(handler, {"files": files})

    # Then nothing is signed and the error names the PDF and the accepted types
    assert (answer.status, answer.error["code"]) == (415, "unsupported_media_type")
    assert "report.pdf" in answer.error["message"]
    assert "image/png" in answer.error["message"]
    assert answer.error["details"] == {"file": 1, "name": "report.pdf"}


def test_a_file_over_max_image_bytes_is_413_image_too_large_naming_the_limit(handler: ModuleType) -> None:
    # Given a file one byte over the limit
    too_big = {**PNG, "name": "big.png", "size": MAX_IMAGE_BYTES + 1}

    # When its upload is asked for
    answer = post(handler, {"files": [too_big]})

    # Then it is refused with the limit in the message
    assert (answer.status, answer.error["code"]) == (413, "image_too_large")
    assert "big.png" in answer.error["message"]
    assert f"{MAX_IMAGE_BYTES:,}" in answer.error["message"]


def test_a_file_of_exactly_max_image_bytes_is_accepted(handler: ModuleType) -> None:
    # Given a file at the limit
    # When its upload is asked for
    answer = post(handler, {"files": [{**PNG, "size": MAX_IMAGE_BYTES}]})

    # Then it is signed
    assert answer.status == 200


def test_more_than_1000_files_in_one_call_is_400_saying_to_split_them(handler: ModuleType) -> None:
    # Given 1,001 files
    files = [{**PNG, "name": f"scan-{index}.png"} for index in range(1001)]

    # When their uploads are asked for in one call
    answer = post(handler, {"files": files})

    # Then the call is refused and told to split the list
    assert (answer.status, answer.error["code"]) == (400, "invalid_request")
    assert "1,000" in answer.error["message"]
    assert "split" in answer.error["message"]


def test_1000_files_in_one_call_are_all_signed(handler: ModuleType) -> None:
    # Given 1,000 files
    files = [{**PNG, "name": f"scan-{index}.png"} for index in range(1000)]

    # When their uploads are asked for in one call
    answer = post(handler, {"files": files})

    # Then every one gets a URL
    assert answer.status == 200
    assert len(answer.body["uploads"]) == 1000


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ("", "invalid_json"),
        ("{not json", "invalid_json"),
        ([PNG], "invalid_request"),
        ({}, "invalid_request"),
        ({"files": []}, "invalid_request"),
        ({"files": PNG}, "invalid_request"),
        ({"files": [PNG], "bucket": "elsewhere"}, "invalid_request"),
        ({"files": ["scan.png"]}, "invalid_request"),
        ({"files": [{**PNG, "name": ""}]}, "invalid_request"),
        ({"files": [{**PNG, "name": "x" * 256}]}, "invalid_request"),
        ({"files": [{**PNG, "name": "line\nbreak.png"}]}, "invalid_request"),
        ({"files": [{**PNG, "content_type": None}]}, "invalid_request"),
        ({"files": [{**PNG, "size": -1}]}, "invalid_request"),
        ({"files": [{**PNG, "size": "1234"}]}, "invalid_request"),
        ({"files": [{**PNG, "size": True}]}, "invalid_request"),
        ({"files": [{**PNG, "size": 12.5}]}, "invalid_request"),
    ],
    ids=[
        "empty-body",
        "not-json",
        "a-list",
        "no-files",
        "empty-files",
        "files-not-a-list",
        "unknown-field",
        "file-not-an-object",
        "empty-name",
        "name-too-long",
        "control-character-in-name",
        "no-content-type",
        "negative-size",
        "size-as-text",
        "size-as-boolean",
        "fractional-size",
    ],
)
def test_a_malformed_request_is_400_with_a_stable_code(handler: ModuleType, body: Any, code: str) -> None:
    # Given a request body that is not {"files": [{"name", "content_type", "size"}, ...]}
    # When it is sent
    answer = post(handler, body)

    # Then it is refused with a 400, a stable code and a message
    assert (answer.status, answer.error["code"]) == (400, code)
    assert answer.error["message"]


def test_an_octet_stream_file_is_refused_because_only_image_types_can_be_uploaded(handler: ModuleType) -> None:
    # Given a file the browser could not type
    # When its upload is asked for as application/octet-stream
    answer = post(handler, {"files": [{**PNG, "content_type": "application/octet-stream"}]})

    # Then it is refused: the page sends the image type from the file name instead
    assert (answer.status, answer.error["code"]) == (415, "unsupported_media_type")


# --- uploads into a dataset ----------------------------------------------------------------------------------


def test_uploads_named_for_a_dataset_are_its_images_with_their_ids(handler: ModuleType) -> None:
    # Given an empty dataset of the caller's (the stack's key: the default tenant)
    store = DatasetStore(handler.datasets.table).for_tenant(Tenant(DEFAULT_TENANT))
    dataset_id = new_dataset_id()
    store.create(dataset_id, "knees", {}, READY)

    # When two files are uploaded into it
    answer = post(handler, {"files": [PNG, {**PNG, "name": "b.png"}], "dataset_id": dataset_id})

    # Then each upload names its image, which the dataset has under the upload's key, counted
    assert answer.status == 200
    assert answer.body["dataset_id"] == dataset_id
    for upload in answer.body["uploads"]:
        assert upload["image_id"] == image_id_of(dataset_id, upload["key"])
        assert store.image(dataset_id, upload["image_id"])["key"] == upload["key"]
    assert store.get(dataset_id)["images"] == 2


@pytest.mark.parametrize("dataset_id", ["d-20260101T000000-000000000000", "../x", ""])
def test_uploads_for_a_dataset_that_is_not_the_callers_are_404_and_sign_nothing(
    handler: ModuleType, dataset_id
) -> None:
    # Given a dataset of another tenant (and ids of none)
    DatasetStore(handler.datasets.table).for_tenant(Tenant("other")).create(
        "d-20260101T000000-000000000000", "theirs", {}, READY
    )

    # When the stack's key uploads into it
    answer = post(handler, {"files": [PNG], "dataset_id": dataset_id})

    # Then it is not found, as a missing one
    assert answer.status == 404
    assert answer.error["code"] == "dataset_not_found"


def test_a_dataset_id_that_is_not_a_string_is_400(handler: ModuleType) -> None:
    answer = post(handler, {"files": [PNG], "dataset_id": ["d-1"]})

    assert answer.status == 400
