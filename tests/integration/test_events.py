"""Every sample event in events/ is a real-shaped payload its function answers as the file name says."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import boto3
import pytest

from modelrun.batches.store import FAILED_OUTCOME, PREDICTED, JobStore, Outcome
from modelrun.tenants import DEFAULT_TENANT, Tenant
from modelrun_local.runtime import LocalRuntime
from tests.integration.conftest import REPO, sample

EVENTS = REPO / "events"
FUNCTIONS = {
    "predict": "PredictFunction",
    "batch_status": "BatchStatusFunction",
    "create_uploads": "CreateUploadsFunction",
}
# Folders of events that are not REST API requests, each checked by its feature's own test module.
CHECKED_ELSEWHERE = {
    "websocket": "test_websocket.py",
    "notify": "test_websocket.py",
    "on_upload": "test_upload_triggers.py",
}
CASES = sorted((folder, path) for folder in FUNCTIONS for path in (EVENTS / folder).glob("*.json"))


@pytest.fixture(scope="module", autouse=True)
def referenced_objects(s3: Any, images_bucket: str) -> None:
    """The object json-s3-reference.json names."""
    s3.put_object(Bucket=images_bucket, Key="uploads/digits/digit-7-0081.png", Body=sample(7).read_bytes())


# The batch events/batch_status/ asks about: a job row with one predicted and one failed image (its bad-* events
# name an unknown batch or bad paging parameters).
SAMPLE_BATCH = "b-20261119T101320-5a3c0e2f9b1d"


@pytest.fixture(scope="module", autouse=True)
def sample_batch(stack: LocalRuntime) -> None:
    assert stack.stack is not None
    dynamodb = boto3.resource("dynamodb", region_name=stack.region)
    store = JobStore(dynamodb.Table(stack.stack.ref("JobsTable")), dynamodb.Table(stack.stack.ref("ItemsTable")))
    store.for_tenant(Tenant(DEFAULT_TENANT)).create(
        {"batch_id": SAMPLE_BATCH, "model": "digits", "version": "1", "total": 2, "attempt": 1}
    )
    store.record_outcome(
        SAMPLE_BATCH, Outcome(0, "scans/0.png", 0, PREDICTED, result={"label": "7", "score": 0.99, "top_k": []})
    )
    failed = Outcome(1, "scans/1.png", 0, FAILED_OUTCOME, error_code="invalid_image", error_message="not an image")
    store.record_outcome(SAMPLE_BATCH, failed)


@pytest.mark.parametrize(("folder", "path"), CASES, ids=[f"{folder}/{path.stem}" for folder, path in CASES])
def test_a_sample_event_gets_the_answer_its_name_promises(stack: LocalRuntime, folder: str, path: Path) -> None:
    assert stack.stack is not None
    function = stack.stack.function(FUNCTIONS[folder])
    event = json.loads(path.read_text())
    if "httpMethod" in event:
        # API Gateway passes the id of the key it validated: the stack's own key, the default tenant's.
        identity = event.setdefault("requestContext", {}).setdefault("identity", {})
        identity["apiKeyId"] = stack.stack.ref("RestApiApiKey")
    invocation = function.invoke(event)
    assert not invocation.failed, invocation.payload
    status = invocation.payload["statusCode"]
    body = json.loads(invocation.payload["body"])
    if path.stem.startswith("bad-"):
        assert 400 <= status < 500
        assert body["error"]["code"]
    else:
        assert 200 <= status < 300, body
        if "label" in body:
            assert body["label"] == "7"


def test_every_function_with_events_has_a_folder_of_samples() -> None:
    folders = {path.name for path in EVENTS.iterdir() if path.is_dir()}
    assert folders == set(FUNCTIONS) | set(CHECKED_ELSEWHERE)
