"""The audit trail on moto's DynamoDB (the AuditTable from template.yaml): records per tenant, newest first, by
resource, with a retention, and nothing of a request's content."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from modelrun.audit import AuditTrail
from modelrun.errors import InvalidRequest
from modelrun.tenants import Tenant
from tests.batchfixtures import create_table, use_fake_credentials

A, B = Tenant("tenant-a"), Tenant("tenant-b")


@pytest.fixture
def trail(monkeypatch: pytest.MonkeyPatch) -> Iterator[AuditTrail]:
    use_fake_credentials(monkeypatch)
    with mock_aws():
        yield AuditTrail(create_table(boto3.resource("dynamodb", region_name="us-east-1"), "AuditTable", "audit"), 30)


def request(path_batch: str | None = None, *, status: int = 200, body: dict[str, Any] | None = None) -> tuple:
    event = {
        "httpMethod": "GET",
        "resource": "/batches/{batch_id}" if path_batch else "/predictions",
        "pathParameters": {"batch_id": path_batch} if path_batch else None,
        "queryStringParameters": {"patient": "Jane Doe"},
        "body": json.dumps({"image_s3": {"key": "scans/jane-doe.png"}}),
        "requestContext": {"requestId": f"r-{time.monotonic_ns()}"},
    }
    return event, {"statusCode": status, "body": json.dumps(body or {})}


def test_a_request_is_recorded_for_its_tenant_with_its_outcome_and_retention(trail: AuditTrail) -> None:
    event, response = request("b-1", body={"batch_id": "b-1", "model": "digits", "version": "1"})

    stored = trail.record_request(A, event, response)

    assert stored["expires_at"] == pytest.approx(time.time() + 30 * 86400, abs=5)
    records, token = trail.page(A, resource=None, limit=10, token=None)
    assert token is None
    assert records[0] | {"time": None, "request_id": None} == {
        "time": None,
        "request_id": None,
        "action": "GET /batches/{batch_id}",
        "resources": {"batch_id": "b-1"},
        "status": 200,
        "outcome": "ok",
        "model": "digits",
        "version": "1",
    }
    assert trail.page(B, resource=None, limit=10, token=None)[0] == []


def test_an_error_is_recorded_by_its_code(trail: AuditTrail) -> None:
    event, response = request("b-x", status=404, body={"error": {"code": "not_found", "message": "no batch"}})

    trail.record_request(B, event, response)

    assert trail.page(B, resource="b-x", limit=10, token=None)[0][0]["outcome"] == "not_found"


def test_no_query_body_or_key_is_kept(trail: AuditTrail) -> None:
    event, response = request(body={"label": "7", "model": "digits", "version": "1"})

    stored = trail.record_request(A, event, response)

    assert "Jane" not in json.dumps(stored, default=str)
    assert "jane-doe" not in json.dumps(stored, default=str)


def test_records_page_newest_first_and_filter_by_resource_within_the_tenant(trail: AuditTrail) -> None:
    for batch in ("b-1", "b-2", "b-1"):
        trail.record_request(A, *request(batch))
    trail.record_request(B, *request("b-1"))

    first, token = trail.page(A, resource=None, limit=2, token=None)
    rest, last = trail.page(A, resource=None, limit=2, token=token)
    of_b1 = trail.page(A, resource="b-1", limit=10, token=None)[0]

    assert [r["resources"]["batch_id"] for r in first + rest] == ["b-1", "b-2", "b-1"]
    assert last is None
    assert len(of_b1) == 2


def test_another_tenants_token_is_refused(trail: AuditTrail) -> None:
    for batch in ("b-1", "b-2"):
        trail.record_request(A, *request(batch))
    _, token = trail.page(A, resource=None, limit=1, token=None)

    with pytest.raises(InvalidRequest):
        trail.page(B, resource=None, limit=1, token=token)
