"""In-process Lambda: warm and concurrent sandboxes, function errors as Lambda shapes them, init failures, timeouts,
and each function's own environment. Handlers are tiny files written into tmp_path."""

from __future__ import annotations

import os
import sys
import textwrap
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from modelrun_local.lambdas import Invocation, LocalFunction

WAIT_S = 10.0  # deadline for anything a test waits on; never reached when the code works

# Module state identifies the sandbox (one import = one SANDBOX token) and counts the calls it served. The event
# is passed to the handler as the same Python object, so a test can hand it events and barriers to coordinate.
STATEFUL = """
import uuid

SANDBOX = uuid.uuid4().hex
CALLS = 0


def handler(event, context):
    global CALLS
    CALLS += 1
    event.get("seen", []).append(SANDBOX)
    if "entered" in event:
        event["entered"].set()
    if "release" in event:
        event["release"].wait(event.get("wait", 10))
    if "barrier" in event:
        event["barrier"].wait()
    if event.get("fail"):
        raise ValueError("asked to fail")
    return {"sandbox": SANDBOX, "calls": CALLS}
"""


def make_function(
    tmp_path: Path,
    source: str,
    *,
    handler: str = "app.handler",
    environment: dict[str, str] | None = None,
    timeout: float = WAIT_S,
    max_sandboxes: int = 16,
    name: str = "probe",
) -> LocalFunction:
    module_file = tmp_path / (handler.rpartition(".")[0].replace(".", "/") + ".py")
    module_file.parent.mkdir(parents=True, exist_ok=True)
    module_file.write_text(textwrap.dedent(source), encoding="utf-8")
    return LocalFunction(
        logical_id=name.title(),
        name=f"modelrun-local-{name}",
        arn=f"arn:aws:lambda:us-east-1:123456789012:function:modelrun-local-{name}",
        code_dir=tmp_path,
        handler=handler,
        environment=dict(environment or {}),
        timeout=timeout,
        memory_mb=256,
        max_sandboxes=max_sandboxes,
    )


def invoke_with_deadline(function: LocalFunction, event: dict[str, Any]) -> Invocation:
    """Invoke on a daemon thread, so that a leaked sandbox slot fails the test instead of hanging the run."""
    outcome: list[Invocation] = []
    caller = threading.Thread(target=lambda: outcome.append(function.invoke(event)), daemon=True)
    caller.start()
    caller.join(WAIT_S)
    assert outcome, f"the invocation did not return within {WAIT_S} s: no sandbox became available"
    return outcome[0]


def invoke_concurrently(function: LocalFunction, events: list[dict[str, Any]]) -> list[Any]:
    with ThreadPoolExecutor(len(events)) as pool:
        invocations = list(pool.map(function.invoke, events))
    assert not any(invocation.failed for invocation in invocations), [i.payload for i in invocations]
    return [invocation.payload for invocation in invocations]


# --- results and sandboxes -----------------------------------------------------------------------------------


def test_an_invocation_returns_the_handler_result(tmp_path: Path) -> None:
    # given a handler that echoes part of its event
    function = make_function(tmp_path, "def handler(event, context):\n    return {'echo': event['value'] * 2}\n")

    # when it is invoked
    invocation = function.invoke({"value": 21})

    # then the result is the handler's, with no error and a measured duration
    assert (invocation.payload, invocation.error_type, invocation.failed) == ({"echo": 42}, None, False)
    assert invocation.duration_ms > 0


def test_sequential_invocations_reuse_the_warm_sandbox(tmp_path: Path) -> None:
    # given a function with module state
    function = make_function(tmp_path, STATEFUL)

    # when it is invoked three times in a row
    results = [function.invoke({}).payload for _ in range(3)]

    # then one sandbox (one import) served all three, its state carrying over
    assert len({result["sandbox"] for result in results}) == 1
    assert [result["calls"] for result in results] == [1, 2, 3]


def test_concurrent_invocations_each_get_a_sandbox_with_its_own_module_state(tmp_path: Path) -> None:
    # given two invocations that can only finish once both are inside the handler at the same time
    function = make_function(tmp_path, STATEFUL)
    together = threading.Barrier(2, timeout=WAIT_S)

    # when they are invoked concurrently
    first, second = invoke_concurrently(function, [{"barrier": together}, {"barrier": together}])

    # then two separate imports served them, each counting only its own call
    assert first["sandbox"] != second["sandbox"]
    assert (first["calls"], second["calls"]) == (1, 1)


def test_a_sandbox_created_for_concurrency_stays_warm_for_later_invocations(tmp_path: Path) -> None:
    # given two sandboxes created by a concurrent burst
    function = make_function(tmp_path, STATEFUL)
    together = threading.Barrier(2, timeout=WAIT_S)
    burst = invoke_concurrently(function, [{"barrier": together}, {"barrier": together}])

    # when the function is invoked again
    later = function.invoke({}).payload

    # then one of the warm sandboxes serves it: no third cold start
    assert later["sandbox"] in {result["sandbox"] for result in burst}
    assert later["calls"] == 2


def test_with_one_sandbox_a_second_concurrent_invocation_waits_for_the_first(tmp_path: Path) -> None:
    # given a function limited to one sandbox, busy with an invocation that holds until released
    function = make_function(tmp_path, STATEFUL, max_sandboxes=1)
    first_entered, release_first, second_entered = threading.Event(), threading.Event(), threading.Event()
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(function.invoke, {"entered": first_entered, "release": release_first})
        assert first_entered.wait(WAIT_S)

        # when a second invocation arrives
        second = pool.submit(function.invoke, {"entered": second_entered})

        # then it does not start while the first holds the only sandbox (a bounded look, not a synchronisation)
        assert not second_entered.wait(0.2)
        release_first.set()
        results = [first.result(WAIT_S).payload, second.result(WAIT_S).payload]

    # and it runs afterwards on that same sandbox
    assert results[0]["sandbox"] == results[1]["sandbox"]
    assert [result["calls"] for result in results] == [1, 2]


def test_a_handler_in_a_sub_folder_module_is_found(tmp_path: Path) -> None:
    # given Handler: handlers.predict.app.handler (dots are folders, as on Lambda)
    source = "def handler(event, context):\n    return 'from sub folder'\n"
    function = make_function(tmp_path, source, handler="handlers.predict.app.handler")

    # when invoked, then that module's handler ran
    assert function.invoke({}).payload == "from sub folder"


def test_a_handler_module_that_defines_a_dataclass_imports_in_its_sandbox(tmp_path: Path) -> None:
    # given a handler module with postponed annotations and a dataclass, which imports fine on Lambda
    source = """
    from __future__ import annotations

    from dataclasses import dataclass


    @dataclass
    class Job:
        job_id: str


    def handler(event, context):
        return Job(event["job_id"]).job_id
    """
    function = make_function(tmp_path, source)

    # when it is invoked
    invocation = function.invoke({"job_id": "j-1"})

    # then it cold-starts and answers
    assert (invocation.error_type, invocation.payload) == (None, "j-1")


def sandbox_modules(function: LocalFunction) -> dict[str, ModuleType]:
    prefix = f"modelrun_fn_{function.logical_id}_"
    return {name: module for name, module in sys.modules.items() if name.startswith(prefix)}


def test_a_failed_import_leaves_no_module_registered(tmp_path: Path) -> None:
    # given a function (with a name of its own in sys.modules) whose module fails to import
    source = "raise RuntimeError('broken at import')\n\ndef handler(event, context):\n    return 1\n"
    function = make_function(tmp_path, source, name=f"broken{uuid.uuid4().hex}")

    # when it is invoked
    invocation = function.invoke({})

    # then it failed, and nothing of the half-imported module stays in sys.modules
    assert invocation.error_type == "RuntimeError"
    assert sandbox_modules(function) == {}


# The first import blocks until the test creates "fail-now", then fails; every later import succeeds. The handler
# reports the module name of its sandbox and whether sys.modules still maps that name to its own module.
FIRST_IMPORT_FAILS_ON_CUE = """
import sys
import time
from pathlib import Path

HERE = Path(__file__).parent
IMPORTS = HERE / "imports.log"
with IMPORTS.open("a") as log:
    log.write("import\\n")
if IMPORTS.read_text().count("import") == 1:
    deadline = time.monotonic() + 10
    while not (HERE / "fail-now").exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    raise RuntimeError("the first import fails when told to")


def handler(event, context):
    if "barrier" in event:
        event["barrier"].wait()
    return {"module": __name__, "registered": getattr(sys.modules.get(__name__), "__dict__", None) is globals()}
"""


def test_every_live_sandbox_keeps_its_own_module_name_after_another_is_discarded(tmp_path: Path) -> None:
    # given sandbox 1 still initialising when sandbox 2 is created, and then discarded by its failed init
    function = make_function(tmp_path, FIRST_IMPORT_FAILS_ON_CUE, name=f"renumbered{uuid.uuid4().hex}")
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(function.invoke, {})
        deadline = time.monotonic() + WAIT_S
        while not (tmp_path / "imports.log").exists():
            assert time.monotonic() < deadline, "the first import never started"
            time.sleep(0.01)
        assert not function.invoke({}).failed
        (tmp_path / "fail-now").touch()
        assert first.result(WAIT_S).error_type == "RuntimeError"

    # when a burst needs the warm sandbox 2 and one new sandbox
    together = threading.Barrier(2, timeout=WAIT_S)
    burst = invoke_concurrently(function, [{"barrier": together}, {"barrier": together}])

    # then each is its own registered module under its own name
    assert [result["registered"] for result in burst] == [True, True]
    assert burst[0]["module"] != burst[1]["module"]


# --- errors ----------------------------------------------------------------------------------------------------

FAILING = """
class ModelBusy(Exception):
    pass


def handler(event, context):
    raise ModelBusy("model digits is loading, retry in 2 s")
"""


def test_a_handler_exception_is_a_function_error_named_after_its_class(tmp_path: Path) -> None:
    # given a handler that raises a custom exception
    function = make_function(tmp_path, FAILING)

    # when it is invoked
    invocation = function.invoke({})

    # then the error type is the class name (what Step Functions' ErrorEquals matches) and the message is kept
    assert invocation.failed
    assert invocation.error_type == "ModelBusy"
    assert invocation.payload["errorType"] == "ModelBusy"
    assert invocation.payload["errorMessage"] == "model digits is loading, retry in 2 s"


def test_a_function_error_carries_the_stack_trace_down_to_the_raising_line(tmp_path: Path) -> None:
    # given a handler that raises on line 7 of its file
    function = make_function(tmp_path, FAILING)

    # when it is invoked
    trace = function.invoke({}).payload["stackTrace"]

    # then the trace is a list of lines that shows the handler's file, line and function
    assert all(isinstance(line, str) for line in trace)
    assert any(f'File "{tmp_path / "app.py"}", line 7, in handler' in line for line in trace)


def test_a_sandbox_stays_warm_after_its_handler_raised(tmp_path: Path) -> None:
    # given an invocation whose handler raised
    function = make_function(tmp_path, STATEFUL)
    seen: list[str] = []
    assert function.invoke({"fail": True, "seen": seen}).error_type == "ValueError"

    # when the function is invoked again
    later = function.invoke({}).payload

    # then the same import served it, its call count including the failed call
    assert (later["sandbox"], later["calls"]) == (seen[0], 2)


INIT_FAILS_ONCE = """
from pathlib import Path

COLD_STARTS = Path(__file__).with_name("cold-starts.log")
with COLD_STARTS.open("a") as log:
    log.write("cold start\\n")


class ModelStoreUnavailable(RuntimeError):
    pass


if COLD_STARTS.read_text().count("cold start") == 1:
    raise ModelStoreUnavailable("the model store did not answer during init")


def handler(event, context):
    return {"cold_starts": COLD_STARTS.read_text().count("cold start")}
"""


def test_an_exception_during_init_is_a_function_error_named_after_its_class(tmp_path: Path) -> None:
    # given a module whose first import fails
    function = make_function(tmp_path, INIT_FAILS_ONCE)

    # when it is invoked
    invocation = function.invoke({})

    # then the init error comes back like a handler error
    assert invocation.error_type == "ModelStoreUnavailable"
    assert invocation.payload["errorMessage"] == "the model store did not answer during init"


def test_after_an_init_failure_the_next_invocation_cold_starts_again(tmp_path: Path) -> None:
    # given a function with a single sandbox slot, whose first import failed
    function = make_function(tmp_path, INIT_FAILS_ONCE, max_sandboxes=1)
    assert function.invoke({}).failed

    # when the function is invoked again
    invocation = invoke_with_deadline(function, {})

    # then the slot was freed and a second import ran, and succeeded
    assert (invocation.error_type, invocation.payload) == (None, {"cold_starts": 2})


def test_an_import_error_during_init_is_runtime_import_module_error(tmp_path: Path) -> None:
    # given a handler module that imports a package missing from its layers
    function = make_function(
        tmp_path, "import modelrun_no_such_package\n\ndef handler(event, context):\n    return 1\n"
    )

    # when it is invoked
    invocation = function.invoke({})

    # then the error type is Lambda's for a module that cannot be imported, naming the missing module
    assert invocation.error_type == "Runtime.ImportModuleError"
    assert "modelrun_no_such_package" in invocation.payload["errorMessage"]


def test_an_invocation_over_the_timeout_is_sandbox_timedout(tmp_path: Path) -> None:
    # given a 0.2 s timeout and a handler that holds until released
    function = make_function(tmp_path, STATEFUL, timeout=0.2)
    release = threading.Event()
    try:
        # when it is invoked
        invocation = function.invoke({"release": release})
    finally:
        release.set()

    # then Lambda's timeout error comes back after the timeout, not after the handler
    assert invocation.error_type == "Sandbox.Timedout"
    assert invocation.payload["errorMessage"] == "Task timed out after 0.20 seconds"
    assert invocation.duration_ms >= 200


def test_a_timed_out_sandbox_is_not_reused(tmp_path: Path) -> None:
    # given a function with a single sandbox slot, whose invocation timed out
    function = make_function(tmp_path, STATEFUL, timeout=0.2, max_sandboxes=1)
    release, seen = threading.Event(), []
    try:
        assert function.invoke({"release": release, "seen": seen}).error_type == "Sandbox.Timedout"
    finally:
        release.set()

    # when the function is invoked again
    later = invoke_with_deadline(function, {}).payload

    # then the slot was freed and a fresh import serves it
    assert later["sandbox"] != seen[0]
    assert later["calls"] == 1


# --- environment and context -----------------------------------------------------------------------------------

ENVIRONMENT = """
import os

AT_COLD_START = dict(os.environ)


def handler(event, context):
    if "barrier" in event:
        event["barrier"].wait()
    os.environ["WRITTEN_BY_HANDLER"] = "1"
    return {"cold_start": AT_COLD_START, "invoke": {k: v for k, v in os.environ.items() if k != "WRITTEN_BY_HANDLER"}}
"""


def test_a_function_sees_exactly_its_environment_at_init_and_invoke(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given a process variable, and a function with its own variables
    monkeypatch.setenv("MODELRUN_TEST_PROCESS_ONLY", "1")
    variables = {"IMAGES_BUCKET": "images", "MODEL_ROOT": "/opt/models"}
    function = make_function(tmp_path, ENVIRONMENT, environment=variables)

    # when it is invoked
    result = function.invoke({}).payload

    # then module code and handler both saw exactly the function's variables
    assert result == {"cold_start": variables, "invoke": variables}


def test_a_function_writing_its_environment_leaves_the_callers_alone(tmp_path: Path) -> None:
    # given a handler that sets WRITTEN_BY_HANDLER
    function = make_function(tmp_path, ENVIRONMENT, environment={"A": "1"})

    # when it is invoked
    function.invoke({})

    # then the caller's environment does not have it, nor the function's configuration
    assert "WRITTEN_BY_HANDLER" not in os.environ
    assert function.environment == {"A": "1"}


def test_two_functions_running_at_once_each_see_their_own_environment(tmp_path: Path) -> None:
    # given two functions with different settings, whose invocations overlap
    predict = make_function(tmp_path / "predict", ENVIRONMENT, environment={"ROLE": "predict"}, name="predict")
    recover = make_function(tmp_path / "recover", ENVIRONMENT, environment={"ROLE": "recover"}, name="recover")
    together = threading.Barrier(2, timeout=WAIT_S)

    # when both are invoked concurrently
    with ThreadPoolExecutor(2) as pool:
        futures = [pool.submit(function.invoke, {"barrier": together}) for function in (predict, recover)]
        results = [future.result(WAIT_S).payload["invoke"] for future in futures]

    # then neither saw the other's
    assert results == [{"ROLE": "predict"}, {"ROLE": "recover"}]


def test_the_handler_gets_a_context_describing_the_function_and_the_invocation(tmp_path: Path) -> None:
    # given a handler that reports its context
    source = """
    def handler(event, context):
        return {
            "name": context.function_name,
            "memory": context.memory_limit_in_mb,
            "arn": context.invoked_function_arn,
            "log_group": context.log_group_name,
            "remaining_ms": context.get_remaining_time_in_millis(),
            "request_id": context.aws_request_id,
        }
    """
    function = make_function(tmp_path, source, timeout=3.0, name="reporter")

    # when it is invoked twice
    first, second = function.invoke({}).payload, function.invoke({}).payload

    # then the context names the function, counts down from its timeout, and each request has its own id
    assert (first["name"], first["memory"], first["log_group"]) == (
        "modelrun-local-reporter",
        256,
        "/aws/lambda/modelrun-local-reporter",
    )
    assert first["arn"] == "arn:aws:lambda:us-east-1:123456789012:function:modelrun-local-reporter"
    assert 0 < first["remaining_ms"] <= 3000
    assert first["request_id"] != second["request_id"]
