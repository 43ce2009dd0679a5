"""Patient data stays out: a DICOM file whose patient and free-text attributes are unique markers goes through a
single prediction, a batch (good and damaged copies), an upload trigger and the error report on the local stack, and
none of the markers appears in any log record, API answer, results file, error report, table item or WebSocket
message. The file's UIDs may appear in results, never in logs.

The damaged copies keep the whole header (markers included) and lose pixel data, so their error messages come from
the decoder after it has read every marked attribute.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Iterable, Iterator
from typing import Any

import boto3
import pytest
import websocket

from modelrun_local.runtime import LocalRuntime
from tests.dicomfactory import Markers, ct_slice, dicom_bytes, truncated
from tests.integration.conftest import API_KEY, DICOM_MODEL, Api, LogCapture
from tests.integration.helpers import upload, wait_for
from tests.integration.test_upload_triggers import put, wait_for_result

TIMEOUT_S = 120.0


class Seen:
    """Everything the stack handed out or wrote during the test, as text to search."""

    def __init__(self) -> None:
        self.parts: dict[str, str] = {}

    def add(self, where: str, value: Any) -> None:
        if isinstance(value, bytes):
            text = value.decode("latin-1")
        elif isinstance(value, str):
            text = value
        else:
            text = json.dumps(value, default=str, ensure_ascii=False)
        self.parts[f"{where}#{len(self.parts)}"] = text

    def containing(self, needles: Iterable[str]) -> dict[str, list[str]]:
        """``where -> needles found`` (case-insensitive), for the parts that contain any."""
        lowered = [needle.lower() for needle in needles]
        found: dict[str, list[str]] = {}
        for where, text in self.parts.items():
            hits = [needle for needle in lowered if needle in text.lower()]
            if hits:
                found[where] = hits
        return found


def leaks(markers: Markers) -> list[str]:
    return [*markers.strings(), "1903-04-17", "17.04.1903"]


@pytest.fixture(scope="module")
def marked() -> tuple[Markers, bytes, bytes]:
    """The marked file (a CT slice with its own window) and a copy cut inside its pixel data."""
    markers = Markers()
    data = dicom_bytes(ct_slice(seed=7), intercept=-1024, window=(40, 400), markers=markers)
    return markers, data, truncated(data)


class Subscriber:
    """A WebSocket client subscribed to one batch, keeping every message until the batch completes."""

    def __init__(self, url: str, batch_id: str) -> None:
        self.ws = websocket.create_connection(f"{url}?api_key={API_KEY}", timeout=TIMEOUT_S)
        self.batch_id = batch_id
        self.messages: list[str] = []
        self.ws.send(json.dumps({"action": "subscribe", "batch_id": batch_id}))

    def until_completed(self) -> list[str]:
        deadline = time.monotonic() + TIMEOUT_S
        while time.monotonic() < deadline:
            self.ws.settimeout(max(0.1, deadline - time.monotonic()))
            opcode, data = self.ws.recv_data()
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                break
            text = data.decode("utf-8")
            self.messages.append(text)
            message = json.loads(text)
            if message.get("type") == "completed" and message.get("batch_id") == self.batch_id:
                return self.messages
        raise AssertionError(f"no completed message within {TIMEOUT_S} s; got {self.messages[-3:]}")

    def close(self) -> None:
        self.ws.close()
        self.ws.shutdown()


def stack_storage(stack: LocalRuntime, sources: set[str]) -> Iterator[tuple[str, Any]]:
    """Every object in the stack's buckets but the uploaded sources, and every item of every table."""
    s3 = boto3.client("s3", region_name=stack.region)
    for bucket in (entry["Name"] for entry in s3.list_buckets()["Buckets"]):
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for entry in page.get("Contents", []):
                if entry["Key"] in sources:
                    continue
                yield f"s3://{bucket}/{entry['Key']}", s3.get_object(Bucket=bucket, Key=entry["Key"])["Body"].read()
    dynamodb = boto3.client("dynamodb", region_name=stack.region)
    for table in dynamodb.list_tables()["TableNames"]:
        for page in dynamodb.get_paginator("scan").paginate(TableName=table):
            for item in page["Items"]:
                yield f"dynamodb:{table}", item


def test_no_patient_data_leaves_through_logs_results_reports_tables_or_websocket_messages(
    api: Api,
    stack: LocalRuntime,
    s3: Any,
    images_bucket: str,
    marked: tuple[Markers, bytes, bytes],
    function_logs: LogCapture,
) -> None:
    markers, good, damaged = marked
    # The search below looks for values really in the files, damaged copy included.
    for marker in (markers.patient_name, markers.patient_id, markers.institution, markers.private_value):
        assert marker.encode() in good
        assert marker.encode() in damaged
    seen = Seen()
    run = uuid.uuid4().hex[:8]

    # Given the marked file and its damaged copy in the images bucket, for a batch and for the upload trigger
    batch_keys = {f"privacy/{run}/good.dcm": good, f"privacy/{run}/GOOD2": good, f"privacy/{run}/damaged.dcm": damaged}
    upload(s3, images_bucket, batch_keys)

    # When the file is predicted alone: raw, as JSON base64 with a preview, and the damaged copy
    for response in (
        api.post(f"/predictions?model={DICOM_MODEL}", data=good, headers={"Content-Type": "application/dicom"}),
        api.post(
            "/predictions",
            json={"model": DICOM_MODEL, "image": base64.b64encode(good).decode(), "preview": True},
        ),
        api.post(f"/predictions?model={DICOM_MODEL}", data=damaged, headers={"Content-Type": "application/dicom"}),
    ):
        seen.add("POST /predictions", response.text)
    predicted, _, refused = (json.loads(text) for text in list(seen.parts.values())[-3:])
    assert predicted["frames"][0]["label"] == "top-left", predicted
    assert refused["error"]["code"] == "invalid_dicom", refused

    # And as a batch of the good and damaged copies, followed over the WebSocket API
    answer = api.post("/batches", json={"model": DICOM_MODEL, "images": list(batch_keys), "chunk_size": 2})
    assert answer.status_code == 202, answer.text
    seen.add("POST /batches", answer.text)
    batch_id = answer.json()["batch_id"]
    subscriber = Subscriber(stack.outputs()["WebSocketUrl"], batch_id)
    try:
        messages = subscriber.until_completed()
        for message in messages:
            seen.add("websocket", message)
    finally:
        subscriber.close()
    assert any(json.loads(message)["type"] == "progress" for message in messages)
    job = wait_for(api, batch_id)
    assert job["counts"] == {**job["counts"], "predicted": 2, "failed": 1}, job
    for path in (f"/batches/{batch_id}", f"/batches/{batch_id}/results", f"/batches/{batch_id}/errors"):
        response = api.get(path)
        assert response.status_code == 200, response.text
        seen.add(f"GET {path}", response.text)
    report = api.get(f"/batches/{batch_id}/errors").json()
    assert [entry["code"] for entry in report["errors"]] == ["invalid_dicom"]

    # And through the upload trigger, good and damaged
    trigger_keys = {f"uploads/{DICOM_MODEL}/{run}-good.dcm": good, f"uploads/{DICOM_MODEL}/{run}-damaged.dcm": damaged}
    for key, data in trigger_keys.items():
        etag = put(s3, images_bucket, key, data)
        seen.add(f"results/{key}.json", wait_for_result(s3, images_bucket, f"results/{key}.json", etag=etag))

    # Then every place the stack wrote to is read back: buckets (results, masks, reports) and tables
    for where, value in stack_storage(stack, set(batch_keys) | set(trigger_keys)):
        seen.add(where, value)
    logs = function_logs.text

    # Then no marker is anywhere: not in what the stack returned, stored or sent, and not in any log line
    assert seen.containing(leaks(markers)) == {}
    assert [marker for marker in leaks(markers) if marker.lower() in logs.lower()] == []
    # And the UIDs were in the results (so the search above looked at real results) but never in the logs
    uids = predicted["dicom"]
    assert seen.containing([uids["sop_instance_uid"]]), "the results should carry the SOP Instance UID"
    for name in ("study_instance_uid", "series_instance_uid", "sop_instance_uid"):
        assert uids[name] not in logs, f"{name} was logged"
    # And the logs were really captured: the functions' own records are there
    assert "upload processed" in logs
    assert batch_id in logs
