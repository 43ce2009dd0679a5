"""DynamoDB stream polling with Lambda's semantics, against moto's DynamoDB Streams, with a recording fake function.

``poll_once`` is driven by hand (no poller thread), so every test is deterministic.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import boto3
import pytest
from moto import mock_aws

from modelrun_local import streams
from modelrun_local.lambdas import Invocation, error_payload
from modelrun_local.streams import StreamPoller
from tests.batchfixtures import table_properties, use_fake_credentials


@dataclass
class Function:
    """Records each event; ``answer`` decides the invocation's outcome from the records it got."""

    answer: Callable[[list[dict[str, Any]]], Invocation] = lambda records: Invocation({"batchItemFailures": []})
    events: list[list[dict[str, Any]]] = field(default_factory=list)
    logical_id: str = "NotifyFunction"
    arn: str = "arn:aws:lambda:us-east-1:123456789012:function:notify"

    def invoke(self, event: dict[str, Any]) -> Invocation:
        json.dumps(event)  # a real event serialises
        self.events.append(event["Records"])
        return self.answer(event["Records"])

    def batch_ids(self) -> list[list[str]]:
        return [[record["dynamodb"]["Keys"]["batch_id"]["S"] for record in records] for records in self.events]


def fails(records: list[dict[str, Any]]) -> Invocation:
    return Invocation(error_payload("RuntimeError", "boom"), "RuntimeError")


@dataclass
class Stream:
    table: Any
    client: Any
    arn: str
    function: Function = field(default_factory=Function)
    failures: list[dict[str, Any]] = field(default_factory=list)

    def poller(self, **settings: Any) -> StreamPoller:
        poller = StreamPoller(
            function=self.function,  # type: ignore[arg-type]
            streams=self.client,
            stream_arn=self.arn,
            region="us-east-1",
            on_failure=self.failures.append,
            **settings,
        )
        poller.open_shards()
        return poller

    def put(self, *batch_ids: str) -> None:
        for batch_id in batch_ids:
            self.table.put_item(Item={"batch_id": batch_id, "status": "RUNNING", "predicted": 1})


@pytest.fixture
def stream(monkeypatch: pytest.MonkeyPatch) -> Iterator[Stream]:
    use_fake_credentials(monkeypatch)
    monkeypatch.setattr(streams, "RETRY_BACKOFF_S", (0.0,))
    with mock_aws():
        dynamodb = boto3.resource("dynamodb", region_name="us-east-1")
        table = dynamodb.create_table(
            TableName="jobs",
            StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_IMAGE"},
            **table_properties("JobsTable"),
        )
        yield Stream(table, boto3.client("dynamodbstreams", region_name="us-east-1"), table.latest_stream_arn)


def test_only_changes_made_after_the_poller_starts_are_delivered(stream: Stream) -> None:
    stream.put("before")
    poller = stream.poller()

    stream.put("after-1", "after-2")
    poller.poll_once()

    assert stream.function.batch_ids() == [["after-1", "after-2"]]


def test_a_record_is_shaped_as_lambda_delivers_a_dynamodb_stream_record(stream: Stream) -> None:
    poller = stream.poller()
    stream.put("b-1")

    poller.poll_once()

    (record,) = stream.function.events[0]
    assert record["eventName"] == "INSERT"
    assert record["eventSource"] == "aws:dynamodb"
    assert record["eventSourceARN"] == stream.arn
    assert record["awsRegion"] == "us-east-1"
    assert record["dynamodb"]["NewImage"] == {
        "batch_id": {"S": "b-1"},
        "status": {"S": "RUNNING"},
        "predicted": {"N": "1"},
    }
    assert isinstance(record["dynamodb"]["ApproximateCreationDateTime"], int)
    assert record["dynamodb"]["StreamViewType"] == "NEW_IMAGE"
    assert record["dynamodb"]["SequenceNumber"].isdigit()


def test_a_deleted_item_is_delivered_as_remove_without_a_new_image(stream: Stream) -> None:
    stream.put("b-1")
    poller = stream.poller()
    stream.table.delete_item(Key={"batch_id": "b-1"})

    poller.poll_once()

    (record,) = stream.function.events[0]
    assert record["eventName"] == "REMOVE"
    assert "NewImage" not in record["dynamodb"]


def test_no_invocation_carries_more_records_than_the_batch_size(stream: Stream) -> None:
    poller = stream.poller(batch_size=2)
    stream.put("a", "b", "c", "d", "e")

    while poller.poll_once():
        pass

    assert stream.function.batch_ids() == [["a", "b"], ["c", "d"], ["e"]]


def test_records_wait_for_the_batching_window_unless_the_batch_is_full(stream: Stream) -> None:
    poller = stream.poller(batch_size=3, batching_window_s=3600)
    stream.put("a", "b")
    poller.poll_once()
    assert stream.function.events == []

    stream.put("c")
    poller.poll_once()

    assert stream.function.batch_ids() == [["a", "b", "c"]]


def test_a_failed_batch_is_retried_until_it_succeeds(stream: Stream) -> None:
    outcomes = iter([fails, fails, lambda records: Invocation(None)])
    stream.function.answer = lambda records: next(outcomes)(records)
    poller = stream.poller()
    stream.put("a", "b")

    poller.poll_once()

    assert stream.function.batch_ids() == [["a", "b"]] * 3
    assert stream.failures == []


def test_a_batch_still_failing_after_the_retries_goes_to_the_on_failure_destination(stream: Stream) -> None:
    stream.function.answer = fails
    poller = stream.poller(maximum_retry_attempts=2)
    stream.put("a", "b")

    poller.poll_once()

    assert len(stream.function.events) == 3  # the first try and two retries
    (failure,) = stream.failures
    info = failure["DDBStreamBatchInfo"]
    sequence_numbers = [record["dynamodb"]["SequenceNumber"] for record in stream.function.events[0]]
    assert (info["startSequenceNumber"], info["endSequenceNumber"]) == (sequence_numbers[0], sequence_numbers[-1])
    assert (info["batchSize"], info["streamArn"]) == (2, stream.arn)
    assert failure["requestContext"]["condition"] == "RetryAttemptsExhausted"
    assert failure["requestContext"]["approximateInvokeCount"] == 3
    assert failure["responseContext"]["functionError"] == "Unhandled"


def test_after_giving_up_on_a_batch_the_shard_moves_on(stream: Stream) -> None:
    stream.function.answer = lambda records: (
        fails(records) if records[0]["dynamodb"]["Keys"]["batch_id"]["S"] == "bad" else Invocation(None)
    )
    poller = stream.poller(batch_size=1, maximum_retry_attempts=0)
    stream.put("bad", "good")

    while poller.poll_once():
        pass

    assert stream.function.batch_ids() == [["bad"], ["good"]]


def test_bisecting_isolates_the_record_that_fails(stream: Stream) -> None:
    def poisoned(records: list[dict[str, Any]]) -> Invocation:
        keys = [record["dynamodb"]["Keys"]["batch_id"]["S"] for record in records]
        return fails(records) if "poison" in keys else Invocation(None)

    stream.function.answer = poisoned
    poller = stream.poller(bisect_on_error=True, maximum_retry_attempts=0)
    stream.put("a", "poison", "c", "d")

    poller.poll_once()

    assert ["a"] in stream.function.batch_ids()
    assert ["c", "d"] in stream.function.batch_ids()
    assert [f["DDBStreamBatchInfo"]["batchSize"] for f in stream.failures] == [1]


def test_a_reported_item_failure_retries_from_that_record(stream: Stream) -> None:
    answers: list[Callable[[list[dict[str, Any]]], Invocation]] = [
        lambda records: Invocation(
            {"batchItemFailures": [{"itemIdentifier": records[1]["dynamodb"]["SequenceNumber"]}]}
        ),
        lambda records: Invocation({"batchItemFailures": []}),
    ]
    stream.function.answer = lambda records: answers.pop(0)(records)
    poller = stream.poller(report_batch_item_failures=True)
    stream.put("a", "b", "c")

    poller.poll_once()

    assert stream.function.batch_ids() == [["a", "b", "c"], ["b", "c"]]


def test_a_malformed_partial_batch_response_retries_the_whole_batch(stream: Stream) -> None:
    answers = [Invocation({"batchItemFailures": "b"}), Invocation({"batchItemFailures": []})]
    stream.function.answer = lambda records: answers.pop(0)
    poller = stream.poller(report_batch_item_failures=True)
    stream.put("a", "b")

    poller.poll_once()

    assert stream.function.batch_ids() == [["a", "b"], ["a", "b"]]


def test_item_failures_are_ignored_without_report_batch_item_failures(stream: Stream) -> None:
    answer = {"batchItemFailures": [{"itemIdentifier": "1"}]}
    stream.function.answer = lambda records: Invocation(answer)
    poller = stream.poller()
    stream.put("a")

    poller.poll_once()

    assert len(stream.function.events) == 1


def test_polling_does_not_pile_up_shard_iterators_in_moto(stream: Stream) -> None:
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.dynamodbstreams.models import dynamodbstreams_backends

    poller = stream.poller()
    iterators = dynamodbstreams_backends[DEFAULT_ACCOUNT_ID]["us-east-1"].shard_iterators

    for _ in range(50):
        poller.poll_once()

    assert len(iterators) <= 2
