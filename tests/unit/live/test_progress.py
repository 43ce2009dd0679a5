"""Live batch progress: message builders and send decisions (pure), and the subscribe/fan-out rules on moto's
DynamoDB with the template's ConnectionsTable (a fake management API client records what would be posted)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from modelrun.batches.store import JobStore
from modelrun.errors import NotFound, TransientFailure
from modelrun.live.connections import ConnectionStore
from modelrun.live.messages import (
    MAX_MESSAGE_BYTES,
    PROGRESS_INTERVAL_MS,
    Completion,
    InvalidMessage,
    NotifyState,
    UnknownAction,
    completed_message,
    encode,
    error_message,
    latest_images,
    links,
    parse_request,
    progress_due,
    progress_message,
    rate_and_eta,
    state_message,
)
from modelrun.live.notifier import JobChange, ProgressNotifier
from modelrun.live.push import ConnectionGone, Pusher
from modelrun.live.routes import InvalidApiKey, LiveRoutes, MissingApiKey
from modelrun.tenants import Tenant
from tests.batchfixtures import create_table, use_fake_credentials

BATCH = "b-20260101T000000-0123456789ab"
API_URL = "https://abc123.execute-api.us-east-1.amazonaws.com/v1"
OWNER = Tenant("default")
KEYS = {"the-key-of-the-rest-api": OWNER, "the-key-of-another-one": Tenant("other")}


def tenant_of_key(value: str | None) -> Tenant:
    """The resolver's contract (``TenantResolver.for_key_value``), over two known keys."""
    if not value:
        raise MissingApiKey("send the API key")
    if value not in KEYS:
        raise InvalidApiKey("the API key is not valid")
    return KEYS[value]


def job(**fields: Any) -> dict[str, Any]:
    """A job record as JobStore.get (or a stream image through modelrun.aws.dynamo.plain) gives it."""
    record: dict[str, Any] = {
        "batch_id": BATCH,
        "status": "RUNNING",
        "attempt": 1,
        "total": 200,
        "predicted": 0,
        "failed": 0,
        "created_at": "2026-01-01T00:00:00.000Z",
        "started_at": "2026-01-01T00:00:10.000Z",
        "updated_at": "2026-01-01T00:00:10.000Z",
    }
    record.update(fields)
    return record


# -- client requests ---------------------------------------------------------------------------------------------
def test_a_subscribe_message_is_read_as_a_subscribe_request_for_its_batch() -> None:
    request = parse_request(json.dumps({"action": "subscribe", "batch_id": BATCH}))
    assert (request.action, request.batch_id) == ("subscribe", BATCH)


def test_an_unsubscribe_message_is_read_as_an_unsubscribe_request() -> None:
    assert parse_request(json.dumps({"action": "unsubscribe", "batch_id": BATCH})).action == "unsubscribe"


@pytest.mark.parametrize(
    "body",
    ["not json", "", None, "[1, 2]", '{"batch_id": "b-1"}', '"subscribe"'],
    ids=["text", "empty", "none", "array", "no-action", "string"],
)
def test_a_message_that_is_not_an_object_with_an_action_is_an_invalid_message(body: str | None) -> None:
    with pytest.raises(InvalidMessage, match=r'"action"|not JSON'):
        parse_request(body)


@pytest.mark.parametrize("action", ["status", "SUBSCRIBE", 7, None])
def test_an_action_other_than_subscribe_or_unsubscribe_is_an_unknown_action(action: Any) -> None:
    with pytest.raises(UnknownAction, match="subscribe, unsubscribe"):
        parse_request(json.dumps({"action": action, "batch_id": BATCH}))


@pytest.mark.parametrize("batch_id", [None, 42, "", "has space", "x" * 129, "../etc"], ids=str)
def test_a_subscribe_without_a_well_formed_batch_id_is_an_invalid_message(batch_id: Any) -> None:
    with pytest.raises(InvalidMessage, match="batch_id"):
        parse_request(json.dumps({"action": "subscribe", "batch_id": batch_id}))


def test_an_unknown_action_error_does_not_echo_a_long_action_back() -> None:
    with pytest.raises(UnknownAction) as raised:
        parse_request(json.dumps({"action": "a" * 5000, "batch_id": BATCH}))
    assert len(raised.value.message) < 200


def test_an_error_message_carries_the_stable_code_and_the_advice() -> None:
    message = error_message(UnknownAction("unknown action 'x': use one of subscribe, unsubscribe"))
    assert message == {
        "type": "error",
        "code": "unknown_action",
        "message": "unknown action 'x': use one of subscribe, unsubscribe",
    }


# -- figures -----------------------------------------------------------------------------------------------------
def test_a_progress_message_has_exactly_the_contract_fields() -> None:
    message = progress_message(job(predicted=40, failed=10, updated_at="2026-01-01T00:00:20.000Z"))
    assert set(message) == {
        "type",
        "batch_id",
        "status",
        "attempt",
        "total",
        "counts",
        "percent",
        "rate",
        "eta_s",
        "updated_at",
    }
    assert message["type"] == "progress"
    assert message["updated_at"] == "2026-01-01T00:00:20.000Z"


def test_progress_counts_pending_as_what_has_no_outcome_yet() -> None:
    message = progress_message(job(total=200, predicted=120, failed=30))
    assert message["counts"] == {"predicted": 120, "failed": 30, "pending": 50}


def test_progress_percent_is_the_share_of_images_with_an_outcome() -> None:
    assert progress_message(job(total=3, predicted=1, failed=0))["percent"] == 33.33


def test_an_empty_batch_is_at_a_hundred_percent() -> None:
    assert progress_message(job(total=0))["percent"] == 100.0


def test_the_rate_is_images_with_an_outcome_per_second_since_the_start() -> None:
    # 50 outcomes 10 s after started_at
    rate, _ = rate_and_eta(job(predicted=45, failed=5, updated_at="2026-01-01T00:00:20.000Z"))
    assert rate == 5.0


def test_the_eta_is_what_is_left_at_the_current_rate() -> None:
    # 50 done in 10 s (5/s), 150 left
    _, eta = rate_and_eta(job(total=200, predicted=50, updated_at="2026-01-01T00:00:20.000Z"))
    assert eta == 30.0


def test_rate_and_eta_are_unknown_before_the_job_starts() -> None:
    assert rate_and_eta(job(status="QUEUED", started_at=None)) == (None, None)


def test_rate_and_eta_are_unknown_when_no_time_has_passed_since_the_start() -> None:
    assert rate_and_eta(job(updated_at="2026-01-01T00:00:10.000Z")) == (None, None)


def test_the_eta_is_unknown_while_nothing_is_done_yet() -> None:
    assert rate_and_eta(job(updated_at="2026-01-01T00:00:30.000Z")) == (0.0, None)


def test_a_finished_job_has_its_rate_over_the_whole_run_and_no_time_left() -> None:
    finished = job(
        status="COMPLETED", predicted=200, finished_at="2026-01-01T00:00:50.000Z", updated_at="2026-01-01T00:01:40.000Z"
    )
    assert rate_and_eta(finished) == (5.0, 0.0)


def test_an_unreadable_timestamp_leaves_the_rate_unknown() -> None:
    assert rate_and_eta(job(started_at="yesterday", predicted=10))[0] is None


# -- completed ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("status", ["COMPLETED", "COMPLETED_WITH_ERRORS", "FAILED"])
def test_a_terminal_job_is_announced_by_a_completed_message_with_links(status: str) -> None:
    finished = job(status=status, predicted=150, failed=50, finished_at="2026-01-01T00:00:50.000Z")
    message = state_message(finished, API_URL)
    assert message["type"] == "completed"
    assert message["status"] == status
    assert message["counts"] == {"predicted": 150, "failed": 50, "pending": 0}
    assert message["links"] == {
        "results": f"{API_URL}/batches/{BATCH}/results",
        "errors": f"{API_URL}/batches/{BATCH}/errors",
    }


def test_a_completed_message_has_the_progress_fields_plus_links() -> None:
    finished = job(status="COMPLETED", predicted=200, finished_at="2026-01-01T00:00:50.000Z")
    completed = completed_message(finished, API_URL)
    assert set(completed) == set(progress_message(finished)) | {"links"}


def test_a_running_job_is_announced_by_a_progress_message() -> None:
    assert state_message(job(), API_URL)["type"] == "progress"


def test_a_completed_message_for_a_running_job_is_refused() -> None:
    with pytest.raises(ValueError, match="not terminal"):
        completed_message(job(), API_URL)


def test_links_tolerate_a_trailing_slash_in_the_api_url() -> None:
    assert links(API_URL + "/", BATCH)["results"] == f"{API_URL}/batches/{BATCH}/results"


# -- sizes -------------------------------------------------------------------------------------------------------
def test_the_largest_messages_the_builders_make_stay_far_below_the_websocket_limit() -> None:
    # Given the longest batch id a client may subscribe with, a long API URL and the largest figures
    batch_id = "b" * 128
    huge = job(batch_id=batch_id, status="COMPLETED_WITH_ERRORS", total=5_000_000, predicted=4_999_999, failed=1)
    huge["finished_at"] = "2026-01-01T10:00:10.000Z"
    api_url = "https://" + "x" * 200 + ".example.org/v1"
    messages = [progress_message(huge), completed_message(huge, api_url)]
    messages.append(
        error_message(NotFound(f"no batch {batch_id!r}: subscribe with the batch_id POST /batches returned"))
    )

    # When they are encoded as sent
    sizes = [len(encode(message)) for message in messages]

    # Then each is under 2 KB, let alone 128 KB
    assert max(sizes) < 2048


def test_a_message_over_the_websocket_limit_is_refused_before_it_is_sent() -> None:
    with pytest.raises(ValueError, match="exceeds"):
        encode({"type": "progress", "padding": "x" * MAX_MESSAGE_BYTES})


# -- when progress may go ----------------------------------------------------------------------------------------
def test_the_first_progress_of_a_batch_is_due() -> None:
    assert progress_due(None, job(), now_ms=1_000)


def test_progress_within_the_interval_of_the_last_one_is_not_due() -> None:
    last = NotifyState(sent_at_ms=1_000, status="RUNNING", attempt=1)
    assert not progress_due(last, job(), now_ms=1_000 + PROGRESS_INTERVAL_MS - 1)


def test_progress_once_the_interval_has_passed_is_due() -> None:
    last = NotifyState(sent_at_ms=1_000, status="RUNNING", attempt=1)
    assert progress_due(last, job(), now_ms=1_000 + PROGRESS_INTERVAL_MS)


def test_a_status_change_is_due_at_once() -> None:
    last = NotifyState(sent_at_ms=1_000, status="QUEUED", attempt=1)
    assert progress_due(last, job(status="RUNNING"), now_ms=1_001)


def test_a_new_attempt_is_due_at_once() -> None:
    last = NotifyState(sent_at_ms=1_000, status="RUNNING", attempt=1)
    assert progress_due(last, job(attempt=2), now_ms=1_001)


def test_a_terminal_job_gets_no_progress_message() -> None:
    assert not progress_due(None, job(status="COMPLETED"), now_ms=1_000)


def test_of_a_batch_of_changes_each_batch_keeps_its_latest_image() -> None:
    images = [job(predicted=1), job(batch_id="other", predicted=5), job(predicted=2)]
    latest, _ = latest_images(images)
    assert latest[BATCH]["predicted"] == 2
    assert latest["other"]["predicted"] == 5


def test_of_a_batch_of_changes_each_terminal_status_of_each_attempt_is_kept_once() -> None:
    images = [
        job(status="COMPLETED_WITH_ERRORS", failed=1),
        job(status="COMPLETED_WITH_ERRORS", failed=1, results_key="r"),  # the same end, written again
        job(status="QUEUED", attempt=2),
        job(status="COMPLETED", attempt=2),
    ]
    _, terminal = latest_images(images)
    assert [Completion.of(image) for image in terminal[BATCH]] == [
        Completion(1, "COMPLETED_WITH_ERRORS"),
        Completion(2, "COMPLETED"),
    ]


# ================================================================================================================
# The rules on DynamoDB (moto, the template's tables) with a recording management API client
# ================================================================================================================


@dataclass
class FakeManagementApi:
    """Records posts; connections in ``gone`` answer GoneException, in ``throttled`` LimitExceededException."""

    gone: set[str] = field(default_factory=set)
    throttled: set[str] = field(default_factory=set)
    posts: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def post_to_connection(self, ConnectionId: str, Data: bytes) -> None:
        refusals = ((self.gone, "GoneException", 410), (self.throttled, "LimitExceededException", 429))
        for failing, code, status in refusals:
            if ConnectionId in failing:
                error = {"Error": {"Code": code, "Message": ""}, "ResponseMetadata": {"HTTPStatusCode": status}}
                raise ClientError(error, "PostToConnection")  # type: ignore[arg-type]
        self.posts.append((ConnectionId, json.loads(Data)))

    def sent(self, connection_id: str, kind: str | None = None) -> list[dict[str, Any]]:
        return [m for c, m in self.posts if c == connection_id and (kind is None or m["type"] == kind)]


@dataclass
class Live:
    jobs: JobStore
    connections: ConnectionStore
    api: FakeManagementApi
    routes: LiveRoutes
    notifier: ProgressNotifier
    clock: list[int]

    def connect(self, connection_id: str, key: str = "the-key-of-the-rest-api") -> None:
        self.routes.connect(connection_id, connected_at_ms=1_700_000_000_000, source_ip=None, api_key=key)

    def subscribe(self, connection_id: str, batch_id: str = BATCH) -> None:
        body = json.dumps({"action": "subscribe", "batch_id": batch_id})
        self.routes.message(connection_id, body, connected_at_ms=1_700_000_000_000)

    def change(self, *images: dict[str, Any]) -> str | None:
        changes = [JobChange(sequence_number=str(100 + index), job=image) for index, image in enumerate(images)]
        return self.notifier.notify(changes)

    def subscribers(self, batch_id: str = BATCH) -> list[str]:
        return [sub.connection_id for sub in self.connections.subscribers(batch_id)]


@pytest.fixture
def live(monkeypatch: pytest.MonkeyPatch) -> Iterator[Live]:
    use_fake_credentials(monkeypatch)
    with mock_aws(), ThreadPoolExecutor(max_workers=4) as pool:
        dynamodb = boto3.resource("dynamodb", region_name="us-east-1")
        jobs = JobStore(
            create_table(dynamodb, "JobsTable", "unit-jobs"), create_table(dynamodb, "ItemsTable", "unit-items")
        )
        connections = ConnectionStore(create_table(dynamodb, "ConnectionsTable", "unit-connections"))
        api = FakeManagementApi()
        pusher = Pusher(api)
        clock = [1_000_000]
        routes = LiveRoutes(
            connections=connections,
            pusher=pusher,
            jobs=jobs,
            api_url=API_URL,
            tenant_of_key=tenant_of_key,
        )
        notifier = ProgressNotifier(connections, pusher, API_URL, pool, clock=lambda: clock[0])
        yield Live(jobs, connections, api, routes, notifier, clock)


def new_job(live: Live, **fields: Any) -> dict[str, Any]:
    live.jobs.for_tenant(OWNER).create(
        {"batch_id": BATCH, "model": "digits", "version": "1", "total": 200, "attempt": 1}
    )
    if fields:
        live.jobs.update(BATCH, **fields)
    return live.jobs.get(BATCH)


def test_a_subscriber_is_told_subscribed_then_the_current_progress(live: Live) -> None:
    new_job(live, status="RUNNING", predicted=20)
    live.connect("c1")

    live.subscribe("c1")

    assert [m["type"] for m in live.api.sent("c1")] == ["subscribed", "progress"]
    assert live.api.sent("c1", "progress")[0]["counts"]["predicted"] == 20


def test_a_subscriber_to_a_finished_batch_gets_completed_at_once(live: Live) -> None:
    new_job(live, status="COMPLETED", predicted=200, finished_at="2026-01-01T00:01:00.000Z")
    live.connect("c1")

    live.subscribe("c1")

    assert [m["type"] for m in live.api.sent("c1")] == ["subscribed", "completed"]


def test_subscribing_to_an_unknown_batch_is_answered_not_found_and_stores_nothing(live: Live) -> None:
    live.connect("c1")

    live.subscribe("c1", "b-nope")

    assert live.api.sent("c1") == [
        {
            "type": "error",
            "code": "not_found",
            "message": "no batch 'b-nope': check the id returned by POST /batches",
        }
    ]
    assert live.subscribers("b-nope") == []


def test_an_unknown_action_is_answered_with_an_error_message(live: Live) -> None:
    live.routes.message("c1", json.dumps({"action": "dance"}), connected_at_ms=0)
    assert [m["code"] for m in live.api.sent("c1", "error")] == ["unknown_action"]


def test_unsubscribing_removes_the_subscription_and_says_so(live: Live) -> None:
    new_job(live, status="RUNNING")
    live.connect("c1")
    live.subscribe("c1")

    live.routes.message("c1", json.dumps({"action": "unsubscribe", "batch_id": BATCH}), connected_at_ms=0)

    assert live.subscribers() == []
    assert live.api.sent("c1")[-1] == {"type": "unsubscribed", "batch_id": BATCH}


def test_a_disconnect_removes_the_connection_and_all_its_subscriptions(live: Live) -> None:
    new_job(live, status="RUNNING")
    live.connect("c1")
    live.subscribe("c1")

    live.routes.disconnect("c1")

    assert live.subscribers() == []
    assert live.connections.table.scan()["Items"] == []


def test_a_job_change_becomes_progress_for_every_subscriber(live: Live) -> None:
    new_job(live, status="RUNNING")
    for connection in ("c1", "c2"):
        live.connect(connection)
        live.subscribe(connection)

    live.change(job(predicted=80))

    assert [m["counts"]["predicted"] for m in live.api.sent("c1", "progress")][-1] == 80
    assert [m["counts"]["predicted"] for m in live.api.sent("c2", "progress")][-1] == 80


def test_changes_within_the_interval_send_one_progress_per_batch(live: Live) -> None:
    new_job(live, status="RUNNING")
    live.connect("c1")
    live.subscribe("c1")
    before = len(live.api.sent("c1", "progress"))

    live.change(job(predicted=10))
    live.clock[0] += PROGRESS_INTERVAL_MS - 1
    live.change(job(predicted=20))

    assert [m["counts"]["predicted"] for m in live.api.sent("c1", "progress")[before:]] == [10]


def test_a_change_after_the_interval_sends_progress_again(live: Live) -> None:
    new_job(live, status="RUNNING")
    live.connect("c1")
    live.subscribe("c1")
    before = len(live.api.sent("c1", "progress"))

    live.change(job(predicted=10))
    live.clock[0] += PROGRESS_INTERVAL_MS
    live.change(job(predicted=20))

    assert [m["counts"]["predicted"] for m in live.api.sent("c1", "progress")[before:]] == [10, 20]


def test_a_stream_batch_sends_progress_with_its_latest_image_only(live: Live) -> None:
    new_job(live, status="RUNNING")
    live.connect("c1")
    live.subscribe("c1")
    before = len(live.api.sent("c1", "progress"))

    live.change(job(predicted=10), job(predicted=20), job(predicted=30))

    assert [m["counts"]["predicted"] for m in live.api.sent("c1", "progress")[before:]] == [30]


def test_the_end_of_a_job_sends_one_completed_however_often_it_is_seen(live: Live) -> None:
    new_job(live, status="RUNNING")
    live.connect("c1")
    live.subscribe("c1")
    finished = job(status="COMPLETED", predicted=200, finished_at="2026-01-01T00:01:00.000Z")

    live.change(finished)
    live.change(finished)  # the stream delivers the batch again (a retry)
    live.change({**finished, "results_key": "results/x.jsonl"})  # another write to the finished job

    assert len(live.api.sent("c1", "completed")) == 1


def test_a_completed_message_goes_out_even_within_the_progress_interval(live: Live) -> None:
    new_job(live, status="RUNNING")
    live.connect("c1")
    live.subscribe("c1")
    live.change(job(predicted=199))

    live.change(job(status="COMPLETED", predicted=200, finished_at="2026-01-01T00:01:00.000Z"))

    assert len(live.api.sent("c1", "completed")) == 1


def test_the_subscribe_path_and_the_stream_send_one_completed_between_them(live: Live) -> None:
    finished = new_job(live, status="COMPLETED", predicted=200, finished_at="2026-01-01T00:01:00.000Z")
    live.connect("c1")

    live.subscribe("c1")  # sends completed: the batch is over
    live.change(finished)  # the stream catches up with the same end

    assert len(live.api.sent("c1", "completed")) == 1


def test_subscribing_again_to_a_finished_batch_sends_completed_again(live: Live) -> None:
    new_job(live, status="COMPLETED", predicted=200, finished_at="2026-01-01T00:01:00.000Z")
    live.connect("c1")
    live.subscribe("c1")

    live.subscribe("c1")

    assert len(live.api.sent("c1", "completed")) == 2


def test_a_new_attempt_that_ends_again_sends_a_second_completed(live: Live) -> None:
    new_job(live, status="RUNNING")
    live.connect("c1")
    live.subscribe("c1")
    live.change(job(status="COMPLETED_WITH_ERRORS", predicted=190, failed=10, finished_at="2026-01-01T00:01:00.000Z"))

    live.change(job(status="QUEUED", attempt=2, predicted=190, failed=10))
    live.change(job(status="COMPLETED", attempt=2, predicted=200, failed=0, finished_at="2026-01-01T00:02:00.000Z"))

    completed = live.api.sent("c1", "completed")
    assert [(m["attempt"], m["status"]) for m in completed] == [(1, "COMPLETED_WITH_ERRORS"), (2, "COMPLETED")]


def test_an_older_attempt_seen_late_sends_no_completed_after_a_newer_one(live: Live) -> None:
    new_job(live, status="RUNNING")
    live.connect("c1")
    live.subscribe("c1")
    live.change(job(status="COMPLETED", attempt=2, predicted=200, finished_at="2026-01-01T00:02:00.000Z"))

    live.change(job(status="COMPLETED_WITH_ERRORS", attempt=1, predicted=190, failed=10))

    assert [m["attempt"] for m in live.api.sent("c1", "completed")] == [2]


def test_a_subscriber_already_sent_the_end_gets_no_progress_of_that_attempt(live: Live) -> None:
    new_job(live, status="COMPLETED", predicted=200, finished_at="2026-01-01T00:01:00.000Z")
    live.connect("c1")
    live.subscribe("c1")

    live.change(job(status="RUNNING", predicted=150))  # a change from before the end, seen late

    assert [m["type"] for m in live.api.sent("c1")] == ["subscribed", "completed"]


def test_a_gone_connection_is_forgotten_with_its_subscriptions(live: Live) -> None:
    new_job(live, status="RUNNING")
    for connection in ("gone", "here"):
        live.connect(connection)
        live.subscribe(connection)
    live.api.gone.add("gone")

    live.change(job(predicted=50))

    assert live.subscribers() == ["here"]
    assert (
        live.connections.table.query(KeyConditionExpression="pk = :pk", ExpressionAttributeValues={":pk": "conn#gone"})[
            "Items"
        ]
        == []
    )


def test_a_completed_message_that_cannot_be_delivered_yet_asks_for_a_retry_from_its_batch(live: Live) -> None:
    new_job(live, status="RUNNING")
    live.connect("c1")
    live.subscribe("c1")
    live.api.throttled.add("c1")
    finished = job(status="COMPLETED", predicted=200, finished_at="2026-01-01T00:01:00.000Z")

    retry_from = live.notifier.notify([JobChange("7", job(batch_id="other")), JobChange("8", finished)])

    assert retry_from == "8"


def test_a_retried_completed_message_is_delivered_once_the_connection_takes_it(live: Live) -> None:
    new_job(live, status="RUNNING")
    live.connect("c1")
    live.subscribe("c1")
    finished = job(status="COMPLETED", predicted=200, finished_at="2026-01-01T00:01:00.000Z")
    live.api.throttled.add("c1")
    live.change(finished)

    live.api.throttled.clear()
    retry_from = live.change(finished)

    assert retry_from is None
    assert len(live.api.sent("c1", "completed")) == 1


def test_changes_of_a_batch_without_subscribers_send_and_store_nothing(live: Live) -> None:
    live.change(job(predicted=10))
    assert live.api.posts == []
    assert live.connections.table.scan()["Items"] == []


# -- the API key check and the pusher ----------------------------------------------------------------------------
def test_connecting_without_a_key_is_refused_as_unauthorised(live: Live) -> None:
    with pytest.raises(MissingApiKey) as raised:
        live.routes.connect("c1", connected_at_ms=0, source_ip=None, api_key=None)
    assert raised.value.status == 401
    assert live.connections.tenant_of("c1") is None


def test_connecting_with_an_unknown_key_is_refused_as_forbidden(live: Live) -> None:
    with pytest.raises(InvalidApiKey) as raised:
        live.routes.connect("c1", connected_at_ms=0, source_ip=None, api_key="wrong")
    assert raised.value.status == 403


def test_a_connection_remembers_the_tenant_of_its_key(live: Live) -> None:
    live.connect("c1", key="the-key-of-another-one")

    assert live.connections.tenant_of("c1") == Tenant("other")


def test_another_tenants_batch_is_not_found_and_nothing_is_stored(live: Live) -> None:
    new_job(live, status="RUNNING")
    live.connect("c1", key="the-key-of-another-one")

    live.subscribe("c1")

    assert live.api.sent("c1") == [
        {"type": "error", "code": "not_found", "message": f"no batch {BATCH!r}: check the id returned by POST /batches"}
    ]
    assert live.subscribers() == []


def test_a_connection_the_table_does_not_hold_subscribes_to_nothing(live: Live) -> None:
    new_job(live, status="RUNNING")

    live.subscribe("never-connected")

    assert [m["code"] for m in live.api.sent("never-connected", "error")] == ["not_found"]
    assert live.subscribers() == []


def test_a_post_to_a_gone_connection_is_the_gone_signal() -> None:
    with pytest.raises(ConnectionGone):
        Pusher(FakeManagementApi(gone={"c1"})).send("c1", {"type": "progress"})


def test_a_throttled_post_is_a_transient_failure() -> None:
    with pytest.raises(TransientFailure):
        Pusher(FakeManagementApi(throttled={"c1"})).send("c1", {"type": "progress"})
