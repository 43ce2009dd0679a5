"""DynamoDB through the resource API: numbers to and from Decimals, and conditional writes that report whether
they applied."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

from botocore.exceptions import ClientError

from modelrun.aws.errors import condition_failed


def plain(value: Any) -> Any:
    """DynamoDB's Decimals back to ints and floats, recursively."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [plain(item) for item in value]
    return value


def dynamo(value: Any) -> Any:
    """Floats to Decimals, recursively, as the DynamoDB resource API wants them."""
    if isinstance(value, float):
        return Decimal(repr(value))
    if isinstance(value, dict):
        return {key: dynamo(item) for key, item in value.items()}
    if isinstance(value, list):
        return [dynamo(item) for item in value]
    return value


def applied(write: Callable[..., Any], **request: Any) -> bool:
    """Make a conditional DynamoDB write; False when its condition did not hold (another writer came first)."""
    try:
        write(**request)
    except ClientError as exc:
        if condition_failed(exc):
            return False
        raise
    return True
