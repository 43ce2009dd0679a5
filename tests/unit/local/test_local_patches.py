"""Local-mode patches of moto: the Step Functions context's StartTime as the ISO-8601 string AWS gives, and Retry
counters that concurrent Map iterations cannot reset."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta, timezone
from types import SimpleNamespace

import pytest

from modelrun_local import patches


@pytest.fixture(autouse=True)
def installed() -> None:
    patches.install()


# --- Step Functions context StartTime ------------------------------------------------------------------------


def test_iso8601_converts_an_aware_time_to_utc_with_milliseconds() -> None:
    # given 06:21:22.153987 at UTC+2
    moment = datetime(2026, 11, 25, 6, 21, 22, 153987, tzinfo=timezone(timedelta(hours=2)))

    # when formatted, then it is the UTC time, milliseconds truncated, with a Z
    assert patches.iso8601(moment) == "2026-11-25T04:21:22.153Z"


def test_iso8601_writes_whole_seconds_with_three_zero_milliseconds() -> None:
    assert patches.iso8601(datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)) == "2026-01-02T03:04:05.000Z"


def test_after_install_the_execution_context_start_time_is_an_iso_string() -> None:
    # given moto's execution context record, as built when an execution starts
    from moto.stepfunctions.parser.backend import execution_worker

    # when it is built with the datetime moto has
    data = execution_worker.ExecutionData(
        Id="arn:aws:states:us-east-1:123456789012:execution:batch:run-1",
        StartTime=datetime(2026, 11, 25, 4, 21, 22, 153000, tzinfo=UTC),
    )

    # then it holds the string AWS gives (a state passing $$.Execution.StartTime on can serialise it)
    assert data["StartTime"] == "2026-11-25T04:21:22.153Z"
    assert data["Id"] == "arn:aws:states:us-east-1:123456789012:execution:batch:run-1"


# --- Step Functions retry counters -----------------------------------------------------------------------------


def test_map_iterations_failing_at_once_each_get_exactly_max_attempts_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    # given one Retry's MaxAttempts of 3, shared as a Map's iterations share their ItemProcessor, by eight iterations
    # whose first failures come at the same moment, and component keys slow to make (each later one slower: the race's
    # window, made wide)
    from moto.stepfunctions.parser.asl.component import eval_component
    from moto.stepfunctions.parser.asl.component.common.retry.max_attempts_decl import (
        MaxAttemptsDecl,
        MaxAttemptsOutcome,
    )

    make_uid = eval_component.long_uid
    made = iter(range(1, 1000))

    def slow_uid() -> str:
        time.sleep(0.01 * next(made))
        return make_uid()

    monkeypatch.setattr(eval_component, "long_uid", slow_uid)
    max_attempts = MaxAttemptsDecl(attempts=3)
    iterations = 8
    first_failures, later_failures = threading.Barrier(iterations), threading.Barrier(iterations)

    def retries_granted() -> int:
        frame = SimpleNamespace(heap={}, stack=[], is_running=lambda: True)  # each iteration's own frame
        first_failures.wait()
        max_attempts.eval(frame)
        granted = int(frame.stack.pop() is MaxAttemptsOutcome.SUCCESS)
        later_failures.wait()  # the next tries fail seconds later, after every first failure was counted
        while True:
            max_attempts.eval(frame)
            if frame.stack.pop() is MaxAttemptsOutcome.EXHAUSTED:
                return granted
            granted += 1

    # when each iteration fails until its retries run out
    with ThreadPoolExecutor(max_workers=iterations) as pool:
        granted = list(pool.map(lambda _: retries_granted(), range(iterations)))

    # then every one was granted its three retries, no more
    assert granted == [3] * iterations
