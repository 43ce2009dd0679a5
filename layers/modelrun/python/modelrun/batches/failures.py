"""The failure taxonomy: every failure is transient (try again later) or permanent (record it with its reason).

- transient: throttling, service errors (5xx), timeouts, connection resets, a crashed or timed-out invocation.
  Retried by the state machine, then by ``recover`` with backoff.
- permanent, per image: undecodable, missing, too large, unsupported format. The image's outcome is ``failed``
  with that code; its neighbours are unaffected.
- permanent, found by isolation: an image that makes the chunk fail with a non-transient error. ``recover`` splits
  the chunk until the image is alone and records it as ``unprocessable``.
- exhausted: a chunk still failing after every retry. Its images without an outcome are recorded as
  ``retries_exhausted`` and the message goes on to the parking queue.
"""

from __future__ import annotations

from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ReadTimeoutError,
)

from modelrun.aws.errors import error_code
from modelrun.errors import ModelrunError, TransientFailure

TRANSIENT = "transient"
PERMANENT = "permanent"

RETRIES_EXHAUSTED = "retries_exhausted"
UNPROCESSABLE = "unprocessable"

# AWS error codes that mean "not now" rather than "never".
TRANSIENT_AWS_CODES = frozenset(
    {
        "ThrottlingException",
        "Throttling",
        "ThrottledException",
        "TooManyRequestsException",
        "ProvisionedThroughputExceededException",
        "RequestLimitExceeded",
        "RequestThrottled",
        "SlowDown",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "InternalError",
        "InternalServerError",
        "InternalFailure",
        "RequestTimeout",
        "RequestTimeoutException",
        "TransactionConflictException",
    }
)

# State machine error names (a Lambda task's errorType, or Step Functions' own) that are worth retrying.
TRANSIENT_STATE_ERRORS = frozenset(
    {
        "TransientFailure",
        "Sandbox.Timedout",
        "States.Timeout",
        "States.TaskFailed",
        "Lambda.ServiceException",
        "Lambda.AWSLambdaException",
        "Lambda.SdkClientException",
        "Lambda.TooManyRequestsException",
        "Lambda.ClientExecutionTimeoutException",
        "Lambda.Unknown",
    }
)


def is_transient(exc: BaseException) -> bool:
    """Whether trying the same work again later may succeed."""
    if isinstance(exc, TransientFailure):
        return True
    if isinstance(exc, ModelrunError):
        return False
    if isinstance(exc, EndpointConnectionError | ConnectionClosedError | ReadTimeoutError | ConnectTimeoutError):
        return True
    if isinstance(exc, ClientError):
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        return error_code(exc) in TRANSIENT_AWS_CODES or status >= 500
    return isinstance(exc, TimeoutError | ConnectionError)


def classify_state_error(error_name: str | None) -> str:
    """The kind of a failure the state machine caught, from its error name (never from its message)."""
    return TRANSIENT if error_name in TRANSIENT_STATE_ERRORS else PERMANENT


def as_transient(exc: BaseException, what: str) -> TransientFailure:
    """A transient AWS or network error as the error the state machine retries by name."""
    return TransientFailure(f"{what}: {type(exc).__name__}: {exc}")
