"""The error report: GET /batches/{id}/errors (shaping, paging, summary, file links), the error files the closer
writes beside the results file, and the job document's links to both (moto S3 and the template's tables)."""

from __future__ import annotations

import base64
import copy
import csv
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlparse

import pytest

from modelrun.batches.close import BatchCloser
from modelrun.batches.store import ERROR_FIELDS, FAILED_OUTCOME, PREDICTED, QUEUED, RUNNING, Outcome
from tests.batchfixtures import (
    BUCKET,
    BatchAws,
    BatchStatusContext,
    batch_aws,
    default_tenants_store,
    import_batch_status_handler,
    with_stack_key,
)

REPO = Path(__file__).resolve().parents[3]
EVENTS = REPO / "events" / "batch_status"
BATCH = "b-20261119T101320-5a3c0e2f9b1d"
OTHER = "b-20261119T101320-77777777aaaa"

# item -> (code, message) of the failed images of the sample batch; the other items are predicted.
FAILURES = {
    1: ("invalid_image", "the bytes are not an image: PNG data is truncated"),
    3: ("image_not_found", "no object s3://images/scans/3.png: check the bucket and key"),
    4: ("invalid_image", 'a message with a comma, a "quote"\nand a line break'),
    6: ("image_too_large", "the image is 20971520 bytes; the limit is 10485760 bytes"),
    7: ("retries_exhausted", "chunk 1 kept failing: TransientFailure"),
}
TOTAL = 9


@dataclass
class Stack:
    aws: BatchAws
    app: ModuleType

    def get(self, path: str, query: dict[str, str] | None = None) -> tuple[int, Any]:
        """GET a path of this function as API Gateway delivers it: status and decoded JSON body."""
        event = copy.deepcopy(json.loads((EVENTS / "get-errors.json").read_text()))
        batch_id = path.split("/")[2]
        resource = "/batches/{batch_id}" + path[len(f"/batches/{batch_id}") :]
        event.update(path=path, resource=resource, pathParameters={"batch_id": batch_id})
        event["queryStringParameters"] = query
        event["multiValueQueryStringParameters"] = {name: [value] for name, value in query.items()} if query else None
        event["requestContext"].update(resourcePath=resource, path=f"/v1{path}")
        answer = self.app.lambda_handler(with_stack_key(event), BatchStatusContext())
        return answer["statusCode"], json.loads(answer["body"])

    def errors(self, batch_id: str = BATCH, **query: str) -> dict[str, Any]:
        status, body = self.get(f"/batches/{batch_id}/errors", query or None)
        assert status == 200, body
        return body


@pytest.fixture
def stack(monkeypatch: pytest.MonkeyPatch) -> Iterator[Stack]:
    """moto, the template's tables, and the handler imported fresh with its template environment."""
    with batch_aws(monkeypatch) as aws:
        yield Stack(aws, import_batch_status_handler(monkeypatch, "error_report_batch_status_app"))


def make_batch(aws: BatchAws, batch_id: str = BATCH, *, attempt: int = 1, failures: dict[int, Any] = FAILURES) -> None:
    """A running batch of TOTAL images whose outcomes are all recorded: FAILURES failed, the others predicted."""
    default_tenants_store(aws.store).create(
        {"batch_id": batch_id, "model": "digits", "version": "1", "total": TOTAL, "attempt": attempt}
    )
    aws.store.update(batch_id, status=RUNNING)
    for item in range(TOTAL):
        key = f"scans/{item}.png"
        if item in failures:
            code, message = failures[item]
            outcome = Outcome(item, key, item // 5, FAILED_OUTCOME, attempt, error_code=code, error_message=message)
        else:
            outcome = Outcome(
                item, key, item // 5, PREDICTED, attempt, result={"label": "7", "score": 0.9, "top_k": []}
            )
        predicted, failed = aws.store.record_outcome(batch_id, outcome)
        aws.store.add_counts(batch_id, predicted=predicted, failed=failed)


def close(aws: BatchAws, batch_id: str = BATCH) -> None:
    assert BatchCloser(store=aws.store, s3=aws.s3, bucket=BUCKET).try_close(batch_id)["closed"] is True


def code_counts(failures: dict[int, Any] = FAILURES) -> dict[str, int]:
    counts: dict[str, int] = {}
    for code, _ in failures.values():
        counts[code] = counts.get(code, 0) + 1
    return counts


def every_error(stack: Stack, limit: int) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = []
    token: str | None = None
    for _ in range(50):
        page = stack.errors(limit=str(limit), **({"next_token": token} if token else {}))
        assert len(page["errors"]) <= limit
        entries += page["errors"]
        token = page["next_token"]
        if token is None:
            return entries
    raise AssertionError("the error report kept handing out next_token")


def s3_key(url: str) -> str:
    """The object key a presigned URL points at (path-style or virtual-hosted)."""
    path = urlparse(url).path.lstrip("/")
    return path.removeprefix(f"{BUCKET}/")


# -- the report ---------------------------------------------------------------------------------------------------
def test_the_report_lists_each_failed_image_with_its_code_message_attempt_and_time_in_item_order(
    stack: Stack,
) -> None:
    # Given a batch with five failed images among nine
    make_batch(stack.aws)

    # When its error report is read
    report = stack.errors()

    # Then each failed image is there once, in item order, with what failed, why, on which attempt and when
    assert [entry["item"] for entry in report["errors"]] == sorted(FAILURES)
    for entry in report["errors"]:
        assert set(entry) == set(ERROR_FIELDS)
        assert (entry["code"], entry["message"]) == FAILURES[entry["item"]]
        assert entry["key"] == f"scans/{entry['item']}.png"
        assert entry["attempts"] == 1
        assert entry["last_attempt_at"].endswith("Z")
    assert (report["batch_id"], report["status"], report["attempt"], report["failed"]) == (BATCH, RUNNING, 1, 5)


def test_a_later_attempt_number_is_what_the_report_shows_for_an_image_that_failed_again(stack: Stack) -> None:
    # Given a batch on its second attempt, where image 3 failed again
    make_batch(stack.aws)
    again = Outcome(3, "scans/3.png", 0, FAILED_OUTCOME, 2, error_code="invalid_image", error_message="still bad")
    stack.aws.store.record_outcome(BATCH, again)

    # When the report is read
    entry = next(entry for entry in stack.errors()["errors"] if entry["item"] == 3)

    # Then the image shows its latest failure and the attempt that made it
    assert (entry["code"], entry["message"], entry["attempts"]) == ("invalid_image", "still bad", 2)


def test_a_batch_without_failures_has_an_empty_report(stack: Stack) -> None:
    make_batch(stack.aws, failures={})
    close(stack.aws)
    report = stack.errors()
    assert (report["errors"], report["summary"], report["next_token"]) == ([], {}, None)


def test_paging_with_a_limit_of_two_returns_every_failed_image_exactly_once(stack: Stack) -> None:
    # Given five failed images
    make_batch(stack.aws)

    # When the report is read two at a time, following next_token
    entries = every_error(stack, limit=2)

    # Then every failed image came once, in order
    assert [entry["item"] for entry in entries] == sorted(FAILURES)


def test_the_default_page_holds_up_to_a_hundred_failed_images(stack: Stack) -> None:
    failures = {item: ("invalid_image", "bad") for item in range(TOTAL)}
    make_batch(stack.aws, failures=failures)
    report = stack.errors()
    assert len(report["errors"]) == TOTAL
    assert report["next_token"] is None


# -- the summary --------------------------------------------------------------------------------------------------
def test_a_running_batch_summary_counts_every_code_of_the_whole_batch_on_every_page(stack: Stack) -> None:
    # Given a running batch with failures of four kinds
    make_batch(stack.aws)

    # When one small page of its report is read, and then the next
    first = stack.errors(limit="1")
    second = stack.errors(limit="1", next_token=first["next_token"])

    # Then both summaries count the whole batch, not their page
    assert first["summary"] == second["summary"] == code_counts()
    assert first["summary_complete"] is True


def test_a_closed_batch_summary_is_the_one_the_closer_stored_on_the_job(stack: Stack) -> None:
    # Given a closed batch whose stored summary is changed behind the API's back
    make_batch(stack.aws)
    close(stack.aws)
    assert stack.aws.store.get(BATCH)["error_summary"] == code_counts()
    stack.aws.store.update(BATCH, error_summary={"stored_marker": 42})

    # When the report is read
    report = stack.errors()

    # Then its summary is the stored one: the items were not counted again
    assert report["summary"] == {"stored_marker": 42}
    assert report["summary_complete"] is True


def test_a_retried_batch_counts_its_summary_again_instead_of_trusting_the_last_attempt(stack: Stack) -> None:
    # Given a closed batch that is retried (a new attempt, not terminal yet), and an image that now succeeded
    make_batch(stack.aws)
    close(stack.aws)
    stack.aws.store.update(BATCH, status=QUEUED, attempt=2)
    fixed = Outcome(1, "scans/1.png", 0, PREDICTED, 2, result={"label": "7", "score": 0.9, "top_k": []})
    stack.aws.store.record_outcome(BATCH, fixed)

    # When the report is read
    report = stack.errors()

    # Then the summary is the items' current one and the last attempt's files are not offered
    assert report["summary"] == {**code_counts(), "invalid_image": 1}
    assert report["links"] == {}
    assert [entry["item"] for entry in report["errors"]] == [3, 4, 6, 7]


def test_a_running_summary_too_long_to_count_in_one_request_says_it_is_partial(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a count limited to two pages of two failed items, and five failed items
    monkeypatch.setattr(stack.app, "SUMMARY_MAX_PAGES", 2)
    monkeypatch.setattr(stack.app, "SUMMARY_PAGE_ITEMS", 2)
    make_batch(stack.aws)

    # When the report is read
    report = stack.errors()

    # Then the summary counts four and says it is not complete
    assert sum(report["summary"].values()) == 4
    assert report["summary_complete"] is False


# -- the error files ----------------------------------------------------------------------------------------------
def test_closing_a_batch_writes_its_error_files_beside_the_results_and_keeps_their_keys_on_the_job(
    stack: Stack,
) -> None:
    make_batch(stack.aws)
    close(stack.aws)
    job = stack.aws.store.get(BATCH)
    assert job["results_key"] == f"results/{BATCH}/results-1.jsonl"
    assert job["errors_csv_key"] == f"results/{BATCH}/errors-1.csv"
    assert job["errors_jsonl_key"] == f"results/{BATCH}/errors-1.jsonl"
    assert set(stack.aws.object_keys()) >= {job["results_key"], job["errors_csv_key"], job["errors_jsonl_key"]}


def test_the_results_file_still_holds_every_outcome(stack: Stack) -> None:
    make_batch(stack.aws)
    close(stack.aws)
    lines = stack.aws.text(f"results/{BATCH}/results-1.jsonl").splitlines()
    assert [json.loads(line)["item"] for line in lines] == list(range(TOTAL))


def test_the_csv_error_file_parses_to_the_report_entries_quoting_commas_quotes_and_line_breaks(
    stack: Stack,
) -> None:
    # Given a closed batch, one of whose messages has a comma, quotes and a line break
    make_batch(stack.aws)
    close(stack.aws)
    report = stack.errors()

    # When its CSV file is parsed
    rows = list(csv.DictReader(io.StringIO(stack.aws.text(f"results/{BATCH}/errors-1.csv"))))

    # Then it has the report's columns and rows (CSV cells are text)
    assert list(rows[0]) == list(ERROR_FIELDS)
    assert rows == [{name: str(entry[name]) for name in ERROR_FIELDS} for entry in report["errors"]]


def test_the_json_lines_error_file_equals_the_report_entries(stack: Stack) -> None:
    make_batch(stack.aws)
    close(stack.aws)
    lines = stack.aws.text(f"results/{BATCH}/errors-1.jsonl").splitlines()
    assert [json.loads(line) for line in lines] == stack.errors()["errors"]


def test_a_batch_without_failures_gets_no_error_files_and_no_links_to_them(stack: Stack) -> None:
    make_batch(stack.aws, failures={})
    close(stack.aws)
    assert stack.aws.object_keys() == [f"results/{BATCH}/results-1.jsonl"]
    assert stack.aws.store.get(BATCH)["error_summary"] == {}
    assert stack.errors()["links"] == {}
    assert "errors_files" not in stack.get(f"/batches/{BATCH}")[1]["links"]


def test_a_retry_that_fixes_every_failure_drops_the_last_attempts_error_files(stack: Stack) -> None:
    # Given a batch closed with failures, then retried, and every failed image predicted on attempt 2
    make_batch(stack.aws)
    close(stack.aws)
    stack.aws.store.update(BATCH, status=QUEUED, attempt=2)
    for item in FAILURES:
        fixed = Outcome(
            item, f"scans/{item}.png", item // 5, PREDICTED, 2, result={"label": "7", "score": 0.9, "top_k": []}
        )
        stack.aws.store.record_outcome(BATCH, fixed)

    # When the second attempt closes
    close(stack.aws)

    # Then neither the report nor the job document offers attempt 1's error files any more
    report = stack.errors()
    assert (report["errors"], report["summary"], report["links"]) == ([], {}, {})
    assert "errors_files" not in stack.get(f"/batches/{BATCH}")[1]["links"]


def test_a_terminal_batch_links_presigned_urls_to_its_two_error_files(stack: Stack) -> None:
    make_batch(stack.aws)
    close(stack.aws)
    links = stack.errors()["links"]
    assert set(links) == {"csv", "jsonl"}
    assert s3_key(links["csv"]) == f"results/{BATCH}/errors-1.csv"
    assert s3_key(links["jsonl"]) == f"results/{BATCH}/errors-1.jsonl"
    assert "Signature" in links["csv"]


def test_a_running_batch_offers_no_error_files_yet(stack: Stack) -> None:
    make_batch(stack.aws)
    assert stack.errors()["links"] == {}


# -- the job document's links -------------------------------------------------------------------------------------
def test_the_job_document_links_the_error_report_route(stack: Stack) -> None:
    make_batch(stack.aws)
    status, job = stack.get(f"/batches/{BATCH}")
    assert status == 200
    assert job["links"]["errors"] == f"https://abc123.execute-api.us-east-1.amazonaws.com/v1/batches/{BATCH}/errors"
    assert "errors_files" not in job["links"]


def test_a_terminal_job_document_links_its_error_files(stack: Stack) -> None:
    make_batch(stack.aws)
    close(stack.aws)
    _, job = stack.get(f"/batches/{BATCH}")
    files = job["links"]["errors_files"]
    assert (s3_key(files["csv"]), s3_key(files["jsonl"])) == (
        f"results/{BATCH}/errors-1.csv",
        f"results/{BATCH}/errors-1.jsonl",
    )


# -- what a client can get wrong ----------------------------------------------------------------------------------
def test_an_unknown_batch_is_404_not_found(stack: Stack) -> None:
    status, body = stack.get(f"/batches/{OTHER}/errors")
    assert status == 404
    assert body["error"]["code"] == "not_found"
    assert OTHER in body["error"]["message"]


@pytest.mark.parametrize("limit", ["0", "1001", "-1", "ten", "2.5"])
def test_a_limit_outside_1_to_1000_is_400_invalid_request(stack: Stack, limit: str) -> None:
    make_batch(stack.aws)
    status, body = stack.get(f"/batches/{BATCH}/errors", {"limit": limit})
    assert status == 400
    assert body["error"]["code"] == "invalid_request"
    assert "from 1 to 1000" in body["error"]["message"]


def test_a_next_token_the_api_never_returned_is_400_invalid_request(stack: Stack) -> None:
    make_batch(stack.aws)
    status, body = stack.get(f"/batches/{BATCH}/errors", {"next_token": "not-a-token"})
    assert status == 400
    assert body["error"]["code"] == "invalid_request"
    assert "start again without it" in body["error"]["message"]


def test_a_next_token_of_another_batch_is_400_invalid_request(stack: Stack) -> None:
    # Given two batches with failures, and a token from the other one's report
    make_batch(stack.aws)
    make_batch(stack.aws, OTHER)
    token = stack.errors(OTHER, limit="1")["next_token"]
    assert token

    # When it is used for this batch
    status, body = stack.get(f"/batches/{BATCH}/errors", {"next_token": token})

    # Then it is refused rather than paging the other batch or failing inside DynamoDB
    assert status == 400
    assert body["error"]["code"] == "invalid_request"


def test_a_next_token_of_the_results_route_is_400_invalid_request_on_the_error_report(stack: Stack) -> None:
    make_batch(stack.aws)
    status, page = stack.get(f"/batches/{BATCH}/results", {"limit": "1"})
    assert status == 200
    status, body = stack.get(f"/batches/{BATCH}/errors", {"next_token": page["next_token"]})
    assert status == 400
    assert body["error"]["code"] == "invalid_request"


@pytest.mark.parametrize("item", [10**40, -1])
def test_a_next_token_whose_item_no_image_can_have_is_400_invalid_request(stack: Stack, item: int) -> None:
    # Given a token of this batch's report whose item is beyond any DynamoDB number a page ends on (10**40 was a 502:
    # the start key could not be serialized) or negative
    make_batch(stack.aws)
    start = {"batch_id": BATCH, "item": item, "batch_status": f"{BATCH}#{FAILED_OUTCOME}"}
    token = base64.urlsafe_b64encode(json.dumps(start).encode()).decode().rstrip("=")

    # When the report is asked for with it
    status, body = stack.get(f"/batches/{BATCH}/errors", {"next_token": token})

    # Then it is refused as the client's error
    assert status == 400, body
    assert body["error"]["code"] == "invalid_request"
