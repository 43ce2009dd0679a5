"""Local-mode patches: Powertools' router state per invocation context, and the Step Functions context StartTime."""

from __future__ import annotations

import copy
import json
import sys
import threading
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from aws_lambda_powertools.event_handler import APIGatewayRestResolver
from aws_lambda_powertools.event_handler.api_gateway import BaseRouter

from modelrun_local import patches
from modelrun_local.lambdas import LocalFunction

EVENT = Path(__file__).resolve().parents[3] / "events" / "predict" / "list-models.json"
WAIT_S = 10.0


@pytest.fixture(autouse=True)
def installed() -> None:
    patches.install()


def rest_event(path: str) -> dict[str, Any]:
    """The sample REST event of GET /models, for another path."""
    event: dict[str, Any] = copy.deepcopy(json.loads(EVENT.read_text()))
    event.update(path=path, resource="/models/{name}", pathParameters={"name": path.rsplit("/", 1)[-1]})
    return event


class Context:
    """The one attribute of a Lambda context these tests read."""

    def __init__(self, request_id: str) -> None:
        self.aws_request_id = request_id


def resolver_that_reports_its_event(both_inside: threading.Barrier) -> APIGatewayRestResolver:
    """A resolver whose route waits until both requests are inside a handler, then reports what it sees."""
    app = APIGatewayRestResolver()

    @app.get("/models/<name>")
    def report(name: str) -> dict[str, Any]:
        both_inside.wait()
        return {
            "name": name,
            "path": app.current_event.path,
            "class_path": BaseRouter.current_event.path,
            "request_id": app.lambda_context.aws_request_id,
        }

    return app


def resolve_concurrently(apps: list[APIGatewayRestResolver], names: list[str]) -> list[dict[str, Any]]:
    results: dict[str, dict[str, Any]] = {}

    def serve(app: APIGatewayRestResolver, name: str) -> None:
        response = app.resolve(rest_event(f"/models/{name}"), Context(f"request-{name}"))  # type: ignore[arg-type]
        results[name] = json.loads(response["body"])

    threads = [threading.Thread(target=serve, args=(app, name)) for app, name in zip(apps, names, strict=True)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT_S)
    assert not any(thread.is_alive() for thread in threads), "a request did not finish before the deadline"
    return [results[name] for name in names]


# --- Powertools router state ---------------------------------------------------------------------------------


def test_concurrent_requests_on_one_resolver_each_see_their_own_event() -> None:
    # given one warm resolver serving two requests whose handlers run at the same time
    both_inside = threading.Barrier(2, timeout=WAIT_S)
    app = resolver_that_reports_its_event(both_inside)

    # when both read the current event after the other has set its own
    first, second = resolve_concurrently([app, app], ["digits", "colours"])

    # then each saw its own path, through the instance and through the class
    assert (first["path"], first["class_path"]) == ("/models/digits", "/models/digits")
    assert (second["path"], second["class_path"]) == ("/models/colours", "/models/colours")


def test_concurrent_requests_on_two_functions_resolvers_each_see_their_own_event() -> None:
    # given two functions' resolvers (the state was shared by every resolver class-wide)
    both_inside = threading.Barrier(2, timeout=WAIT_S)
    apps = [resolver_that_reports_its_event(both_inside), resolver_that_reports_its_event(both_inside)]

    # when they serve a request each at the same time
    results = resolve_concurrently(apps, ["digits", "colours"])

    # then neither saw the other's event
    assert [result["path"] for result in results] == ["/models/digits", "/models/colours"]


def test_concurrent_requests_each_see_their_own_lambda_context() -> None:
    # given two requests in flight together
    both_inside = threading.Barrier(2, timeout=WAIT_S)
    app = resolver_that_reports_its_event(both_inside)

    # when each reads the Lambda context
    results = resolve_concurrently([app, app], ["digits", "colours"])

    # then each has the context it was invoked with
    assert [result["request_id"] for result in results] == ["request-digits", "request-colours"]


def test_an_event_resolved_on_one_thread_is_not_visible_on_another() -> None:
    # given an event resolved on this thread
    app = APIGatewayRestResolver()
    app.get("/models/<name>")(lambda name: {"name": name})
    app.resolve(rest_event("/models/digits"), Context("here"))  # type: ignore[arg-type]
    assert BaseRouter.current_event.path == "/models/digits"
    seen: list[Any] = []

    # when a fresh thread reads the router state
    thread = threading.Thread(target=lambda: seen.append((BaseRouter.current_event, BaseRouter.lambda_context)))
    thread.start()
    thread.join(WAIT_S)

    # then it finds none
    assert seen == [(None, None)]


def test_install_is_idempotent_and_resolution_still_works() -> None:
    # given the patch already installed
    # when it is installed again
    patches.install()

    # then the router class keeps one patched metaclass, and a request resolves with its event readable
    assert type(BaseRouter) is patches._PerContextRouterMeta
    app = APIGatewayRestResolver()
    app.get("/models/<name>")(lambda name: {"path": app.current_event.path})
    response = app.resolve(rest_event("/models/digits"), Context("again"))  # type: ignore[arg-type]
    assert json.loads(response["body"]) == {"path": "/models/digits"}


HANDLER = """
from aws_lambda_powertools.event_handler import APIGatewayRestResolver

app = APIGatewayRestResolver()


@app.get("/models/<name>")
def get_model(name):
    return {"name": name, "path": app.current_event.path}


def handler(event, context):
    return app.resolve(event, context)
"""


def test_an_event_resolved_inside_an_invocation_does_not_leak_to_the_caller(tmp_path: Path) -> None:
    # given the caller's own current event, and an in-process function that resolves REST events
    caller = APIGatewayRestResolver()
    caller.get("/models/<name>")(lambda name: {})
    caller.resolve(rest_event("/models/callers-own"), Context("caller"))  # type: ignore[arg-type]
    (tmp_path / "app.py").write_text(HANDLER, encoding="utf-8")
    function = LocalFunction("ModelsFunction", "local-models", "arn:local", tmp_path, "app.handler", {}, WAIT_S, 128)

    # when the function serves a request
    invocation = function.invoke(rest_event("/models/digits"))

    # then the function saw its event, and the caller still sees its own
    assert json.loads(invocation.payload["body"]) == {"name": "digits", "path": "/models/digits"}
    assert BaseRouter.current_event.path == "/models/callers-own"


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


# --- Powertools Logger state per sandbox ---------------------------------------------------------------------

LOGGING_HANDLER = """
import threading

from aws_lambda_powertools import Logger

logger = Logger(service="modelrun-patch-test")
both_inside = None  # a barrier a test may set


@logger.inject_lambda_context(log_event=False)
def handler(event, context):
    if event.get("append"):
        logger.append_keys(**event["append"])
    if both_inside is not None:
        both_inside.wait()
    return dict(logger.get_current_keys())
"""


def logging_function(tmp_path: Path, logical_id: str) -> LocalFunction:
    """An in-process function whose handler returns the keys its Powertools Logger would stamp on a record."""
    code = tmp_path / logical_id
    code.mkdir()
    (code / "app.py").write_text(LOGGING_HANDLER, encoding="utf-8")
    return LocalFunction(logical_id, f"local-{logical_id}", f"arn:{logical_id}", code, "app.handler", {}, WAIT_S, 128)


def test_keys_one_function_appends_are_not_on_another_functions_records(tmp_path: Path) -> None:
    # given two functions that log as the same Powertools service, as every function of the stack does
    chunks, status = logging_function(tmp_path, "ChunksFunction"), logging_function(tmp_path, "StatusFunction")

    # when the first appends a batch's keys to its records, and then the second serves a request
    chunks.invoke({"append": {"batch_id": "b-1", "chunk": 3}})
    keys = status.invoke({}).payload

    # then the second's records carry its own function name and none of the first's keys
    assert keys["function_name"] == "local-StatusFunction"
    assert "batch_id" not in keys
    assert "chunk" not in keys


def test_concurrent_invocations_each_stamp_their_own_request_id(tmp_path: Path) -> None:
    # given two functions of one service, each with a handler that waits until both are inside
    functions = [logging_function(tmp_path, "FirstFunction"), logging_function(tmp_path, "SecondFunction")]
    for function in functions:
        function.invoke({})  # warm: the module is imported, its sandbox idle
    both_inside = threading.Barrier(2, timeout=WAIT_S)
    for function in functions:
        for module in [m for name, m in sys.modules.items() if name.startswith(f"modelrun_fn_{function.logical_id}_")]:
            module.both_inside = both_inside
    results: dict[str, dict[str, Any]] = {}

    # when both serve a request at the same time, each appending its own key
    def serve(function: LocalFunction) -> None:
        results[function.logical_id] = function.invoke({"append": {"owner": function.logical_id}}).payload

    threads = [threading.Thread(target=serve, args=(function,)) for function in functions]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT_S)
    assert not any(thread.is_alive() for thread in threads), "an invocation did not finish before the deadline"

    # then each saw only its own function name and key
    for function in functions:
        assert results[function.logical_id]["function_name"] == function.name
        assert results[function.logical_id]["owner"] == function.logical_id


def test_each_sandbox_logs_its_first_invocation_as_its_cold_start(tmp_path: Path) -> None:
    # given a function that has already served a request (another sandbox's cold start came first)
    logging_function(tmp_path, "EarlierFunction").invoke({})
    function = logging_function(tmp_path, "LaterFunction")

    # when it serves two requests, one after the other, on its one sandbox
    first, second = function.invoke({}).payload, function.invoke({}).payload

    # then only its first is a cold start
    assert (first["cold_start"], second["cold_start"]) == (True, False)


def test_keys_appended_in_one_invocation_stay_for_the_next_on_the_same_sandbox(tmp_path: Path) -> None:
    # given a warm sandbox whose last request appended a key (Powertools keeps it, as on Lambda)
    function = logging_function(tmp_path, "KeepsFunction")
    earlier = function.invoke({"append": {"tenant": "radiology"}}).payload

    # when it serves the next request
    keys = function.invoke({}).payload

    # then the key is still there, beside the new request's id
    assert keys["tenant"] == "radiology"
    assert keys["function_request_id"] != earlier["function_request_id"]
