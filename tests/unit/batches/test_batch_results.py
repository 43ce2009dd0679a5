"""GET /batches/{id}/results paging: a next_token is the start key of one listing of one batch, and any other is a
400, never a start key handed to DynamoDB (moto and the template's tables)."""

from __future__ import annotations

import base64
import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from modelrun.batches.store import FAILED_OUTCOME, PREDICTED, Outcome
from tests.batchfixtures import (
    BatchAws,
    BatchStatusContext,
    batch_aws,
    default_tenants_store,
    import_batch_status_handler,
    with_stack_key,
)

REPO = Path(__file__).resolve().parents[3]
EVENT = REPO / "events" / "batch_status" / "get-results-failed.json"
BATCH = "b-20261119T101320-5a3c0e2f9b1d"
FAILED_ITEMS = {1, 3}
TOTAL = 5


@pytest.fixture
def results(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """GET /batches/BATCH/results with a query: (status, JSON body), over a batch of TOTAL recorded outcomes."""
    with batch_aws(monkeypatch) as aws:
        app = import_batch_status_handler(monkeypatch, "batch_results_batch_status_app")
        make_batch(aws)

        def get(query: dict[str, str]) -> tuple[int, Any]:
            event = copy.deepcopy(json.loads(EVENT.read_text()))
            event["queryStringParameters"] = query
            event["multiValueQueryStringParameters"] = {name: [value] for name, value in query.items()}
            answer = app.lambda_handler(with_stack_key(event), BatchStatusContext())
            return answer["statusCode"], json.loads(answer["body"])

        yield get


def make_batch(aws: BatchAws) -> None:
    default_tenants_store(aws.store).create({"batch_id": BATCH, "model": "digits", "version": "1", "total": TOTAL})
    for item in range(TOTAL):
        key = f"scans/{item}.png"
        if item in FAILED_ITEMS:
            outcome = Outcome(item, key, 0, FAILED_OUTCOME, error_code="invalid_image", error_message="truncated")
        else:
            outcome = Outcome(item, key, 0, PREDICTED, result={"label": "7", "score": 0.9, "top_k": []})
        aws.store.record_outcome(BATCH, outcome)


def token(document: dict[str, Any]) -> str:
    """A next_token as modelrun.http.paging.encode_token spells one."""
    return base64.urlsafe_b64encode(json.dumps(document, separators=(",", ":")).encode()).decode().rstrip("=")


def test_every_outcome_is_listed_once_following_next_token(results: Any) -> None:
    # Given a batch of five outcomes, read two at a time
    items, query = [], {"limit": "2"}
    for _ in range(TOTAL):
        status, page = results(query)
        assert status == 200, page
        items += [outcome["item"] for outcome in page["results"]]
        if page["next_token"] is None:
            break
        query = {"limit": "2", "next_token": page["next_token"]}

    # Then each outcome came once, in item order
    assert items == list(range(TOTAL))


@pytest.mark.parametrize(
    "document",
    [
        {"batch_id": [0.2]},
        {"unknown": 1},
        {"batch_id": BATCH, "item": "1"},
        {"batch_id": BATCH, "item": 1.5},
        {"batch_id": BATCH, "item": True},
        {"batch_id": BATCH, "item": 10**40},
        {"batch_id": BATCH, "item": -1},
        {"batch_id": "b-20261119T101320-77777777aaaa", "item": 1},
        {"batch_id": BATCH, "item": 1, "extra": 0},
    ],
)
def test_a_next_token_that_is_not_a_start_key_of_the_listing_is_400_invalid_request(
    results: Any, document: dict[str, Any]
) -> None:
    # Given a token-shaped next_token whose JSON is no start key of this batch's outcomes (it was 502 before)
    # When the results are asked for with it
    status, body = results({"next_token": token(document)})

    # Then it is refused as the client's error, saying what to do
    assert status == 400, body
    assert body["error"]["code"] == "invalid_request"
    assert "start again without it" in body["error"]["message"]


def test_a_next_token_of_all_results_is_400_on_the_failed_results(results: Any) -> None:
    # Given a token of the listing of all outcomes (the table's key: no batch_status)
    status, page = results({"limit": "1"})
    assert status == 200, page
    assert page["next_token"]

    # When it is used on the listing of failed outcomes (the by_status index, whose key has batch_status)
    status, body = results({"status": "failed", "next_token": page["next_token"]})

    # Then it is refused
    assert status == 400, body
    assert body["error"]["code"] == "invalid_request"


def test_a_next_token_of_the_failed_results_pages_on_through_the_failed_results(results: Any) -> None:
    # Given the first failed outcome and its token
    status, first = results({"status": "failed", "limit": "1"})
    assert status == 200, first

    # When the token is followed on the same listing
    status, second = results({"status": "failed", "limit": "1", "next_token": first["next_token"]})

    # Then the next failure comes
    assert status == 200, second
    assert [outcome["item"] for outcome in first["results"] + second["results"]] == sorted(FAILED_ITEMS)
