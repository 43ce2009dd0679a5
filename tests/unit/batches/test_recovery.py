"""The failure taxonomy, fault injection, recovery backoff, and isolation of the image that breaks a chunk."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Any

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from modelrun.batches import recovery
from modelrun.batches.chunks import Chunk
from modelrun.batches.failures import PERMANENT, TRANSIENT, classify_state_error, is_transient
from modelrun.batches.faults import Faults
from modelrun.batches.recovery import DeadLetter, GivenUp, Recoverer, backoff_seconds
from modelrun.errors import FaultsNotAllowed, InvalidImage, InvalidRequest, TransientFailure
from tests.batchfixtures import DEFAULT


def client_error(code: str, status: int = 400) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": "x"}, "ResponseMetadata": {"HTTPStatusCode": status}}, "Op")


@pytest.mark.parametrize(
    "exc",
    [
        TransientFailure("x"),
        client_error("ThrottlingException"),
        client_error("ProvisionedThroughputExceededException"),
        client_error("SlowDown", 503),
        client_error("Whatever", 500),
        EndpointConnectionError(endpoint_url="https://s3"),
        TimeoutError(),
    ],
)
def test_throttling_service_errors_and_timeouts_are_transient(exc: BaseException) -> None:
    assert is_transient(exc)


@pytest.mark.parametrize(
    "exc", [InvalidImage("x"), client_error("AccessDenied", 403), client_error("NoSuchKey", 404), KeyError("k")]
)
def test_bad_input_missing_objects_and_bugs_are_permanent(exc: BaseException) -> None:
    assert not is_transient(exc)


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("TransientFailure", TRANSIENT),
        ("Sandbox.Timedout", TRANSIENT),
        ("Lambda.TooManyRequestsException", TRANSIENT),
        ("KeyError", PERMANENT),
        ("ModelConfigError", PERMANENT),
        (None, PERMANENT),
    ],
)
def test_a_state_machine_error_is_classified_by_its_name(name: str | None, kind: str) -> None:
    assert classify_state_error(name) == kind


def test_faults_are_refused_where_the_stack_does_not_allow_them() -> None:
    with pytest.raises(FaultsNotAllowed) as raised:
        Faults.parse({"transient_rate": 0.1}, allowed=False)
    assert raised.value.code == "faults_not_allowed"


def test_no_faults_are_accepted_anywhere() -> None:
    assert Faults.parse(None, allowed=False) == Faults()
    assert Faults.parse({}, allowed=False) == Faults()


@pytest.mark.parametrize(
    "value",
    [
        {"transient_rate": -0.1},
        {"timeout_rate": 1.5},
        {"transient_rate": 0.6, "timeout_rate": 0.6},
        {"exit_rate": 0.5, "segfault_rate": 0.3, "memory_rate": 0.3},
        {"memory_rate": True},
        {"fail_chunks": [-1]},
    ],
)
def test_out_of_range_faults_are_invalid_requests(value: dict[str, Any]) -> None:
    with pytest.raises(InvalidRequest):
        Faults.parse(value, allowed=True)


def test_a_transient_fault_fires_when_the_draw_falls_under_its_rate() -> None:
    faults = Faults(transient_rate=0.1)
    with pytest.raises(TransientFailure):
        faults.inject(0, in_recovery=False, remaining_ms=lambda: 0, draw=lambda: 0.05)
    faults.inject(0, in_recovery=False, remaining_ms=lambda: 0, draw=lambda: 0.5)


def test_a_timeout_fault_outlives_the_remaining_time_then_fails() -> None:
    faults = Faults(timeout_rate=1.0)
    with pytest.raises(TransientFailure, match="outlived its timeout"):
        faults.inject(0, in_recovery=False, remaining_ms=lambda: 0, draw=lambda: 0.5)


CRASH = """
import sys
from modelrun.batches.faults import Faults
Faults(**{sys.argv[1]: 1.0}).inject(0, in_recovery=False, remaining_ms=lambda: 0)
"""


def crash_environment() -> dict[str, str]:
    """This process's environment, with the modelrun this test imports first on the child's path."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}


@pytest.mark.parametrize(("rate", "returncode"), [("exit_rate", 3), ("segfault_rate", -signal.SIGSEGV)])
def test_a_crash_fault_ends_the_process_as_a_native_crash_would(rate: str, returncode: int) -> None:
    # given a process that draws a crash fault, when it injects it, then it ends with that status or signal
    ended = subprocess.run(
        [sys.executable, "-c", CRASH, rate], capture_output=True, env=crash_environment(), timeout=60, check=False
    )
    assert ended.returncode == returncode


def test_a_memory_fault_that_nothing_stops_fails_once_it_holds_twice_the_memory_size() -> None:
    # given a 128 MB function's process with no Lambda to stop it, when it injects a memory fault
    environment = {**crash_environment(), "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "128"}
    ended = subprocess.run(
        [sys.executable, "-c", CRASH, "memory_rate"], capture_output=True, env=environment, timeout=60, check=False
    )

    # then it held 256 MB, and failed transiently rather than run on
    assert ended.returncode == 1
    assert b"TransientFailure: injected fault: chunk 0 outgrew its memory size and was not stopped" in ended.stderr


def test_random_faults_spare_recovery_but_a_failing_chunk_fails_there_too() -> None:
    Faults(transient_rate=1.0).inject(2, in_recovery=True, remaining_ms=lambda: 0, draw=lambda: 0.0)
    with pytest.raises(TransientFailure, match="every time"):
        Faults(fail_chunks=(2,)).inject(2, in_recovery=True, remaining_ms=lambda: 0)


def test_backoff_grows_with_the_receive_count_and_is_jittered_below_its_ceiling() -> None:
    assert [backoff_seconds(n, 30, draw=lambda: 0.999) for n in (1, 2, 3, 4)] == [29, 59, 119, 239]
    assert backoff_seconds(3, 30, draw=lambda: 0.0) == 0
    assert backoff_seconds(40, 30, draw=lambda: 0.999) == 43156  # capped at SQS's 12 h visibility limit


def test_a_zero_base_means_retry_at_once() -> None:
    assert backoff_seconds(5, 0) == 0


@dataclass
class FakePredictor:
    """Fails any run that includes a poisoned item, as a model crash on one image would."""

    poisoned: set[int]
    ran: list[set[int]] = field(default_factory=list)
    transient: bool = False  # fail as an outage would, instead of as a crash on that image

    def run(self, chunk: Chunk, only: set[int] | None = None) -> dict[str, Any]:
        items = only if only is not None else {item for item, _ in chunk.items}
        if items & self.poisoned:
            if self.transient:
                raise TransientFailure("the service is still down")
            raise ValueError("the model raised on this input")
        self.ran.append(items)
        return {}


@dataclass
class FakeStore:
    outcomes: dict[int, Any] = field(default_factory=dict)
    parked: list[dict[str, Any]] = field(default_factory=list)

    def record_outcome(self, batch_id: str, outcome: Any) -> tuple[int, int]:
        if outcome.item in self.outcomes:
            return 0, 0
        self.outcomes[outcome.item] = outcome
        return 0, 1

    def add_counts(self, batch_id: str, *, predicted: int, failed: int) -> None:
        return None

    def note_parked(self, batch_id: str, entry: dict[str, Any]) -> None:
        self.parked.append(entry)


@dataclass
class FakeCloser:
    calls: int = 0

    def try_close(self, batch_id: str, *, map_done: bool = True) -> dict[str, Any]:
        assert not map_done
        self.calls += 1
        return {"status": "RUNNING"}


@dataclass
class FakeSqs:
    visibility: list[int] = field(default_factory=list)

    def change_message_visibility(self, **kwargs: Any) -> None:
        self.visibility.append(kwargs["VisibilityTimeout"])


def recoverer(predictor: Any, store: FakeStore, sqs: FakeSqs, *, max_receive_count: int = 5) -> Recoverer:
    return Recoverer(
        predictor=predictor,
        closer=FakeCloser(),  # type: ignore[arg-type]
        store=store,  # type: ignore[arg-type]
        s3=None,
        sqs=sqs,
        queue_url="dlq",
        parking_queue_url="parking",
        max_receive_count=max_receive_count,
        backoff_base_s=0,
    )


def chunk_of(items: range, faults: Faults | None = None) -> Chunk:
    return Chunk(
        "b-1", 3, [(item, f"k{item}.png") for item in items], "bucket", "digits", "1", DEFAULT, 1, faults or Faults()
    )


def test_splitting_isolates_the_one_image_that_breaks_its_chunk() -> None:
    predictor, store = FakePredictor(poisoned={13}), FakeStore()
    recoverer(predictor, store, FakeSqs()).recover(chunk_of(range(10, 18)))
    assert set(store.outcomes) == {13}
    assert store.outcomes[13].error_code == "unprocessable"
    assert set().union(*predictor.ran) == {10, 11, 12, 14, 15, 16, 17}


def test_two_bad_images_are_both_isolated_and_everything_else_runs_once() -> None:
    predictor, store = FakePredictor(poisoned={0, 7}), FakeStore()
    recoverer(predictor, store, FakeSqs()).recover(chunk_of(range(8)))
    assert set(store.outcomes) == {0, 7}
    ran = [item for batch in predictor.ran for item in batch]
    assert sorted(ran) == [1, 2, 3, 4, 5, 6]


def test_a_transient_failure_is_not_split_but_handed_back_with_a_backoff() -> None:
    sqs, store = FakeSqs(), FakeStore()
    faulty = recoverer(FakePredictor(poisoned=set()), store, sqs)
    faulty.allow_faults = True
    message = DeadLetter({"error": {"Error": "TransientFailure"}}, receive_count=2, receipt_handle="r", message_id="m")
    chunk = chunk_of(range(4), Faults(fail_chunks=(3,)))
    with pytest.raises(TransientFailure):
        faulty.recover(chunk)
    faulty.delay(message)
    assert sqs.visibility == [0]
    assert store.outcomes == {}


def test_the_last_try_records_retries_exhausted_for_images_without_an_outcome_and_notes_the_parked_chunk() -> None:
    sqs, store = FakeSqs(), FakeStore()
    store.outcomes[1] = "already final"
    last = recoverer(FakePredictor(poisoned=set()), store, sqs)
    message = DeadLetter({}, receive_count=5, receipt_handle="r", message_id="m-1")
    last.exhaust(chunk_of(range(3)), message)
    assert store.outcomes[1] == "already final"
    assert {item: outcome.error_code for item, outcome in store.outcomes.items() if item != 1} == {
        0: "retries_exhausted",
        2: "retries_exhausted",
    }
    assert store.parked[0]["chunk"] == 3
    assert store.parked[0]["queue_url"] == "parking"


def received(monkeypatch: pytest.MonkeyPatch, chunk: Chunk, receive_count: int) -> DeadLetter:
    """A dead-letter message of ``chunk`` at its ``receive_count``-th receive (its keys file is not read)."""
    monkeypatch.setattr(recovery.Chunk, "from_event", classmethod(lambda cls, body, s3: chunk))
    cause = json.dumps({"errorMessage": "Task timed out after 300.00 seconds", "errorType": "Sandbox.Timedout"})
    body = {"error": {"Error": "Sandbox.Timedout", "Cause": cause}}
    return DeadLetter(body, receive_count=receive_count, receipt_handle="r", message_id="m-9")


def test_the_last_receive_runs_nothing_records_the_images_and_sends_the_message_to_parking_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # given a chunk whose message comes for the last receive the queue allows, one image already final
    predictor, store, sqs = FakePredictor(poisoned=set()), FakeStore(), FakeSqs()
    store.outcomes[0] = "already final"
    message = received(monkeypatch, chunk_of(range(3)), receive_count=5)

    # when recover handles it
    with pytest.raises(GivenUp):
        recoverer(predictor, store, sqs).handle(message)

    # then nothing ran (a crash now would park the chunk with its images missing), the two images without an outcome
    # are retries_exhausted with the state machine's error, the chunk is noted as parked, and the message is
    # visible again at once so that SQS moves it to the parking queue
    assert predictor.ran == []
    assert store.outcomes[0] == "already final"
    exhausted = {item: outcome for item, outcome in store.outcomes.items() if item != 0}
    assert {outcome.error_code for outcome in exhausted.values()} == {"retries_exhausted"}
    assert set(exhausted) == {1, 2}
    assert "after 4 recovery attempts" in exhausted[1].error_message
    assert "Sandbox.Timedout: Task timed out after 300.00 seconds" in exhausted[1].error_message
    assert [entry["message_id"] for entry in store.parked] == ["m-9"]
    assert sqs.visibility == [0]


def test_an_earlier_receive_that_fails_again_records_nothing_and_comes_back_after_its_backoff(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # given a chunk with a broken image, at its fourth of five receives, and a backoff of 2 s doubling
    predictor, store, sqs = FakePredictor(poisoned={1}), FakeStore(), FakeSqs()
    predictor.transient = True
    message = received(monkeypatch, chunk_of(range(3)), receive_count=4)
    handler = recoverer(predictor, store, sqs)
    handler.backoff_base_s = 2

    # when recover handles it and the chunk fails transiently again
    with pytest.raises(TransientFailure):
        handler.handle(message)

    # then nothing is recorded or parked, and the message is handed back within its backoff ceiling (2 * 2^3 s)
    assert store.outcomes == {}
    assert store.parked == []
    assert len(sqs.visibility) == 1
    assert 0 <= sqs.visibility[0] <= 16
