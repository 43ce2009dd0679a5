"""Failed-batch recovery on the local stack: transient failures heal, bad images are reported, nothing is lost or
counted twice, a chunk that never succeeds ends in the parking queue, and a retry after a fix turns a failure into a
prediction."""

from __future__ import annotations

import random
import time
from collections import Counter
from typing import Any

import boto3
import pytest

from modelrun_local.runtime import LocalRuntime
from tests.integration.conftest import SAMPLES, Api
from tests.integration.helpers import all_results, outcomes_in_table, upload, wait_for


def queue_depth(stack: LocalRuntime, logical_id: str) -> int:
    assert stack.stack is not None
    sqs = boto3.client("sqs", region_name=stack.region)
    attributes = sqs.get_queue_attributes(
        QueueUrl=stack.stack.ref(logical_id),
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"]) + int(attributes["ApproximateNumberOfMessagesNotVisible"])


def jobs_table(stack: LocalRuntime) -> Any:
    assert stack.stack is not None
    return boto3.resource("dynamodb", region_name=stack.region).Table(stack.stack.ref("JobsTable"))


@pytest.fixture(scope="module")
def flaky_batch(api: Api, stack: LocalRuntime, s3: Any, images_bucket: str) -> dict[str, Any]:
    """2,000 images, 5% of them corrupt, with 10% of predict_batch invocations failing transiently."""
    assert stack.stack is not None
    samples = sorted(SAMPLES.glob("digit-*.png"))
    chooser = random.Random(7)
    corrupt = set(chooser.sample(range(2000), 100))
    files: dict[str, bytes] = {}
    for index in range(2000):
        sample = samples[index % len(samples)]
        if index in corrupt:
            files[f"recovery/flaky/{index:04d}-corrupt.png"] = sample.read_bytes()[:40]
        else:
            files[f"recovery/flaky/{index:04d}-{sample.name}"] = sample.read_bytes()
    keys = upload(s3, images_bucket, files)
    predict_batch = stack.stack.function("PredictBatchFunction")
    errors_before = predict_batch.errors["TransientFailure"]
    response = api.post(
        "/batches",
        json={"images": keys, "chunk_size": 25, "max_concurrency": 8, "faults": {"transient_rate": 0.1}},
    )
    assert response.status_code == 202, response.text
    job = wait_for(api, response.json()["batch_id"], timeout=400)
    return {
        "job": job,
        "keys": keys,
        "corrupt": {key for key in keys if key.endswith("-corrupt.png")},
        "transient_failures": predict_batch.errors["TransientFailure"] - errors_before,
    }


def test_a_flaky_batch_with_corrupt_images_ends_completed_with_errors(flaky_batch: dict[str, Any]) -> None:
    job = flaky_batch["job"]
    assert job["status"] == "COMPLETED_WITH_ERRORS"
    assert job["counts"] == {"predicted": 1900, "failed": 100, "pending": 0}


def test_the_injected_transient_failures_really_happened(flaky_batch: dict[str, Any]) -> None:
    # 80 chunks with a 10% failure rate per invocation: zero failures would mean the faults were not injected.
    assert flaky_batch["transient_failures"] >= 1


def test_in_the_tables_every_image_has_one_outcome_and_only_corrupt_images_failed(
    stack: LocalRuntime, flaky_batch: dict[str, Any]
) -> None:
    records = outcomes_in_table(stack, flaky_batch["job"]["batch_id"])
    assert sorted(int(record["item"]) for record in records) == list(range(2000))
    assert Counter(record["key"] for record in records) == Counter(flaky_batch["keys"])
    failed = {record["key"]: record["error_code"] for record in records if record["status"] == "failed"}
    assert set(failed) == flaky_batch["corrupt"]
    assert set(failed.values()) == {"invalid_image"}
    job_row = jobs_table(stack).get_item(Key={"batch_id": flaky_batch["job"]["batch_id"]})["Item"]
    assert (int(job_row["predicted"]), int(job_row["failed"])) == (1900, 100)


def test_the_error_report_lists_every_corrupt_image_with_its_code(api: Api, flaky_batch: dict[str, Any]) -> None:
    failures = all_results(api, flaky_batch["job"]["batch_id"], "failed")
    assert {result["key"] for result in failures} == flaky_batch["corrupt"]
    assert all(result["error"]["code"] == "invalid_image" and result["error"]["message"] for result in failures)


@pytest.fixture(scope="module")
def doomed_batch(api: Api, stack: LocalRuntime, s3: Any, images_bucket: str) -> dict[str, Any]:
    """Chunk 1 of 3 fails every time, in the state machine and in recovery alike."""
    files = {f"recovery/doomed/{path.name}": path.read_bytes() for path in sorted(SAMPLES.glob("*.png"))[:30]}
    keys = upload(s3, images_bucket, files)
    parked_before = queue_depth(stack, "ParkingQueue")
    response = api.post("/batches", json={"images": keys, "chunk_size": 10, "faults": {"fail_chunks": [1]}})
    assert response.status_code == 202, response.text
    job = wait_for(api, response.json()["batch_id"], timeout=300)
    return {"job": job, "keys": keys, "parked_before": parked_before}


def test_a_chunk_that_always_fails_leaves_its_images_retries_exhausted_and_the_job_terminal(
    api: Api, doomed_batch: dict[str, Any]
) -> None:
    job = doomed_batch["job"]
    assert job["status"] == "COMPLETED_WITH_ERRORS"
    assert job["counts"] == {"predicted": 20, "failed": 10, "pending": 0}
    failures = all_results(api, job["batch_id"], "failed")
    assert {result["key"] for result in failures} == set(doomed_batch["keys"][10:20])
    assert {result["error"]["code"] for result in failures} == {"retries_exhausted"}


def test_the_job_reports_the_parked_chunk(doomed_batch: dict[str, Any]) -> None:
    (parked,) = doomed_batch["job"]["parked"]
    assert parked["chunk"] == 1
    assert parked["queue_url"].endswith("parking-queue")
    assert "fails every time" in parked["reason"]


def test_the_message_of_a_chunk_that_always_fails_ends_in_the_parking_queue(
    stack: LocalRuntime, doomed_batch: dict[str, Any]
) -> None:
    deadline = time.monotonic() + 30
    while queue_depth(stack, "ParkingQueue") <= doomed_batch["parked_before"] and time.monotonic() < deadline:
        time.sleep(0.2)
    assert queue_depth(stack, "ParkingQueue") == doomed_batch["parked_before"] + 1
    assert queue_depth(stack, "DeadLetterQueue") == 0


def test_a_retry_after_the_missing_object_is_uploaded_turns_that_failure_into_a_prediction(
    api: Api, s3: Any, images_bucket: str
) -> None:
    given = sorted(SAMPLES.glob("digit-6-*.png"))[:5]
    keys = upload(s3, images_bucket, {f"recovery/retry/{path.name}": path.read_bytes() for path in given[:4]})
    missing = f"recovery/retry/{given[4].name}"
    first = wait_for(api, api.post("/batches", json={"images": [*keys, missing]}).json()["batch_id"])
    assert first["status"] == "COMPLETED_WITH_ERRORS"
    assert [result["error"]["code"] for result in all_results(api, first["batch_id"], "failed")] == ["image_not_found"]

    s3.put_object(Bucket=images_bucket, Key=missing, Body=given[4].read_bytes())
    retried = api.post(f"/batches/{first['batch_id']}/retry")
    assert retried.status_code == 202, retried.text
    assert (retried.json()["attempt"], retried.json()["retried"]) == (2, 1)
    second = wait_for(api, first["batch_id"])

    assert second["status"] == "COMPLETED"
    assert second["counts"] == {"predicted": 5, "failed": 0, "pending": 0}
    assert second["attempt"] == 2
    results = {result["key"]: result for result in all_results(api, first["batch_id"])}
    assert results[missing]["status"] == "predicted"
    assert results[missing]["attempt"] == 2
    assert len(results) == 5


def test_retrying_a_batch_without_failures_is_a_conflict(api: Api, s3: Any, images_bucket: str) -> None:
    keys = upload(s3, images_bucket, {"recovery/clean/one.png": sorted(SAMPLES.glob("*.png"))[0].read_bytes()})
    job = wait_for(api, api.post("/batches", json={"images": keys}).json()["batch_id"])
    response = api.post(f"/batches/{job['batch_id']}/retry")
    assert (response.status_code, response.json()["error"]["code"]) == (409, "conflict")


def test_reconcile_recounts_a_job_whose_counters_drifted(
    api: Api, stack: LocalRuntime, s3: Any, images_bucket: str
) -> None:
    keys = upload(
        s3, images_bucket, {f"recovery/drift/{p.name}": p.read_bytes() for p in sorted(SAMPLES.glob("*.png"))[:6]}
    )
    job = wait_for(api, api.post("/batches", json={"images": keys}).json()["batch_id"])
    jobs_table(stack).update_item(
        Key={"batch_id": job["batch_id"]}, UpdateExpression="SET predicted = :p", ExpressionAttributeValues={":p": 99}
    )
    assert api.get(f"/batches/{job['batch_id']}").json()["counts"]["predicted"] == 99
    reconciled = api.post(f"/batches/{job['batch_id']}/reconcile").json()
    assert reconciled["counts"] == {"predicted": 6, "failed": 0, "pending": 0}


def test_faults_with_bad_values_are_refused(api: Api) -> None:
    for faults in ({"transient_rate": 2}, {"fail_chunks": ["x"]}, {"explode": True}, "often"):
        response = api.post("/batches", json={"images": ["a.png"], "faults": faults})
        assert (response.status_code, response.json()["error"]["code"]) == (400, "invalid_request"), faults
