"""The local stack's own AWS clients: made once per service, shared by every request of the gateway."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import boto3
import pytest
from moto import mock_aws

from modelrun_local import stack as stack_module
from modelrun_local.runtime import LOCAL_PARAMETERS
from modelrun_local.stack import LocalStack
from modelrun_local.template import Template


@pytest.fixture
def made_clients(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The services of the boto3 clients the stack module makes, in order."""
    made: list[str] = []
    make = boto3.client

    def counted(service: str, *args: Any, **kwargs: Any) -> Any:
        made.append(service)
        return make(service, *args, **kwargs)

    monkeypatch.setattr(stack_module.boto3, "client", counted)
    with mock_aws():
        yield made


def test_a_service_client_is_made_once_and_then_reused(made_clients: list[str]) -> None:
    # given a stack of the repository's template
    stack = LocalStack(Template.load())

    # when its API Gateway client is asked for three times, two of them at once from other threads
    first = stack.client("apigateway")
    with ThreadPoolExecutor(max_workers=2) as pool:
        others = list(pool.map(lambda _: stack.client("apigateway"), range(2)))

    # then it is one client, made once
    assert others == [first, first]
    assert made_clients == ["apigateway"]


def test_checking_api_keys_makes_no_client_per_request(made_clients: list[str]) -> None:
    # given a stack of the repository's template (no usage plan made: every key is unknown)
    stack = LocalStack(Template.load())

    # when the gateway checks ten requests' keys
    found = [stack.key_id(f"key-{number}") for number in range(10)]

    # then each check answered, and at most one client was made for all of them
    assert found == [None] * 10
    assert made_clients.count("apigateway") <= 1


def test_a_function_sandbox_gets_the_onnx_runtime_threads_that_fit_the_machine(
    monkeypatch: pytest.MonkeyPatch, made_clients: list[str]
) -> None:
    # given a two-core machine, on which PredictBatchFunction (3538 MB: two vCPUs on Lambda) runs up to four sandboxes
    monkeypatch.setattr(stack_module, "LOCAL_SANDBOX_CAP", 4)
    monkeypatch.setattr("modelrun_local.lambdas.os.cpu_count", lambda: 2)

    # when the stack is deployed
    stack = LocalStack(Template.load(overrides=LOCAL_PARAMETERS), api_key="key").deploy()
    stack.dispatcher.stop()

    # then each of its sandboxes runs one intra-op thread, and the function's own settings are untouched
    function = stack.dispatcher.by_logical_id("PredictBatchFunction")
    assert function.max_sandboxes == 4
    assert function.environment["INTRA_OP_THREADS"] == "1"
    assert function.environment["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"] == "3538"
