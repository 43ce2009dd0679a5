"""The few places where a library differs from AWS in a way that matters to the functions, patched for local mode.

1. Powertools REST resolvers and concurrency (below). 2. moto's Step Functions context object:
``$$.Execution.StartTime`` is a ``datetime`` where AWS gives an ISO-8601 string, so a state that passes it on
(``"S.$": "$$.Execution.StartTime"``) fails to serialise; ``install()`` gives it the string AWS gives.


On Lambda an execution environment serves one invocation at a time, so Powertools' REST resolvers keep the
current event in class attributes shared by every resolver (``BaseRouter.current_event`` and
``BaseRouter.lambda_context``). Local mode serves concurrent invocations of many functions in one process, and
two requests at once would read each other's event. ``install()`` turns those two class attributes into
per-context values: every invocation runs on its own thread with its own context (``modelrun_local.lambdas``).
Nothing changes for the functions on AWS.
"""

from __future__ import annotations

import contextvars
from abc import ABCMeta
from datetime import UTC, datetime
from typing import Any

_ATTRIBUTES = ("current_event", "lambda_context")
_values: dict[str, contextvars.ContextVar[Any]] = {
    name: contextvars.ContextVar(f"powertools_{name}", default=None) for name in _ATTRIBUTES
}


class _PerContext:
    """A data descriptor whose value lives in a ContextVar (used on the class and on its metaclass)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __get__(self, instance: Any, owner: Any = None) -> Any:
        return _values[self.name].get()

    def __set__(self, instance: Any, value: Any) -> None:
        _values[self.name].set(value)


class _PerContextRouterMeta(ABCMeta):
    """``BaseRouter.current_event = x`` goes through these descriptors instead of rebinding the class attribute."""

    current_event = _PerContext("current_event")
    lambda_context = _PerContext("lambda_context")


def install() -> None:
    """Idempotent; must run before handlers resolve requests concurrently and before executions start."""
    _install_router_state()
    _install_iso_start_time()


def iso8601(moment: datetime) -> str:
    """The timestamp format of the Step Functions context object: ``2026-11-25T04:21:22.153Z``."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _install_iso_start_time() -> None:
    from moto.stepfunctions.parser.backend import execution_worker

    original = execution_worker.ExecutionData
    if getattr(original, "modelrun_patched", False):
        return

    def execution_data(**fields: Any) -> Any:
        if isinstance(fields.get("StartTime"), datetime):
            fields["StartTime"] = iso8601(fields["StartTime"])
        return original(**fields)

    execution_data.modelrun_patched = True  # type: ignore[attr-defined]
    execution_worker.ExecutionData = execution_data  # type: ignore[assignment,misc]


def _install_router_state() -> None:
    from aws_lambda_powertools.event_handler.api_gateway import BaseRouter

    if isinstance(BaseRouter, _PerContextRouterMeta):
        return
    for name in _ATTRIBUTES:
        # Instance reads (``self.current_event``) find this descriptor on the class ...
        setattr(BaseRouter, name, _PerContext(name))
    # ... and class-level writes and reads (``BaseRouter.current_event = ...``) find the metaclass's.
    BaseRouter.__class__ = _PerContextRouterMeta  # type: ignore[method-assign,assignment]
