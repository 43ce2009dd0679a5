"""The error report on the local stack: a batch with several kinds of bad images, read over HTTP, paged, and
downloaded as the CSV and JSON-lines files the stack writes when the batch ends (also through the CLI)."""

from __future__ import annotations

import csv
import io
import json
import secrets
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import requests

from modelrun_cli.main import run
from modelrun_local.runtime import LocalRuntime
from tests.integration.conftest import API_KEY, MAX_IMAGE_BYTES, Api, sample
from tests.integration.helpers import upload, wait_for

FIELDS = ["item", "key", "code", "message", "attempts", "last_attempt_at"]


def bad_images(prefix: str) -> dict[str, tuple[bytes | None, str]]:
    """key -> (bytes to upload, or None for a key with no object; the code its outcome must have)."""
    return {
        f"{prefix}/corrupt.png": (b"\x89PNG\r\n\x1a\n not really a PNG", "invalid_image"),
        f"{prefix}/not-an-image.png": (b"just some text, no image at all", "invalid_image"),
        f"{prefix}/document.png": (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\n", "unsupported_media_type"),
        f"{prefix}/huge.png": (b"\x89PNG\r\n\x1a\n" + b"\0" * MAX_IMAGE_BYTES, "image_too_large"),
        f"{prefix}/missing.png": (None, "image_not_found"),
    }


def submit_mixed(api: Api, s3: Any, bucket: str) -> tuple[str, dict[str, str]]:
    """Four good samples and five bad images, interleaved, in chunks of 3; the batch id and key -> expected code."""
    prefix = f"error-report/{secrets.token_hex(4)}"
    bad = bad_images(prefix)
    good = {f"{prefix}/good-{digit}.png": sample(digit).read_bytes() for digit in (1, 3, 5, 7)}
    upload(s3, bucket, {**good, **{key: body for key, (body, _) in bad.items() if body is not None}})
    keys = [key for pair in zip(good, list(bad)[:4], strict=True) for key in pair] + list(bad)[4:]
    answer = api.post("/batches", json={"images": keys, "chunk_size": 3})
    assert answer.status_code == 202, answer.text
    return answer.json()["batch_id"], {key: code for key, (_, code) in bad.items()}


@pytest.fixture(scope="module")
def mixed(api: Api, s3: Any, images_bucket: str) -> tuple[str, dict[str, str]]:
    batch_id, expected = submit_mixed(api, s3, images_bucket)
    assert wait_for(api, batch_id)["status"] == "COMPLETED_WITH_ERRORS"
    return batch_id, expected


def report(api: Api, batch_id: str, **query: str) -> dict[str, Any]:
    answer = api.get(f"/batches/{batch_id}/errors", params=query)
    assert answer.status_code == 200, answer.text
    document: dict[str, Any] = answer.json()
    return document


def every_entry(api: Api, batch_id: str, limit: int) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = []
    token: str | None = None
    for _ in range(100):
        page = report(api, batch_id, limit=str(limit), **({"next_token": token} if token else {}))
        assert len(page["errors"]) <= limit
        entries += page["errors"]
        token = page["next_token"]
        if token is None:
            return entries
    raise AssertionError("the error report kept handing out next_token")


def test_the_report_lists_each_bad_image_with_its_code_message_attempt_and_time(
    api: Api, mixed: tuple[str, dict[str, str]]
) -> None:
    # Given a finished batch with five bad images of four kinds among nine
    batch_id, expected = mixed

    # When its error report is read
    document = report(api, batch_id)

    # Then every bad image is listed once, with its code, a message saying why, its attempt and a time
    entries = document["errors"]
    assert {entry["key"]: entry["code"] for entry in entries} == expected
    assert [entry["item"] for entry in entries] == sorted(entry["item"] for entry in entries)
    for entry in entries:
        assert list(entry) == FIELDS
        assert entry["message"]
        assert entry["attempts"] == 1
        assert datetime.fromisoformat(entry["last_attempt_at"].replace("Z", "+00:00"))
    assert (document["status"], document["failed"], document["next_token"]) == ("COMPLETED_WITH_ERRORS", 5, None)


def test_the_summary_counts_each_code(api: Api, mixed: tuple[str, dict[str, str]]) -> None:
    batch_id, _ = mixed
    document = report(api, batch_id)
    assert document["summary"] == {
        "invalid_image": 2,
        "unsupported_media_type": 1,
        "image_too_large": 1,
        "image_not_found": 1,
    }
    assert document["summary_complete"] is True


def test_paging_with_a_limit_of_two_returns_every_bad_image_once(api: Api, mixed: tuple[str, dict[str, str]]) -> None:
    batch_id, expected = mixed
    entries = every_entry(api, batch_id, limit=2)
    assert sorted(entry["key"] for entry in entries) == sorted(expected)
    assert entries == report(api, batch_id)["errors"]


def test_the_csv_download_parses_to_the_report(api: Api, mixed: tuple[str, dict[str, str]]) -> None:
    # Given the report of a finished batch, with its links
    batch_id, _ = mixed
    document = report(api, batch_id)

    # When the CSV file is downloaded through its presigned link (no API key: it goes to S3)
    answer = requests.get(document["links"]["csv"], timeout=30)

    # Then it parses to the report's rows, in the report's column order
    assert answer.status_code == 200
    rows = list(csv.DictReader(io.StringIO(answer.content.decode("utf-8"))))
    assert list(rows[0]) == FIELDS
    assert rows == [{name: str(entry[name]) for name in FIELDS} for entry in document["errors"]]


def test_the_json_lines_download_equals_the_report(api: Api, mixed: tuple[str, dict[str, str]]) -> None:
    batch_id, _ = mixed
    document = report(api, batch_id)
    answer = requests.get(document["links"]["jsonl"], timeout=30)
    assert answer.status_code == 200
    assert [json.loads(line) for line in answer.text.splitlines()] == document["errors"]


def test_the_job_document_links_the_report_and_its_files(api: Api, mixed: tuple[str, dict[str, str]]) -> None:
    batch_id, _ = mixed
    links = api.get(f"/batches/{batch_id}").json()["links"]
    assert links["errors"].endswith(f"/batches/{batch_id}/errors")
    followed = api.session.get(links["errors"], timeout=60)
    assert followed.status_code == 200
    assert len(followed.json()["errors"]) == 5
    assert set(links["errors_files"]) == {"csv", "jsonl"}


def test_the_cli_downloads_both_files_and_they_match_the_report(
    stack: LocalRuntime, api: Api, mixed: tuple[str, dict[str, str]], tmp_path: Path
) -> None:
    # Given a finished batch with failures
    batch_id, _ = mixed
    entries = report(api, batch_id)["errors"]

    # When `modelrun batch errors ID --download DIR` runs
    out, err = io.StringIO(), io.StringIO()
    argv = ["batch", "errors", batch_id, "--download", str(tmp_path), "--endpoint", stack.url, "--api-key", API_KEY]
    code = run(argv, env={}, cwd=tmp_path, out=out, err=err)

    # Then both files are saved, named after the batch, and hold the report
    assert code == 0, err.getvalue()
    csv_path, jsonl_path = tmp_path / f"{batch_id}-errors.csv", tmp_path / f"{batch_id}-errors.jsonl"
    assert out.getvalue().splitlines() == [str(csv_path), str(jsonl_path)]
    assert [json.loads(line) for line in jsonl_path.read_text().splitlines()] == entries
    rows = list(csv.DictReader(io.StringIO(csv_path.read_text())))
    assert rows == [{name: str(entry[name]) for name in FIELDS} for entry in entries]


def test_a_retried_batch_reports_the_attempt_that_failed_again(api: Api, s3: Any, images_bucket: str) -> None:
    # Given a finished batch with bad images, retried without fixing them
    batch_id, expected = submit_mixed(api, s3, images_bucket)
    wait_for(api, batch_id)
    retried = api.post(f"/batches/{batch_id}/retry")
    assert retried.status_code == 202, retried.text
    assert wait_for(api, batch_id)["attempt"] == 2

    # When the report is read
    document = report(api, batch_id)

    # Then each image shows its failure on attempt 2, and the files are the second attempt's
    assert {entry["key"]: (entry["code"], entry["attempts"]) for entry in document["errors"]} == {
        key: (code, 2) for key, code in expected.items()
    }
    assert "/errors-2.csv" in document["links"]["csv"]


def test_an_unknown_batch_is_404_and_a_bad_limit_is_400(api: Api, mixed: tuple[str, dict[str, str]]) -> None:
    batch_id, _ = mixed
    unknown = api.get("/batches/b-20000101T000000-000000000000/errors")
    assert (unknown.status_code, unknown.json()["error"]["code"]) == (404, "not_found")
    bad_limit = api.get(f"/batches/{batch_id}/errors", params={"limit": "0"})
    assert (bad_limit.status_code, bad_limit.json()["error"]["code"]) == (400, "invalid_request")
    bad_token = api.get(f"/batches/{batch_id}/errors", params={"next_token": "bm90IGEgdG9rZW4"})
    assert (bad_token.status_code, bad_token.json()["error"]["code"]) == (400, "invalid_request")
