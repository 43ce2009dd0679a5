"""Timed-out chunks on the local stack: an invocation of predict_batch that outlives its timeout is a Lambda timeout
(``Sandbox.Timedout``; its sandbox's process is killed), retried by the state machine, then caught into the dead-letter
queue and healed by recover.

Injected timeouts last the function's timeout, 300 s in the template: this module needs a stack whose
PredictBatchFunction times out in seconds, so it runs in a pytest process of its own with
``MODELRUN_TEST_PREDICT_BATCH_TIMEOUT`` set (``make test`` and ``make integration`` do).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from modelrun_local.runtime import LocalRuntime
from tests.integration.conftest import SAMPLES, SHORT_TIMEOUT_VARIABLE, Api, short_timeout_overrides
from tests.integration.helpers import all_results, upload, wait_for

# The state machine's tries of a chunk: the first and its Retry's MaxAttempts (statemachine/batch_prediction.asl.json).
STATE_MACHINE_TRIES = 4
CHUNKS = 3


@pytest.fixture(scope="module")
def timed_out_batch(api: Api, stack: LocalRuntime, s3: Any, images_bucket: str) -> dict[str, Any]:
    """Three chunks of four images, every state-machine invocation of which times out (recover injects no rate
    faults: there they succeed)."""
    if not short_timeout_overrides():
        pytest.skip(f"needs a short PredictBatchFunction timeout: run with {SHORT_TIMEOUT_VARIABLE}=8 (make does)")
    assert stack.stack is not None
    predict_batch = stack.stack.function("PredictBatchFunction")
    samples = sorted(SAMPLES.glob("digit-*.png"))[: CHUNKS * 4]
    keys = upload(s3, images_bucket, {f"timeouts/{path.name}": path.read_bytes() for path in samples})
    timeouts_before = predict_batch.errors["Sandbox.Timedout"]
    response = api.post(
        "/batches", json={"images": keys, "chunk_size": 4, "max_concurrency": CHUNKS, "faults": {"timeout_rate": 1.0}}
    )
    assert response.status_code == 202, response.text
    job = wait_for(api, response.json()["batch_id"], timeout=300)
    return {
        "job": job,
        "keys": keys,
        "timeouts": predict_batch.errors["Sandbox.Timedout"] - timeouts_before,
        "timeout_s": predict_batch.timeout,
    }


def test_the_stack_under_test_times_predict_batch_out_in_seconds(timed_out_batch: dict[str, Any]) -> None:
    assert timed_out_batch["timeout_s"] < 60


def test_every_state_machine_try_of_every_chunk_timed_out(timed_out_batch: dict[str, Any]) -> None:
    assert timed_out_batch["timeouts"] == CHUNKS * STATE_MACHINE_TRIES


def sandbox_processes(code_dir: Path) -> list[int]:
    """The pids of this process's sandbox workers serving the function in ``code_dir`` (read from /proc)."""
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            command = (entry / "cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError, IndexError):
            continue  # not a process, or it ended meanwhile
        if ppid == os.getpid() and b"modelrun_local.worker" in command and str(code_dir).encode() in command:
            pids.append(int(entry.name))
    return pids


def test_every_timed_out_sandbox_was_killed_not_left_running(
    stack: LocalRuntime, timed_out_batch: dict[str, Any]
) -> None:
    # the sandboxes still alive are the function's warm ones (recover's invocations ran in another function)
    assert stack.stack is not None
    predict_batch = stack.stack.function("PredictBatchFunction")
    assert len(sandbox_processes(predict_batch.code_dir)) == predict_batch.sandboxes <= CHUNKS


def test_a_batch_whose_chunks_all_timed_out_completes_through_recovery(timed_out_batch: dict[str, Any]) -> None:
    job = timed_out_batch["job"]
    assert job["status"] == "COMPLETED"
    assert job["counts"] == {"predicted": CHUNKS * 4, "failed": 0, "pending": 0}


def test_each_image_of_the_timed_out_chunks_is_predicted_once_as_post_predictions_predicts_it(
    api: Api, timed_out_batch: dict[str, Any]
) -> None:
    results = all_results(api, timed_out_batch["job"]["batch_id"])
    assert sorted(result["key"] for result in results) == sorted(timed_out_batch["keys"])
    for result in results:
        image = (SAMPLES / result["key"].removeprefix("timeouts/")).read_bytes()
        single = api.post("/predictions", data=image, headers={"Content-Type": "image/png"}).json()
        assert (result["status"], result["label"]) == ("predicted", single["label"])
