"""The demo `make run` plays once the stack is up: the sample images as a batch, submitted as a client would."""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import boto3
import requests

from modelrun_local import LOGGER
from modelrun_local.runtime import LocalRuntime
from modelrun_local.template import REPO_ROOT

log = logging.getLogger(LOGGER)

SAMPLES = REPO_ROOT / "samples" / "digits"
PREFIX = "samples/digits/"
TERMINAL = {"COMPLETED", "COMPLETED_WITH_ERRORS", "FAILED"}


def run_demo_batch(runtime: LocalRuntime, *, timeout_s: float = 300, say: Any = print) -> dict[str, Any] | None:
    """Upload samples/digits to the images bucket, submit them with POST /batches, and wait for the outcome."""
    assert runtime.stack is not None
    paths = sorted(SAMPLES.glob("*.png"))
    if not paths:
        say("demo batch skipped: no images in samples/digits (make models)")
        return None
    bucket = runtime.stack.ref("ImagesBucket")
    s3 = boto3.client("s3", region_name=runtime.region)

    def put(path: Path) -> None:
        s3.put_object(Bucket=bucket, Key=PREFIX + path.name, Body=path.read_bytes(), ContentType="image/png")

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(put, paths))
    headers = {"x-api-key": runtime.api_key}
    response = requests.post(f"{runtime.url}/batches", json={"s3_prefix": PREFIX}, headers=headers, timeout=30)
    response.raise_for_status()
    batch_id = response.json()["batch_id"]
    say(f"demo batch {batch_id}: {len(paths)} sample images from s3://{bucket}/{PREFIX}")
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job: dict[str, Any] = requests.get(f"{runtime.url}/batches/{batch_id}", headers=headers, timeout=30).json()
        if job["status"] in TERMINAL:
            correct = _correct_labels(runtime, batch_id)
            counts = job["counts"]
            say(
                f"demo batch {batch_id}: {job['status']}, {counts['predicted']} predicted, {counts['failed']} failed, "
                f"{correct} of {counts['predicted']} labels match the file names "
                f"({job['timings'].get('duration_s', '?')} s); results: {runtime.url}/batches/{batch_id}/results"
            )
            return job
        time.sleep(0.5)
    say(f"demo batch {batch_id}: not finished after {timeout_s:.0f} s")
    return None


def _correct_labels(runtime: LocalRuntime, batch_id: str) -> int:
    headers = {"x-api-key": runtime.api_key}
    correct, token = 0, None
    while True:
        params = {"status": "predicted", "limit": "1000", **({"next_token": token} if token else {})}
        page = requests.get(f"{runtime.url}/batches/{batch_id}/results", params=params, headers=headers, timeout=30)
        body = page.json()
        correct += sum(result["label"] == result["key"].split("digit-")[1][0] for result in body["results"])
        token = body["next_token"]
        if not token:
            return correct
