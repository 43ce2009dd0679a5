"""Reading botocore's errors: the one place that knows where a ``ClientError`` keeps the code AWS answered."""

from __future__ import annotations

from botocore.exceptions import ClientError

CONDITIONAL_CHECK_FAILED = "ConditionalCheckFailedException"


def error_code(exc: ClientError) -> str:
    """The error code AWS answered (``NoSuchKey``, ``ThrottlingException``, ...); an empty string when it gave none."""
    return str(exc.response.get("Error", {}).get("Code", ""))


def condition_failed(exc: ClientError) -> bool:
    """Whether a conditional DynamoDB write was refused because its condition did not hold."""
    return error_code(exc) == CONDITIONAL_CHECK_FAILED
