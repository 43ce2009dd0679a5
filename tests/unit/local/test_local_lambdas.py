"""Lambda for the local stack: warm and concurrent sandboxes (worker processes), function errors as Lambda shapes
them, init failures, timeouts, and each function's own environment. Handlers are tiny files written into tmp_path;
events cross to the sandbox as JSON, so tests coordinate concurrent invocations through files."""

from __future__ import annotations

import os
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from modelrun_local.lambdas import LocalFunction, sandbox_threads

WAIT_S = 10.0  # deadline for anything a test waits on; never reached when the code works

# Module state identifies the sandbox (one import = one SANDBOX token, with its process id) and counts the calls it
# served. "together" names a folder where N invocations meet: each leaves a file and waits until N are there.
STATEFUL = """
import os
import time
import uuid
from pathlib import Path

SANDBOX = uuid.uuid4().hex
CALLS = 0


def meet(folder, parties):
    Path(folder, SANDBOX).touch()
    deadline = time.monotonic() + 10
    while len(os.listdir(folder)) < parties and time.monotonic() < deadline:
        time.sleep(0.01)


def handler(event, context):
    global CALLS
    CALLS += 1
    if "entered" in event:
        Path(event["entered"]).touch()
    if "release" in event:
        deadline = time.monotonic() + 10
        while not Path(event["release"]).exists() and time.monotonic() < deadline:
            time.sleep(0.01)
    if "together" in event:
        meet(event["together"], event["parties"])
    if event.get("fail"):
        raise ValueError("asked to fail")
    return {"sandbox": SANDBOX, "pid": os.getpid(), "calls": CALLS}
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


@pytest.fixture
def functions() -> Any:
    """Closes what a test made with ``make_function`` (passed through it), so no sandbox outlives its test."""
    made: list[LocalFunction] = []
    yield made.append
    for function in made:
        function.close()


def together(tmp_path: Path, parties: int) -> dict[str, Any]:
    folder = tmp_path / f"together-{time.monotonic_ns()}"
    folder.mkdir()
    return {"together": str(folder), "parties": parties}


def invoke_concurrently(function: LocalFunction, events: list[dict[str, Any]]) -> list[Any]:
    with ThreadPoolExecutor(len(events)) as pool:
        invocations = list(pool.map(function.invoke, events))
    assert not any(invocation.failed for invocation in invocations), [i.payload for i in invocations]
    return [invocation.payload for invocation in invocations]


def wait_for_file(path: Path) -> None:
    deadline = time.monotonic() + WAIT_S
    while not path.exists():
        assert time.monotonic() < deadline, f"{path.name} never appeared"
        time.sleep(0.01)


# --- results and sandboxes -----------------------------------------------------------------------------------


def test_an_invocation_returns_the_handler_result(tmp_path: Path, functions: Any) -> None:
    # given a handler that echoes part of its event
    function = make_function(tmp_path, "def handler(event, context):\n    return {'echo': event['value'] * 2}\n")
    functions(function)

    # when it is invoked
    invocation = function.invoke({"value": 21})

    # then the result is the handler's, with no error and a measured duration
    assert (invocation.payload, invocation.error_type, invocation.failed) == ({"echo": 42}, None, False)
    assert invocation.duration_ms > 0


def test_a_sandbox_is_a_process_of_its_own(tmp_path: Path, functions: Any) -> None:
    # given a function
    function = make_function(tmp_path, STATEFUL)
    functions(function)

    # when it is invoked, then its handler ran in another process
    assert function.invoke({}).payload["pid"] != os.getpid()


def test_sequential_invocations_reuse_the_warm_sandbox(tmp_path: Path, functions: Any) -> None:
    # given a function with module state
    function = make_function(tmp_path, STATEFUL)
    functions(function)

    # when it is invoked three times in a row
    results = [function.invoke({}).payload for _ in range(3)]

    # then one sandbox (one process, one import) served all three, its state carrying over
    assert len({(result["sandbox"], result["pid"]) for result in results}) == 1
    assert [result["calls"] for result in results] == [1, 2, 3]
    assert function.sandboxes == 1


def test_concurrent_invocations_each_get_a_sandbox_with_its_own_module_state(tmp_path: Path, functions: Any) -> None:
    # given two invocations that can only finish once both are inside the handler at the same time
    function = make_function(tmp_path, STATEFUL)
    functions(function)
    meeting = together(tmp_path, 2)

    # when they are invoked concurrently
    first, second = invoke_concurrently(function, [meeting, meeting])

    # then two processes served them, each counting only its own call
    assert first["pid"] != second["pid"]
    assert (first["calls"], second["calls"]) == (1, 1)
    assert function.sandboxes == 2


def test_a_sandbox_created_for_concurrency_stays_warm_for_later_invocations(tmp_path: Path, functions: Any) -> None:
    # given two sandboxes created by a concurrent burst
    function = make_function(tmp_path, STATEFUL)
    functions(function)
    meeting = together(tmp_path, 2)
    burst = invoke_concurrently(function, [meeting, meeting])

    # when the function is invoked again
    later = function.invoke({}).payload

    # then one of the warm sandboxes serves it: no third cold start
    assert later["sandbox"] in {result["sandbox"] for result in burst}
    assert later["calls"] == 2


def test_with_one_sandbox_a_second_concurrent_invocation_waits_for_the_first(tmp_path: Path, functions: Any) -> None:
    # given a function limited to one sandbox, busy with an invocation that holds until released
    function = make_function(tmp_path, STATEFUL, max_sandboxes=1)
    functions(function)
    first_entered, release_first, second_entered = (tmp_path / name for name in ("first", "release", "second"))
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(function.invoke, {"entered": str(first_entered), "release": str(release_first)})
        wait_for_file(first_entered)

        # when a second invocation arrives
        second = pool.submit(function.invoke, {"entered": str(second_entered)})

        # then it does not start while the first holds the only sandbox (a bounded look, not a synchronisation)
        time.sleep(0.2)
        assert not second_entered.exists()
        release_first.touch()
        results = [first.result(WAIT_S).payload, second.result(WAIT_S).payload]

    # and it runs afterwards on that same sandbox
    assert results[0]["sandbox"] == results[1]["sandbox"]
    assert [result["calls"] for result in results] == [1, 2]


def test_a_handler_in_a_sub_folder_module_is_found(tmp_path: Path, functions: Any) -> None:
    # given Handler: handlers.predict.app.handler (dots are folders, as on Lambda)
    source = "def handler(event, context):\n    return 'from sub folder'\n"
    function = make_function(tmp_path, source, handler="handlers.predict.app.handler")
    functions(function)

    # when invoked, then that module's handler ran
    assert function.invoke({}).payload == "from sub folder"


def test_an_idle_sandbox_is_stopped_after_the_idle_timeout(tmp_path: Path, functions: Any) -> None:
    # given a warm sandbox
    function = make_function(tmp_path, STATEFUL)
    functions(function)
    first = function.invoke({}).payload

    # when it has been idle longer than the function's idle timeout
    stopped = function.stop_idle(0)

    # then its process is gone, and the next invocation cold-starts a new one
    assert (stopped, function.sandboxes) == (1, 0)
    assert not Path(f"/proc/{first['pid']}").exists()
    assert function.invoke({}).payload["calls"] == 1


def test_a_result_json_cannot_hold_is_runtime_marshal_error(tmp_path: Path, functions: Any) -> None:
    # given a handler returning a set
    function = make_function(tmp_path, "def handler(event, context):\n    return {1, 2}\n")
    functions(function)

    # when it is invoked, then it fails as Lambda's runtime fails to serialise it, and the sandbox stays warm
    assert function.invoke({}).error_type == "Runtime.MarshalError"
    assert function.sandboxes == 1


# --- errors ----------------------------------------------------------------------------------------------------

FAILING = """
class ModelBusy(Exception):
    pass


def handler(event, context):
    raise ModelBusy("model digits is loading, retry in 2 s")
"""


def test_a_handler_exception_is_a_function_error_named_after_its_class(tmp_path: Path, functions: Any) -> None:
    # given a handler that raises a custom exception
    function = make_function(tmp_path, FAILING)
    functions(function)

    # when it is invoked
    invocation = function.invoke({})

    # then the error type is the class name (what Step Functions' ErrorEquals matches) and the message is kept
    assert invocation.failed
    assert invocation.error_type == "ModelBusy"
    assert invocation.payload["errorType"] == "ModelBusy"
    assert invocation.payload["errorMessage"] == "model digits is loading, retry in 2 s"


def test_a_function_error_carries_the_stack_trace_down_to_the_raising_line(tmp_path: Path, functions: Any) -> None:
    # given a handler that raises on line 7 of its file
    function = make_function(tmp_path, FAILING)
    functions(function)

    # when it is invoked
    trace = function.invoke({}).payload["stackTrace"]

    # then the trace is a list of lines that shows the handler's file, line and function
    assert all(isinstance(line, str) for line in trace)
    assert any(f'File "{tmp_path / "app.py"}", line 7, in handler' in line for line in trace)


def test_a_sandbox_stays_warm_after_its_handler_raised(tmp_path: Path, functions: Any) -> None:
    # given an invocation whose handler raised
    function = make_function(tmp_path, STATEFUL)
    functions(function)
    first = function.invoke({}).payload
    assert function.invoke({"fail": True}).error_type == "ValueError"

    # when the function is invoked again
    later = function.invoke({}).payload

    # then the same process served it, its call count including the failed call
    assert (later["pid"], later["calls"]) == (first["pid"], 3)


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


def test_an_exception_during_init_is_a_function_error_named_after_its_class(tmp_path: Path, functions: Any) -> None:
    # given a module whose first import fails
    function = make_function(tmp_path, INIT_FAILS_ONCE)
    functions(function)

    # when it is invoked
    invocation = function.invoke({})

    # then the init error comes back like a handler error, and the sandbox is gone
    assert invocation.error_type == "ModelStoreUnavailable"
    assert invocation.payload["errorMessage"] == "the model store did not answer during init"
    assert function.sandboxes == 0


def test_after_an_init_failure_the_next_invocation_cold_starts_again(tmp_path: Path, functions: Any) -> None:
    # given a function with a single sandbox slot, whose first import failed
    function = make_function(tmp_path, INIT_FAILS_ONCE, max_sandboxes=1)
    functions(function)
    assert function.invoke({}).failed

    # when the function is invoked again
    invocation = function.invoke({})

    # then the slot was freed and a second import ran, and succeeded
    assert (invocation.error_type, invocation.payload) == (None, {"cold_starts": 2})


def test_an_import_error_during_init_is_runtime_import_module_error(tmp_path: Path, functions: Any) -> None:
    # given a handler module that imports a package missing from its layers
    source = "import modelrun_no_such_package\n\ndef handler(event, context):\n    return 1\n"
    function = make_function(tmp_path, source)
    functions(function)

    # when it is invoked
    invocation = function.invoke({})

    # then the error type is Lambda's for a module that cannot be imported, naming the missing module
    assert invocation.error_type == "Runtime.ImportModuleError"
    assert "modelrun_no_such_package" in invocation.payload["errorMessage"]


def test_an_invocation_over_the_timeout_is_sandbox_timedout_and_its_process_is_killed(
    tmp_path: Path, functions: Any
) -> None:
    # given a function with a single sandbox slot, warm, and a 1 s timeout
    function = make_function(tmp_path, STATEFUL, timeout=1.0, max_sandboxes=1)
    functions(function)
    warm = function.invoke({}).payload

    # when an invocation holds past the timeout (its release never comes)
    invocation = function.invoke({"release": str(tmp_path / "never")})

    # then Lambda's timeout error comes back at the timeout, and the sandbox's process is gone
    assert invocation.error_type == "Sandbox.Timedout"
    assert invocation.payload["errorMessage"] == "Task timed out after 1.00 seconds"
    assert 1000 <= invocation.duration_ms < 1000 + WAIT_S * 100
    assert not Path(f"/proc/{warm['pid']}").exists()
    # and the next invocation gets a fresh sandbox: a cold start, its module state new
    later = function.invoke({}).payload
    assert (later["calls"], later["pid"] != warm["pid"]) == (1, True)


# --- environment and context -----------------------------------------------------------------------------------

ENVIRONMENT = """
import os

AT_COLD_START = dict(os.environ)


def handler(event, context):
    os.environ["WRITTEN_BY_HANDLER"] = "1"
    return {"cold_start": AT_COLD_START, "invoke": {k: v for k, v in os.environ.items() if k != "WRITTEN_BY_HANDLER"}}
"""
# What the runtime adds to a function's own variables: Lambda's task root, and how the sandbox runs Python.
RUNTIME_VARIABLES = {
    "LAMBDA_TASK_ROOT",
    "PYTHONPATH",
    "PYTHONUNBUFFERED",
    "LANG",
    "AWS_CONFIG_FILE",
    "AWS_SHARED_CREDENTIALS_FILE",
}


def test_a_function_sees_its_environment_and_not_the_runtimes_at_init_and_invoke(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, functions: Any
) -> None:
    # given a process variable, and a function with its own variables
    monkeypatch.setenv("MODELRUN_TEST_PROCESS_ONLY", "1")
    variables = {"IMAGES_BUCKET": "images", "MODEL_ROOT": "/opt/models"}
    function = make_function(tmp_path, ENVIRONMENT, environment=variables)
    functions(function)

    # when it is invoked
    result = function.invoke({}).payload

    # then module code and handler both saw the function's variables, and only the runtime's besides
    for seen in (result["cold_start"], result["invoke"]):
        assert {key: seen[key] for key in variables} == variables
        assert set(seen) - set(variables) <= RUNTIME_VARIABLES
    assert result["cold_start"]["LAMBDA_TASK_ROOT"] == str(tmp_path)


def test_a_function_writing_its_environment_leaves_the_callers_alone(tmp_path: Path, functions: Any) -> None:
    # given a handler that sets WRITTEN_BY_HANDLER
    function = make_function(tmp_path, ENVIRONMENT, environment={"A": "1"})
    functions(function)

    # when it is invoked
    function.invoke({})

    # then the caller's environment does not have it, nor the function's configuration
    assert "WRITTEN_BY_HANDLER" not in os.environ
    assert function.environment == {"A": "1"}


def test_the_handler_gets_a_context_describing_the_function_and_the_invocation(tmp_path: Path, functions: Any) -> None:
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
    functions(function)

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


# --- ONNX Runtime threads per sandbox ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("memory_mb", "max_sandboxes", "cpus", "expected"),
    [
        pytest.param(3538, 4, 2, 1, id="four sandboxes on two cores: one thread each"),
        pytest.param(3538, 1, 8, 2, id="one sandbox: the two vCPUs its memory buys"),
        pytest.param(10240, 1, 4, 4, id="one sandbox: no more than the machine's cores"),
        pytest.param(10240, 2, 16, 6, id="never more than Lambda's six vCPUs"),
        pytest.param(1769, 16, 8, 1, id="more sandboxes than cores: still one"),
    ],
)
def test_sandbox_threads_fit_every_sandbox_of_the_function_on_the_cores(
    memory_mb: int, max_sandboxes: int, cpus: int, expected: int
) -> None:
    assert sandbox_threads(memory_mb, max_sandboxes, cpus) == expected
