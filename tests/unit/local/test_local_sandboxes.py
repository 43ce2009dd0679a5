"""A sandbox that dies, hangs or outgrows its memory fails its invocation with Lambda's error type, and only that
sandbox is lost: the function keeps serving. The four handlers are in functions/faulty.py."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelrun_local.lambdas import LocalFunction

FAULTY = Path(__file__).with_name("functions")
MEMORY_MB = 128


@pytest.fixture
def faulty() -> Iterator[dict[str, LocalFunction]]:
    """One function per faulty handler (1 s timeout, 128 MB), and a healthy one, all closed after the test."""
    functions = {
        name: LocalFunction(
            logical_id=name,
            name=f"modelrun-local-{name}",
            arn=f"arn:aws:lambda:us-east-1:123456789012:function:modelrun-local-{name}",
            code_dir=FAULTY,
            handler=f"faulty.{name}",
            environment={},
            timeout=1.0,
            memory_mb=MEMORY_MB,
        )
        for name in ("exit_3", "segfault", "sleep_past_timeout", "allocate_past_memory")
    }
    yield functions
    for function in functions.values():
        function.close()


@pytest.mark.parametrize(
    ("handler", "error_type", "message"),
    [
        ("exit_3", "Runtime.ExitError", "Runtime exited with error: exit status 3"),
        ("segfault", "Runtime.ExitError", "Runtime exited with error: signal: segmentation fault"),
        ("sleep_past_timeout", "Sandbox.Timedout", "Task timed out after 1.00 seconds"),
        ("allocate_past_memory", "Runtime.OutOfMemory", "Runtime exited with error: out of memory ("),
    ],
)
def test_a_sandbox_that_ends_badly_fails_its_invocation_with_lambdas_error_type(
    faulty: dict[str, LocalFunction], handler: str, error_type: str, message: str
) -> None:
    # given a function whose handler ends its sandbox
    function = faulty[handler]

    # when it is invoked
    invocation = function.invoke({})

    # then the invocation fails as Lambda reports it, and the sandbox is gone
    assert (invocation.error_type, invocation.payload["errorType"]) == (error_type, error_type)
    assert invocation.payload["errorMessage"].startswith(message)
    assert function.errors[error_type] == 1
    assert function.sandboxes == 0


def test_a_sandbox_over_its_memory_size_is_stopped_before_it_holds_twice_as_much(
    faulty: dict[str, LocalFunction],
) -> None:
    # given a 128 MB function that would hold 256 MB if nothing stopped it
    started = time.monotonic()

    # when it is invoked
    invocation = faulty["allocate_past_memory"].invoke({})

    # then it was stopped for its memory, not by its timeout
    assert invocation.error_type == "Runtime.OutOfMemory"
    assert time.monotonic() - started < 1.0


def test_each_invocation_after_a_crash_gets_a_fresh_sandbox_and_fails_the_same_way(
    faulty: dict[str, LocalFunction],
) -> None:
    # given a function that exits on every invocation
    function = faulty["exit_3"]

    # when it is invoked three times
    errors = [function.invoke({}).error_type for _ in range(3)]

    # then each ran in a new sandbox (a cold start) and failed alike: the runtime kept serving it
    assert errors == ["Runtime.ExitError"] * 3
    assert function.invocations == 3
