"""Local-mode patches of moto: the Step Functions context's StartTime as the ISO-8601 string AWS gives."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

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
