"""SQS event source polling against moto's SQS, with a recording fake function; ``poll_once`` driven by hand."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import boto3
import pytest
from moto import mock_aws

from modelrun_local.lambdas import Invocation
from modelrun_local.sqs import SqsPoller
from tests.batchfixtures import use_fake_credentials


@dataclass
class Function:
    """Records the bodies of each event's messages and succeeds."""

    events: list[list[str]] = field(default_factory=list)
    logical_id: str = "RecoverFunction"

    def invoke(self, event: dict[str, Any]) -> Invocation:
        json.dumps(event)  # a real event serialises
        self.events.append([record["body"] for record in event["Records"]])
        return Invocation(None)


@dataclass
class Queue:
    client: Any
    url: str
    receives: list[int] = field(default_factory=list)
    function: Function = field(default_factory=Function)

    def poller(self) -> SqsPoller:
        receive = self.client.receive_message

        def counted(**request: Any) -> Any:
            answer = receive(**request)
            self.receives.append(len(answer.get("Messages", [])))
            return answer

        counting = type("CountingClient", (), {"receive_message": staticmethod(counted)})()
        counting.delete_message_batch = self.client.delete_message_batch
        return SqsPoller(
            function=self.function,  # type: ignore[arg-type]
            sqs=counting,
            queue_url=self.url,
            queue_arn="arn:aws:sqs:us-east-1:123456789012:dead-letters",
            region="us-east-1",
        )


@pytest.fixture
def queue(monkeypatch: pytest.MonkeyPatch) -> Iterator[Queue]:
    use_fake_credentials(monkeypatch)
    with mock_aws():
        client = boto3.client("sqs", region_name="us-east-1")
        url = client.create_queue(QueueName="dead-letters", Attributes={"VisibilityTimeout": "30"})["QueueUrl"]
        yield Queue(client, url)


def test_an_empty_queue_is_polled_without_a_receive(queue: Queue) -> None:
    # given a poller of a queue with no message
    poller = queue.poller()

    # when it polls three times
    handled = [poller.poll_once() for _ in range(3)]

    # then nothing was received, asked of SQS or delivered
    assert handled == [0, 0, 0]
    assert queue.receives == []
    assert queue.function.events == []


def test_a_sent_message_is_received_delivered_and_deleted(queue: Queue) -> None:
    # given a message in the queue
    poller = queue.poller()
    queue.client.send_message(QueueUrl=queue.url, MessageBody="chunk 3")

    # when the poller polls twice
    handled = [poller.poll_once(), poller.poll_once()]

    # then the first poll received and delivered it, and it was deleted: the second poll found nothing to ask for
    assert handled == [1, 0]
    assert queue.receives == [1]
    assert queue.function.events == [["chunk 3"]]
    attributes = queue.client.get_queue_attributes(QueueUrl=queue.url, AttributeNames=["All"])["Attributes"]
    assert attributes["ApproximateNumberOfMessages"] == "0"
    assert attributes["ApproximateNumberOfMessagesNotVisible"] == "0"


def test_a_message_in_flight_is_not_received_again_before_its_visibility_timeout(queue: Queue) -> None:
    # given a message another consumer has received (invisible for 30 s)
    poller = queue.poller()
    queue.client.send_message(QueueUrl=queue.url, MessageBody="chunk 4")
    queue.client.receive_message(QueueUrl=queue.url)

    # when the poller polls
    handled = poller.poll_once()

    # then it neither received nor delivered anything
    assert handled == 0
    assert queue.receives == []
    assert queue.function.events == []
