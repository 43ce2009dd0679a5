"""Live batch progress over the WebSocket API on the local stack, with a real client (``websocket-client``).

Waiting is by messages, never by sleeping: ``caught_up`` changes a marker job and waits for its progress message,
which the notifier (one stream shard, in order) can only send after every job change made before it.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import websocket

from modelrun.batches.store import JobStore
from modelrun.live.connections import ConnectionStore
from modelrun.tenants import DEFAULT_TENANT, Tenant
from modelrun_local.runtime import LocalRuntime
from tests.integration.conftest import API_KEY, REPO, SAMPLES, Api
from tests.integration.helpers import upload, wait_for

EVENTS = REPO / "events"
TIMEOUT_S = 240.0


class Client:
    """A WebSocket client that keeps every message it received, in order."""

    def __init__(self, url: str) -> None:
        self.ws = websocket.create_connection(url, timeout=TIMEOUT_S)
        self.messages: list[dict[str, Any]] = []

    def send(self, **message: Any) -> None:
        self.ws.send(json.dumps(message))

    def send_text(self, text: str) -> None:
        self.ws.send(text)

    def until(self, predicate: Callable[[dict[str, Any]], bool], timeout: float = TIMEOUT_S) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.ws.settimeout(max(0.1, deadline - time.monotonic()))
            opcode, data = self.ws.recv_data()
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                raise websocket.WebSocketConnectionClosedException(f"closed by the server: {data!r}")
            message: dict[str, Any] = json.loads(data)
            self.messages.append(message)
            if predicate(message):
                return message
        raise AssertionError(f"no such message within {timeout} s; got {self.messages[-5:]}")

    def subscribe(self, batch_id: str) -> dict[str, Any]:
        """Subscribe and wait for the batch's state, which is sent once the subscription is stored."""
        self.send(action="subscribe", batch_id=batch_id)
        self.until(lambda m: m["type"] == "subscribed" and m["batch_id"] == batch_id)
        return self.until(lambda m: m["type"] in ("progress", "completed") and m["batch_id"] == batch_id)

    def of(self, batch_id: str, kind: str | None = None) -> list[dict[str, Any]]:
        return [m for m in self.messages if m.get("batch_id") == batch_id and kind in (None, m["type"])]

    def close(self) -> None:
        self.ws.close()
        self.ws.shutdown()  # after a close the server started, close() leaves the TCP connection open


def keyed(url: str, key: str = API_KEY) -> str:
    return f"{url}?api_key={key}"


@pytest.fixture(scope="module")
def ws_url(stack: LocalRuntime) -> str:
    return stack.outputs()["WebSocketUrl"]


@pytest.fixture
def connect(ws_url: str) -> Iterator[Callable[[], Client]]:
    clients: list[Client] = []

    def open_client() -> Client:
        clients.append(Client(keyed(ws_url)))
        return clients[-1]

    yield open_client
    for client in clients:
        client.close()


@pytest.fixture(scope="module")
def store(stack: LocalRuntime) -> JobStore:
    assert stack.stack is not None
    dynamodb = boto3.resource("dynamodb", region_name=stack.region)
    jobs = JobStore(dynamodb.Table(stack.stack.ref("JobsTable")), dynamodb.Table(stack.stack.ref("ItemsTable")))
    return jobs.for_tenant(Tenant(DEFAULT_TENANT))  # the jobs the test makes are the test key's tenant's


@pytest.fixture(scope="module")
def connections(stack: LocalRuntime) -> ConnectionStore:
    assert stack.stack is not None
    return ConnectionStore(
        boto3.resource("dynamodb", region_name=stack.region).Table(stack.stack.ref("ConnectionsTable"))
    )


@pytest.fixture(scope="module")
def management(stack: LocalRuntime) -> Any:
    """The management API client the functions use, at the endpoint their environment names."""
    assert stack.stack is not None
    endpoint = stack.stack.function("NotifyFunction").environment["WEBSOCKET_ENDPOINT"]
    return boto3.client("apigatewaymanagementapi", endpoint_url=endpoint, region_name=stack.region)


def new_marker(store: JobStore) -> str:
    batch_id = f"b-marker-{uuid.uuid4().hex[:12]}"
    store.create({"batch_id": batch_id, "model": "digits", "version": "1", "total": 1, "attempt": 1})
    return batch_id


def caught_up(client: Client, store: JobStore) -> None:
    """Wait until the notifier has handled every job change made so far (a status change is never throttled)."""
    marker = new_marker(store)
    client.subscribe(marker)
    store.update(marker, status="RUNNING")
    client.until(lambda m: m["batch_id"] == marker and m["type"] == "progress" and m["status"] == "RUNNING")


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"{what}: not within {timeout} s")


# -- a batch watched from start to end -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def watched(stack: LocalRuntime, api: Api, s3: Any, images_bucket: str, store: JobStore, ws_url: str) -> dict[str, Any]:
    """450 images in chunks of 10, two at a time (several seconds of work), watched by a client from the start."""
    paths = sorted(SAMPLES.glob("digit-*.png"))
    keys = upload(s3, images_bucket, {f"websocket/watched/{path.name}": path.read_bytes() for path in paths})
    response = api.post("/batches", json={"images": keys, "chunk_size": 10, "max_concurrency": 2})
    assert response.status_code == 202, response.text
    batch_id = response.json()["batch_id"]
    client = Client(keyed(ws_url))
    try:
        client.subscribe(batch_id)
        client.until(lambda m: m["batch_id"] == batch_id and m["type"] == "completed")
        caught_up(client, store)
    finally:
        client.close()
    return {"batch_id": batch_id, "messages": client.of(batch_id), "job": wait_for(api, batch_id)}


def test_a_subscriber_is_first_told_it_is_subscribed(watched: dict[str, Any]) -> None:
    assert watched["messages"][0] == {"type": "subscribed", "batch_id": watched["batch_id"]}


def test_a_subscriber_of_a_running_batch_receives_progress_while_it_runs(watched: dict[str, Any]) -> None:
    progress = [m for m in watched["messages"] if m["type"] == "progress"]
    done = [m["counts"]["predicted"] + m["counts"]["failed"] for m in progress]
    # Received while the batch ran: at least two as chunks finished (neither before the first image nor after the
    # last), each with a rate and an ETA, and the figures never go back.
    midway = [m for m, count in zip(progress, done, strict=True) if 0 < count < 450]
    assert len(midway) >= 2, done
    assert all(m["status"] == "RUNNING" and m["counts"]["pending"] > 0 for m in midway)
    assert all(m["rate"] > 0 and m["eta_s"] >= 0 for m in midway)
    assert done == sorted(done)
    assert all(m["total"] == 450 for m in progress)


def test_a_subscriber_of_a_running_batch_receives_exactly_one_completed_message(watched: dict[str, Any]) -> None:
    assert [m["type"] for m in watched["messages"]].count("completed") == 1


def test_the_completed_message_is_the_last_one_of_the_batch(watched: dict[str, Any]) -> None:
    assert watched["messages"][-1]["type"] == "completed"


def test_the_completed_counts_equal_those_of_get_batch(watched: dict[str, Any]) -> None:
    completed = watched["messages"][-1]
    assert completed["counts"] == watched["job"]["counts"]
    assert completed["status"] == watched["job"]["status"] == "COMPLETED"
    assert completed["percent"] == watched["job"]["percent"] == 100.0


def test_the_links_of_the_completed_message_answer(api: Api, watched: dict[str, Any]) -> None:
    links = watched["messages"][-1]["links"]
    results = api.session.get(links["results"], timeout=60)
    errors = api.session.get(links["errors"], timeout=60)
    assert results.status_code == 200, results.text
    assert results.json()["batch_id"] == watched["batch_id"]
    assert errors.status_code == 200, errors.text


def test_a_client_subscribing_to_a_finished_batch_gets_completed_at_once(
    watched: dict[str, Any], connect: Callable[[], Client]
) -> None:
    client = connect()
    completed = client.subscribe(watched["batch_id"])
    assert [m["type"] for m in client.messages] == ["subscribed", "completed"]
    assert completed["counts"] == watched["job"]["counts"]


# -- connecting ----------------------------------------------------------------------------------------------------
def test_a_wrong_api_key_is_refused_with_403(ws_url: str) -> None:
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        websocket.create_connection(keyed(ws_url, "not-the-key"), timeout=30)
    assert refused.value.status_code == 403


def test_a_missing_api_key_is_refused_with_401(ws_url: str) -> None:
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        websocket.create_connection(ws_url, timeout=30)
    assert refused.value.status_code == 401


def test_the_api_key_may_come_as_the_x_api_key_header(ws_url: str, store: JobStore) -> None:
    ws = websocket.create_connection(ws_url, header={"x-api-key": API_KEY}, timeout=30)
    try:
        batch_id = new_marker(store)
        ws.send(json.dumps({"action": "subscribe", "batch_id": batch_id}))
        assert json.loads(ws.recv()) == {"type": "subscribed", "batch_id": batch_id}
    finally:
        ws.close()


def test_the_url_without_the_stage_is_accepted(ws_url: str) -> None:
    without_stage = ws_url.rsplit("/", 1)[0] + "/"
    ws = websocket.create_connection(keyed(without_stage), timeout=30)
    try:
        ws.send("{}")
        assert json.loads(ws.recv())["code"] == "invalid_message"
    finally:
        ws.close()


# -- what clients send ---------------------------------------------------------------------------------------------
def test_an_unknown_action_is_answered_with_an_unknown_action_error(connect: Callable[[], Client]) -> None:
    client = connect()
    client.send(action="status", batch_id="b-1")
    error = client.until(lambda m: True)
    assert error["type"] == "error"
    assert error["code"] == "unknown_action"
    assert "subscribe" in error["message"]


def test_a_message_that_is_not_json_is_answered_with_an_invalid_message_error(connect: Callable[[], Client]) -> None:
    client = connect()
    client.send_text("subscribe please")
    assert client.until(lambda m: True)["code"] == "invalid_message"


def test_subscribing_to_an_unknown_batch_is_answered_not_found(connect: Callable[[], Client]) -> None:
    client = connect()
    client.send(action="subscribe", batch_id="b-20000101T000000-000000000000")
    error = client.until(lambda m: True)
    assert (error["type"], error["code"]) == ("error", "not_found")


def test_unsubscribing_removes_the_subscription(
    connect: Callable[[], Client], store: JobStore, connections: ConnectionStore
) -> None:
    client = connect()
    batch_id = new_marker(store)
    client.subscribe(batch_id)

    client.send(action="unsubscribe", batch_id=batch_id)

    assert client.until(lambda m: m["type"] == "unsubscribed") == {"type": "unsubscribed", "batch_id": batch_id}
    assert list(connections.subscribers(batch_id)) == []


# -- connections that go away --------------------------------------------------------------------------------------
def test_a_client_that_disconnects_is_removed_from_the_subscriptions(
    connect: Callable[[], Client], store: JobStore, connections: ConnectionStore
) -> None:
    client = connect()
    batch_id = new_marker(store)
    client.subscribe(batch_id)
    assert len(list(connections.subscribers(batch_id))) == 1

    client.close()

    wait_until(lambda: not list(connections.subscribers(batch_id)), "the subscription removed after $disconnect")


def test_a_post_to_a_closed_connection_is_answered_gone(
    connect: Callable[[], Client], store: JobStore, connections: ConnectionStore, management: Any
) -> None:
    client = connect()
    batch_id = new_marker(store)
    client.subscribe(batch_id)
    (subscriber,) = connections.subscribers(batch_id)
    client.close()
    wait_until(lambda: not list(connections.subscribers(batch_id)), "the connection closed")

    with pytest.raises(management.exceptions.GoneException) as gone:
        management.post_to_connection(ConnectionId=subscriber.connection_id, Data=b"{}")
    assert gone.value.response["ResponseMetadata"]["HTTPStatusCode"] == 410


def test_a_subscriber_whose_connection_is_gone_is_cleaned_up_when_progress_is_sent(
    connect: Callable[[], Client], store: JobStore, connections: ConnectionStore
) -> None:
    # Given a subscription left by a connection whose $disconnect never ran, beside a live subscriber
    batch_id = new_marker(store)
    connections.connect("vanished-conn=", connected_at_ms=int(time.time() * 1000))
    connections.subscribe("vanished-conn=", batch_id, connected_at_ms=int(time.time() * 1000))
    client = connect()
    client.subscribe(batch_id)

    # When the batch changes (the notifier posts to both)
    store.update(batch_id, status="RUNNING")
    client.until(lambda m: m["batch_id"] == batch_id and m.get("status") == "RUNNING")

    # Then the post to the vanished connection was answered gone, and it is forgotten
    def subscribed() -> set[str]:
        return {sub.connection_id for sub in connections.subscribers(batch_id)}

    wait_until(lambda: "vanished-conn=" not in subscribed(), "the vanished connection forgotten")
    assert len(subscribed()) == 1  # the live client stays


def test_deleting_a_connection_through_the_management_api_closes_it(
    connect: Callable[[], Client], store: JobStore, connections: ConnectionStore, management: Any
) -> None:
    client = connect()
    batch_id = new_marker(store)
    client.subscribe(batch_id)
    (subscriber,) = connections.subscribers(batch_id)

    management.delete_connection(ConnectionId=subscriber.connection_id)

    with pytest.raises(websocket.WebSocketConnectionClosedException):
        client.until(lambda m: False, timeout=30)


# -- a retried batch -----------------------------------------------------------------------------------------------
def test_a_retry_attempt_of_a_batch_sends_a_second_completed(
    api: Api, s3: Any, images_bucket: str, store: JobStore, connect: Callable[[], Client]
) -> None:
    # Given a batch that ended with a failure (an image missing) watched by a client
    paths = sorted(SAMPLES.glob("digit-*.png"))[:5]
    keys = upload(s3, images_bucket, {f"websocket/retry/{path.name}": path.read_bytes() for path in paths[:4]})
    missing = f"websocket/retry/{paths[4].name}"
    response = api.post("/batches", json={"images": [*keys, missing]})
    batch_id = response.json()["batch_id"]
    client = connect()
    client.subscribe(batch_id)
    first = client.until(lambda m: m["batch_id"] == batch_id and m["type"] == "completed")

    # When the missing image is uploaded and the batch retried
    upload(s3, images_bucket, {missing: paths[4].read_bytes()})
    assert api.post(f"/batches/{batch_id}/retry").status_code == 202
    second = client.until(lambda m: m["batch_id"] == batch_id and m["type"] == "completed")
    caught_up(client, store)

    # Then each attempt's end was announced once, with its own status and counts
    assert (first["attempt"], first["status"], first["counts"]["failed"]) == (1, "COMPLETED_WITH_ERRORS", 1)
    assert (second["attempt"], second["status"], second["counts"]["failed"]) == (2, "COMPLETED", 0)
    assert [m["attempt"] for m in client.of(batch_id, "completed")] == [1, 2]
    assert second["counts"] == wait_for(api, batch_id)["counts"]


# -- the sample events -----------------------------------------------------------------------------------------------
SAMPLE_BATCH = "b-20261119T101320-7c1d2e3f4a5b"
WEBSOCKET_EVENTS = sorted((EVENTS / "websocket").glob("*.json"))
NOTIFY_EVENTS = sorted((EVENTS / "notify").glob("*.json"))


def sample_event(path: Path) -> Any:
    return json.loads(path.read_text().replace("YOUR_API_KEY", API_KEY))


@pytest.mark.parametrize("path", WEBSOCKET_EVENTS, ids=[path.stem for path in WEBSOCKET_EVENTS])
def test_a_websocket_sample_event_gets_the_answer_its_name_promises(stack: LocalRuntime, path: Path) -> None:
    assert stack.stack is not None
    invocation = stack.stack.function("WebSocketFunction").invoke(sample_event(path))
    assert not invocation.failed, invocation.payload
    status = invocation.payload["statusCode"]
    if path.stem.startswith("bad-"):
        assert status in (401, 403)
        assert json.loads(invocation.payload["body"])["error"]["code"] == "invalid_api_key"
    else:
        assert status == 200


@pytest.mark.parametrize("path", NOTIFY_EVENTS, ids=[path.stem for path in NOTIFY_EVENTS])
def test_a_notify_sample_event_is_handled_without_failures(stack: LocalRuntime, path: Path) -> None:
    assert stack.stack is not None
    invocation = stack.stack.function("NotifyFunction").invoke(sample_event(path))
    assert not invocation.failed, invocation.payload
    assert invocation.payload == {"batchItemFailures": []}


def test_the_completed_sample_event_reaches_a_subscriber_of_its_batch(
    stack: LocalRuntime, store: JobStore, connect: Callable[[], Client]
) -> None:
    # Given a client subscribed to the batch the sample event names
    assert stack.stack is not None
    store.create({"batch_id": SAMPLE_BATCH, "model": "digits", "version": "1", "total": 450, "attempt": 1})
    client = connect()
    client.subscribe(SAMPLE_BATCH)

    # When NotifyFunction gets the sample stream event
    stack.stack.function("NotifyFunction").invoke(sample_event(EVENTS / "notify" / "job-completed.json"))

    # Then the client receives its completed message
    completed = client.until(lambda m: m["batch_id"] == SAMPLE_BATCH and m["type"] == "completed")
    assert (completed["status"], completed["counts"]) == (
        "COMPLETED_WITH_ERRORS",
        {"predicted": 447, "failed": 3, "pending": 0},
    )
