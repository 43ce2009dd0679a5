"""Local-mode patches of moto: the Step Functions context's StartTime as the ISO-8601 string AWS gives, Retry
counters that concurrent Map iterations cannot reset, DynamoDB responses written without trying every attribute
value type, and one SDK client per service and each JSONPath parsed once for the Step Functions interpreter."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta, timezone
from types import SimpleNamespace
from typing import Any

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


# --- DynamoDB attribute values in responses -------------------------------------------------------------------------

# An outcome as the items table holds it, with every attribute value type, nested in maps and lists.
OUTCOME_ITEM: dict[str, Any] = {
    "batch_id": {"S": "b-1"},
    "item": {"N": "7"},
    "status": {"S": "predicted"},
    "done": {"BOOL": True},
    "error": {"NULL": True},
    "digest": {"B": "AAEC"},
    "tags": {"SS": ["a", "b"]},
    "sizes": {"NS": ["1", "2.5"]},
    "blobs": {"BS": ["AAEC", "AwQ="]},
    "result": {
        "M": {
            "label": {"S": "cat"},
            "top_k": {"L": [{"M": {"label": {"S": "cat"}, "score": {"N": "0.9"}}}, {"L": [{"N": "1"}]}]},
            "empty": {"M": {}},
        }
    },
}


def query_response(items: list[dict[str, Any]]) -> Any:
    """What moto's DynamoDB server answers a Query that found ``items`` (status, headers and body)."""
    from moto.core.serialize import XFormedAttributePicker, get_serializer_class
    from moto.core.utils import get_service_model

    service = get_service_model("dynamodb")
    serializer = get_serializer_class("dynamodb", service.protocol)(
        operation_model=service.operation_model("Query"),
        pretty_print=False,
        value_picker=XFormedAttributePicker(),
    )
    return serializer.serialize({"Items": items, "Count": len(items), "ScannedCount": len(items)})


def test_a_query_response_is_the_json_moto_itself_writes(monkeypatch: pytest.MonkeyPatch) -> None:
    # given moto's own response to a query returning an item with every attribute value type
    from moto.core.serialize import BaseJSONSerializer

    patched = BaseJSONSerializer._serialize_type_structure
    monkeypatch.setattr(BaseJSONSerializer, "_serialize_type_structure", patched.moto_original)
    expected = query_response([OUTCOME_ITEM])
    monkeypatch.setattr(BaseJSONSerializer, "_serialize_type_structure", patched)

    # when the patched serializer writes the same response
    response = query_response([OUTCOME_ITEM])

    # then it is the same, byte for byte
    assert response == expected
    assert json.loads(response["body"])["Items"][0]["result"] == OUTCOME_ITEM["result"]


def test_an_attribute_value_is_written_without_looking_for_the_types_it_does_not_have(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # given a count of the member lookups moto's serializer makes
    from moto.core.serialize import ResponseSerializer

    lookups: list[str] = []
    look_up = ResponseSerializer.get_value

    def counted(self: Any, value: Any, key: str, shape: Any) -> Any:
        lookups.append(key)
        return look_up(self, value, key, shape)

    monkeypatch.setattr(ResponseSerializer, "get_value", counted)

    # when a query response with one item of one string attribute is written
    query_response([{"batch_id": {"S": "b-1"}}])

    # then the attribute value's only lookup is its own type's (not N, B, SS, ... as well)
    assert lookups.count("S") == 1
    assert not {"N", "B", "SS", "NS", "BS", "M", "L", "NULL", "BOOL"} & set(lookups)


# --- Step Functions' SDK clients ---------------------------------------------------------------------------------


def test_every_module_of_the_interpreter_gets_one_client_per_region_and_service() -> None:
    # given the modules of moto's interpreter that make SDK clients for their Tasks
    import sys

    from moto import mock_aws
    from moto.stepfunctions.parser.asl.component.state.exec.state_task import lambda_eval_utils
    from moto.stepfunctions.parser.asl.component.state.exec.state_task.service import state_task_service_sqs

    makers = [module for name, module in sys.modules.items() if hasattr(module, "boto_client_for")]

    # when Tasks ask for clients, from two modules and many threads at once
    with mock_aws():
        with ThreadPoolExecutor(8) as pool:
            lambdas = set(pool.map(lambda _: id(lambda_eval_utils.boto_client_for("us-east-1", "lambda")), range(16)))
        again = lambda_eval_utils.boto_client_for("us-east-1", "lambda", state_credentials=object())
        sqs = state_task_service_sqs.boto_client_for("us-east-1", "sqs")
        other_region = lambda_eval_utils.boto_client_for("eu-west-1", "lambda")

    # then each module has the patched maker, and one client serves each region and service
    assert len(makers) >= 13
    assert all(getattr(module.boto_client_for, "modelrun_patched", False) for module in makers)
    assert lambdas == {id(again)}
    assert sqs.meta.service_model.service_name == "sqs"
    assert other_region is not again
    assert other_region.meta.region_name == "eu-west-1"


def test_each_json_path_of_the_interpreter_is_parsed_once_and_still_evaluates() -> None:
    # given the interpreter's JSONPath helpers
    from moto.stepfunctions.parser.asl.component.common.path import result_path
    from moto.stepfunctions.parser.asl.utils import json_path

    # when one path is evaluated on two documents, from many threads at once
    with ThreadPoolExecutor(8) as pool:
        found = list(
            pool.map(lambda n: json_path.extract_json("$.chunk.items[1]", {"chunk": {"items": [0, n]}}), range(8))
        )

    # then each document gives its own value, and the path was parsed once for all of them
    assert found == list(range(8))
    assert json_path.parse("$.chunk.items[1]") is json_path.parse("$.chunk.items[1]")
    assert result_path.parse("$.result") is result_path.parse("$.result")
