"""``modelrun tenants add|list|remove`` on moto's API Gateway: keys tagged with their tenant in the stack's plan."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from moto import mock_aws

from modelrun_cli.config import Target
from modelrun_cli.main import run


@pytest.fixture
def stack(monkeypatch: pytest.MonkeyPatch) -> Iterator[Target]:
    """A deployed stack's target: a usage plan holding the stack's own (untagged) key."""
    for name, value in {
        "AWS_ACCESS_KEY_ID": "t",
        "AWS_SECRET_ACCESS_KEY": "t",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    with mock_aws():
        apigateway = boto3.client("apigateway", region_name="us-east-1")
        plan = apigateway.create_usage_plan(name="plan")["id"]
        own = apigateway.create_api_key(name="stack", enabled=True)["id"]
        apigateway.create_usage_plan_key(usagePlanId=plan, keyId=own, keyType="API_KEY")
        yield Target(endpoint="https://x/v1/", api_key="k", source="test", region="us-east-1", usage_plan_id=plan)


def cli(target: Target, *argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = run(["tenants", *argv], env={}, cwd=Path("/"), out=out, err=err, read_stack=lambda _name: target)
    return code, out.getvalue(), err.getvalue()


def test_add_prints_the_new_key_of_a_tagged_key_in_the_plan(stack: Target) -> None:
    code, out, _ = cli(stack, "--stack", "s", "add", "acme")

    assert code == 0
    assert out.startswith("API key (acme): ")
    key = out.split(": ", 1)[1].strip()
    apigateway = boto3.client("apigateway", region_name="us-east-1")
    values = {
        item["value"]: item["id"] for item in apigateway.get_usage_plan_keys(usagePlanId=stack.usage_plan_id)["items"]
    }
    assert apigateway.get_api_key(apiKey=values[key])["tags"] == {"modelrun:tenant": "acme"}


def test_list_shows_the_default_and_the_added_tenants(stack: Target) -> None:
    cli(stack, "--stack", "s", "add", "acme")

    code, out, _ = cli(stack, "--stack", "s", "list", "--json")

    assert code == 0
    assert [tenant["tenant"] for tenant in json.loads(out)] == ["acme", "default"]


def test_remove_deletes_the_key_and_refuses_the_default_and_unknown_ones(stack: Target) -> None:
    cli(stack, "--stack", "s", "add", "acme")

    assert cli(stack, "--stack", "s", "remove", "acme")[0] == 0
    assert "acme" not in cli(stack, "--stack", "s", "list")[1]
    assert cli(stack, "--stack", "s", "remove", "acme")[0] != 0
    assert cli(stack, "--stack", "s", "remove", "default")[0] != 0


@pytest.mark.parametrize("name", ["Acme", "a/b", "default"])
def test_a_bad_or_taken_name_is_refused(stack: Target, name: str) -> None:
    code, _, err = cli(stack, "--stack", "s", "add", name)

    assert code != 0
    assert err.startswith("modelrun: ")
