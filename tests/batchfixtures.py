"""Shared set-up for the batch domain's unit tests: moto's AWS behind fake credentials, with the jobs and items
tables created from template.yaml's own properties (so the tests cannot drift from the template), an images
bucket, and the demo digit samples whose file names carry their true label.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

import boto3
import pytest
from moto import mock_aws

from modelrun.batches.store import JobStore
from modelrun.tenants import DEFAULT_TENANT, Tenant
from modelrun_local.template import load_yaml

REPO = Path(__file__).resolve().parents[1]
TEMPLATE = REPO / "template.yaml"
MODELS = REPO / "models"
SAMPLES = REPO / "samples" / "digits"

BUCKET = "modelrun-unit-images"
JOBS_TABLE = "modelrun-unit-jobs"
ITEMS_TABLE = "modelrun-unit-items"
AUDIT_TABLE = "modelrun-unit-audit"
STACK_KEY_ID = "stackkey01"
"""The id of the stack's own API key, which the handlers know as the default tenant's (``API_KEY_ID``)."""
DEFAULT = Tenant(DEFAULT_TENANT)
"""The stack's own key's tenant: the jobs of these tests are its, their files in the bucket outside tenants/."""

_TABLE_ARGUMENTS = ("KeySchema", "AttributeDefinitions", "GlobalSecondaryIndexes", "BillingMode")


@cache
def _resources() -> dict[str, Any]:
    resources: dict[str, Any] = load_yaml(TEMPLATE)["Resources"]
    return resources


def table_properties(logical_id: str) -> dict[str, Any]:
    """The template's properties of one table, as create_table takes them (TTL, PITR and SSE left out)."""
    properties = _resources()[logical_id]["Properties"]
    return {name: properties[name] for name in _TABLE_ARGUMENTS if name in properties}


def create_table(dynamodb: Any, logical_id: str, name: str) -> Any:
    table = dynamodb.create_table(TableName=name, **table_properties(logical_id))
    table.wait_until_exists()
    return table


def use_fake_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_SECURITY_TOKEN", "testing")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.delenv("AWS_PROFILE", raising=False)


@dataclass
class BatchAws:
    """The mocked services a batch touches, with the job store over the template's tables."""

    s3: Any
    dynamodb: Any
    jobs: Any
    items: Any
    store: JobStore

    def put(self, key: str, body: bytes) -> None:
        self.s3.put_object(Bucket=BUCKET, Key=key, Body=body)

    def text(self, key: str) -> str:
        body: bytes = self.s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()
        return body.decode("utf-8")

    def object_keys(self) -> list[str]:
        listed = self.s3.list_objects_v2(Bucket=BUCKET)
        return [entry["Key"] for entry in listed.get("Contents", [])]


@contextmanager
def batch_aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[BatchAws]:
    """moto's S3 and DynamoDB for the length of one test."""
    use_fake_credentials(monkeypatch)
    with mock_aws():
        s3 = boto3.client("s3")
        s3.create_bucket(Bucket=BUCKET)
        dynamodb = boto3.resource("dynamodb")
        jobs = create_table(dynamodb, "JobsTable", JOBS_TABLE)
        items = create_table(dynamodb, "ItemsTable", ITEMS_TABLE)
        create_table(dynamodb, "AuditTable", AUDIT_TABLE)
        yield BatchAws(s3=s3, dynamodb=dynamodb, jobs=jobs, items=items, store=JobStore(jobs, items))


# One sample per digit 0..9 that the demo model labels correctly (digit-9-0037.png, the first 9, it reads as a 5).
DIGIT_SAMPLES = (
    "digit-0-0078.png",
    "digit-1-0021.png",
    "digit-2-0051.png",
    "digit-3-0045.png",
    "digit-4-0024.png",
    "digit-5-0035.png",
    "digit-6-0034.png",
    "digit-7-0081.png",
    "digit-8-0028.png",
    "digit-9-0039.png",
)


def digit_samples() -> list[Path]:
    """The samples of :data:`DIGIT_SAMPLES`, digit 0 first."""
    return [SAMPLES / name for name in DIGIT_SAMPLES]


def true_label(sample: Path) -> str:
    """``digit-<label>-<row>.png`` -> ``<label>``."""
    return sample.name.split("-")[1]


class TimeLeft:
    """An invocation's remaining time, as a Lambda context reports it: the given answers in turn (the last one
    repeats), each call counted. No clock, no sleeping."""

    def __init__(self, *answers_ms: int) -> None:
        self.answers_ms = answers_ms
        self.calls = 0

    def __call__(self) -> int:
        answer = self.answers_ms[min(self.calls, len(self.answers_ms) - 1)]
        self.calls += 1
        return answer


def import_batch_status_handler(monkeypatch: pytest.MonkeyPatch, module_name: str) -> ModuleType:
    """functions/batch_status/app.py imported fresh (inside ``batch_aws``, which makes the audit table it writes) with
    the environment its template entry gives it, under ``module_name``; send it events :func:`from_stack_key`."""
    for name, value in {
        "JOBS_TABLE": JOBS_TABLE,
        "ITEMS_TABLE": ITEMS_TABLE,
        "IMAGES_BUCKET": BUCKET,
        "AUDIT_TABLE": AUDIT_TABLE,
        "API_KEY_ID": STACK_KEY_ID,
        "POWERTOOLS_TRACE_DISABLED": "true",
        "POWERTOOLS_SERVICE_NAME": "modelrun",
    }.items():
        monkeypatch.setenv(name, value)
    spec = importlib.util.spec_from_file_location(module_name, REPO / "functions" / "batch_status" / "app.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)
    return module


def from_stack_key(event: dict[str, Any]) -> dict[str, Any]:
    """A REST event as API Gateway passes it after validating the stack's own key (the default tenant's)."""
    event["requestContext"].setdefault("identity", {})["apiKeyId"] = STACK_KEY_ID
    return event


@dataclass
class BatchStatusContext:
    """What Powertools' inject_lambda_context reads of BatchStatusFunction's Lambda context."""

    function_name: str = "BatchStatusFunction"
    function_version: str = "$LATEST"
    memory_limit_in_mb: int = 1769
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:123456789012:function:BatchStatusFunction"
    aws_request_id: str = "c0ffee00-0000-4000-8000-0000000000b1"
