"""Helpers shared by the batch integration tests: uploads, waiting with a deadline, reading results and tables."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import boto3

from modelrun_local.runtime import LocalRuntime
from tests.integration.conftest import Api

TERMINAL = {"COMPLETED", "COMPLETED_WITH_ERRORS", "FAILED"}


def wait_for(api: Api, batch_id: str, timeout: float = 240) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job: dict[str, Any] = api.get(f"/batches/{batch_id}").json()
        if job["status"] in TERMINAL:
            return job
        time.sleep(0.25)
    raise AssertionError(f"batch {batch_id} not terminal after {timeout} s: {job}")


def upload(s3: Any, bucket: str, files: dict[str, bytes]) -> list[str]:
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda item: s3.put_object(Bucket=bucket, Key=item[0], Body=item[1]), files.items()))
    return list(files)


def all_results(api: Api, batch_id: str, status: str | None = None) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []
    token = None
    while True:
        params = {"limit": "250", **({"status": status} if status else {}), **({"next_token": token} if token else {})}
        page = api.get(f"/batches/{batch_id}/results", params=params).json()
        results += page["results"]
        token = page["next_token"]
        if not token:
            return results


def items_table(stack: LocalRuntime) -> Any:
    assert stack.stack is not None
    return boto3.resource("dynamodb", region_name=stack.region).Table(stack.stack.ref("ItemsTable"))


def outcomes_in_table(stack: LocalRuntime, batch_id: str) -> list[dict[str, Any]]:
    table = items_table(stack)
    query: dict[str, Any] = {"KeyConditionExpression": "batch_id = :b", "ExpressionAttributeValues": {":b": batch_id}}
    records: list[dict[str, Any]] = []
    while True:
        page = table.query(**query)
        records += page["Items"]
        if "LastEvaluatedKey" not in page:
            return records
        query["ExclusiveStartKey"] = page["LastEvaluatedKey"]
