"""The datasets' AWS services on moto: the DatasetsTable as template.yaml makes it, the images bucket, the queue."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import pytest
from moto import mock_aws

from modelrun.datasets.registration import Registrations
from modelrun.datasets.store import DatasetStore
from modelrun.tenants import Tenant
from tests.batchfixtures import create_table, use_fake_credentials

BUCKET = "unit-datasets-images"
A, B, DEFAULT = Tenant("tenant-a"), Tenant("tenant-b"), Tenant("default")


@dataclass
class DatasetsAws:
    s3: Any
    sqs: Any
    table: Any
    queue_url: str
    store: DatasetStore

    def put(self, *keys: str, body: bytes = b"png") -> None:
        for key in keys:
            self.s3.put_object(Bucket=BUCKET, Key=key, Body=body)

    def registrations(self, **settings: Any) -> Registrations:
        return Registrations(self.store, self.s3, BUCKET, self.sqs, self.queue_url, **settings)

    def messages(self) -> list[tuple[dict[str, Any], int]]:
        """Every message on the queue now (received, and so hidden for a while), with its receive count."""
        found: list[tuple[dict[str, Any], int]] = []
        while True:
            batch = self.sqs.receive_message(
                QueueUrl=self.queue_url, MaxNumberOfMessages=10, AttributeNames=["ApproximateReceiveCount"]
            ).get("Messages", [])
            if not batch:
                return found
            for message in batch:
                count = int(message["Attributes"]["ApproximateReceiveCount"])
                found.append((json.loads(message["Body"]), count))
                self.sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"])


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[DatasetsAws]:
    use_fake_credentials(monkeypatch)
    with mock_aws():
        s3 = boto3.client("s3")
        s3.create_bucket(Bucket=BUCKET)
        sqs = boto3.client("sqs")
        queue_url = sqs.create_queue(QueueName="unit-dataset-queue")["QueueUrl"]
        table = create_table(boto3.resource("dynamodb"), "DatasetsTable", "unit-datasets")
        yield DatasetsAws(s3=s3, sqs=sqs, table=table, queue_url=queue_url, store=DatasetStore(table))
