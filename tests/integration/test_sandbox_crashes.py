"""Chunks whose sandbox dies on the local stack: an invocation of predict_batch that exits (``os._exit``), segfaults or
outgrows its memory size fails with Lambda's error type (``Runtime.ExitError``, ``Runtime.OutOfMemory``), which the
state machine's chunk Retry does not list: each chunk is caught into the dead-letter queue at its first failure and
healed by recover, as on AWS. Only those sandboxes die: the stack answers ``POST /predictions`` throughout.

The faults come from the batch's ``faults`` (``exit_rate``, ``segfault_rate``, ``memory_rate``: predict_batch really
crashes its own process). Timed-out chunks, which the Retry does list, are in test_timeouts.py.
"""

from __future__ import annotations

import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from modelrun_local.runtime import LocalRuntime
from tests.integration.conftest import SAMPLES, Api, sample
from tests.integration.helpers import all_results, upload, wait_for

IMAGES = 4  # one chunk per batch
CRASHES = {"exit_rate": "Runtime.ExitError", "segfault_rate": "Runtime.ExitError", "memory_rate": "Runtime.OutOfMemory"}


def run_batch(api: Api, keys: list[str], rate: str) -> dict[str, Any]:
    response = api.post(
        "/batches", json={"images": keys, "chunk_size": IMAGES, "max_concurrency": 1, "faults": {rate: 1.0}}
    )
    assert response.status_code == 202, response.text
    return wait_for(api, response.json()["batch_id"], timeout=240)


@pytest.fixture(scope="module")
def crashed_batches(api: Api, stack: LocalRuntime, s3: Any, images_bucket: str) -> dict[str, Any]:
    """One batch per kind of crash, all three at once, while a client keeps asking for single predictions."""
    assert stack.stack is not None
    predict_batch = stack.stack.function("PredictBatchFunction")
    errors_before = Counter(predict_batch.errors)
    samples = sorted(SAMPLES.glob("digit-*.png"))[:IMAGES]
    keys = {
        rate: upload(s3, images_bucket, {f"crashes/{rate}/{path.name}": path.read_bytes() for path in samples})
        for rate in CRASHES
    }
    statuses: list[int] = []
    done = threading.Event()

    def predict_meanwhile() -> None:
        image = sample(3).read_bytes()
        while not done.is_set():
            response = api.post("/predictions", data=image, headers={"Content-Type": "image/png"})
            statuses.append(response.status_code)

    client = threading.Thread(target=predict_meanwhile, daemon=True)
    client.start()
    try:
        with ThreadPoolExecutor(len(CRASHES)) as pool:
            jobs = dict(zip(CRASHES, pool.map(lambda rate: run_batch(api, keys[rate], rate), CRASHES), strict=True))
    finally:
        done.set()
        client.join(60)
    return {
        "jobs": jobs,
        "keys": keys,
        "errors": Counter(predict_batch.errors) - errors_before,
        "statuses": statuses,
    }


def test_each_crash_failed_its_invocation_once_with_lambdas_error_type(crashed_batches: dict[str, Any]) -> None:
    # two ExitErrors (exit, segfault) and one OutOfMemory: caught at the first failure, never retried
    assert crashed_batches["errors"] == Counter({"Runtime.ExitError": 2, "Runtime.OutOfMemory": 1})


@pytest.mark.parametrize("rate", list(CRASHES))
def test_a_batch_whose_chunk_crashed_its_sandbox_completes_through_recovery(
    api: Api, crashed_batches: dict[str, Any], rate: str
) -> None:
    job = crashed_batches["jobs"][rate]
    assert job["status"] == "COMPLETED"
    assert job["counts"] == {"predicted": IMAGES, "failed": 0, "pending": 0}
    results = all_results(api, job["batch_id"])
    assert sorted(result["key"] for result in results) == sorted(crashed_batches["keys"][rate])


def test_the_stack_answered_every_prediction_while_sandboxes_crashed(crashed_batches: dict[str, Any]) -> None:
    statuses = crashed_batches["statuses"]
    assert statuses, "no prediction was made while the batches ran"
    assert set(statuses) == {200}
