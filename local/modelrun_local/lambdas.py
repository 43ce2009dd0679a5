"""In-process Lambda: the unchanged handlers, each function with its own environment and warm sandboxes.

moto serves every Lambda invocation (boto3 ``Invoke``, Step Functions tasks, S3 notifications, SQS mappings)
through ``LambdaFunction._invoke_lambda``, which normally starts a Docker container. ``install()`` patches that one
method to call the handler here instead. A function keeps a pool of sandboxes, as Lambda keeps execution
environments: each sandbox is its own import of the handler module (its own cold start and module state), and
serves one invocation at a time. A handler exception comes back as a function error whose ``errorType`` is the
exception's class name, so the state machine's ``Retry``/``Catch`` match it by name as on AWS.
"""

from __future__ import annotations

import contextvars
import importlib.util
import json
import logging
import sys
import threading
import time
import traceback
import uuid
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from modelrun_local import LOGGER, patches
from modelrun_local.environ import function_environment

log = logging.getLogger(LOGGER)


@dataclass
class LambdaContext:
    """The attributes of the Lambda context object that handlers and Powertools use."""

    function_name: str
    memory_limit_in_mb: int
    invoked_function_arn: str
    aws_request_id: str
    deadline: float
    function_version: str = "$LATEST"
    log_group_name: str = ""
    log_stream_name: str = "local"

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self.deadline - time.monotonic()) * 1000))


@dataclass(frozen=True)
class Invocation:
    """What an invocation returned: the payload, or a function error shaped as Lambda shapes it."""

    payload: Any
    error_type: str | None = None
    duration_ms: float = 0.0

    @property
    def failed(self) -> bool:
        return self.error_type is not None


def error_payload(error_type: str, message: str, trace: list[str] | None = None) -> dict[str, Any]:
    return {"errorMessage": message, "errorType": error_type, "requestId": "", "stackTrace": trace or []}


class Sandbox:
    """One execution environment: a private import of the handler module."""

    def __init__(self, function: LocalFunction, index: int) -> None:
        self.function = function
        self.index = index
        self.handler: Any = None
        self.init_ms = 0.0
        self.log_state = patches.SandboxLogState()

    def cold_start(self) -> None:
        module_file, handler_name = self.function.handler_location()
        module_name = f"modelrun_fn_{self.function.logical_id}_{self.index}"
        spec = importlib.util.spec_from_file_location(module_name, module_file)
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot import {module_file}")
        module: ModuleType = importlib.util.module_from_spec(spec)
        started = time.perf_counter()
        # Registered like any imported module (dataclasses and pickling look modules up by name); a failed
        # import leaves nothing behind, as a failed init leaves no Lambda environment behind.
        sys.modules[module_name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            sys.modules.pop(module_name, None)
            raise
        self.init_ms = (time.perf_counter() - started) * 1000
        self.handler = getattr(module, handler_name)
        log.info("cold start %s sandbox %d in %.0f ms", self.function.logical_id, self.index, self.init_ms)


@dataclass
class LocalFunction:
    logical_id: str
    name: str
    arn: str
    code_dir: Path
    handler: str
    environment: dict[str, str]
    timeout: float
    memory_mb: int
    max_sandboxes: int = 16
    _idle: list[Sandbox] = field(default_factory=list)
    # What happened to this function's invocations (tests and benchmarks read these).
    invocations: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    _created: int = 0  # live sandboxes, bounded by max_sandboxes
    _numbered: int = 0
    _lock: threading.Condition = field(default_factory=threading.Condition)

    def handler_location(self) -> tuple[Path, str]:
        module_path, _, attribute = self.handler.rpartition(".")
        return self.code_dir / (module_path.replace(".", "/") + ".py"), attribute

    def _acquire(self) -> Sandbox:
        with self._lock:
            while not self._idle and self._created >= self.max_sandboxes:
                self._lock.wait()
            if self._idle:
                return self._idle.pop()
            self._created += 1
            self._numbered += 1  # never reused: each sandbox's module name stays its own
            return Sandbox(self, self._numbered)

    def _release(self, sandbox: Sandbox, *, healthy: bool) -> None:
        with self._lock:
            if healthy:
                self._idle.append(sandbox)
            else:
                self._created -= 1
            self._lock.notify()

    def _count_error(self, error_type: str) -> None:
        with self._lock:
            self.errors[error_type] += 1

    def invoke(self, event: Any) -> Invocation:
        """Run one invocation on an idle (or new) sandbox, honouring the function's timeout."""
        sandbox = self._acquire()
        with self._lock:
            self.invocations += 1
        started = time.perf_counter()
        outcome: dict[str, Any] = {}
        context = LambdaContext(
            function_name=self.name,
            memory_limit_in_mb=self.memory_mb,
            invoked_function_arn=self.arn,
            aws_request_id=str(uuid.uuid4()),
            deadline=time.monotonic() + self.timeout,
            log_group_name=f"/aws/lambda/{self.name}",
        )

        def run() -> None:
            with function_environment(self.environment):
                try:
                    # This thread's context is a copy of the caller's, which may itself be an invocation.
                    patches.enter_sandbox(None)
                    if sandbox.handler is None:
                        stage = "init"
                        sandbox.cold_start()
                    stage = "invoke"
                    patches.enter_sandbox(sandbox.log_state)
                    outcome["payload"] = sandbox.handler(event, context)
                except Exception as exc:  # a handler error becomes a function error, as on Lambda
                    outcome["error"] = exc
                    outcome["stage"] = stage
                    outcome["trace"] = traceback.format_exception(exc)

        worker = threading.Thread(
            target=contextvars.copy_context().run, args=(run,), name=f"lambda-{self.logical_id}", daemon=True
        )
        worker.start()
        worker.join(self.timeout)
        duration_ms = (time.perf_counter() - started) * 1000
        if worker.is_alive():
            # Lambda would freeze and discard this environment; the thread finishes on its own and the sandbox
            # is never reused.
            self._release(sandbox, healthy=False)
            self._count_error("Sandbox.Timedout")
            message = f"Task timed out after {self.timeout:.2f} seconds"
            log.warning("%s: %s", self.logical_id, message)
            return Invocation(error_payload("Sandbox.Timedout", message), "Sandbox.Timedout", duration_ms)
        if "error" in outcome:
            exc = outcome["error"]
            initialising = outcome["stage"] == "init"
            self._release(sandbox, healthy=not initialising)
            error_type = "Runtime.ImportModuleError" if initialising and isinstance(exc, ImportError) else None
            error_type = error_type or type(exc).__name__
            self._count_error(error_type)
            log.error("%s failed (%s): %s", self.logical_id, error_type, exc)
            payload = error_payload(error_type, str(exc), [line.rstrip() for line in outcome["trace"]])
            return Invocation(payload, error_type, duration_ms)
        self._release(sandbox, healthy=True)
        return Invocation(outcome.get("payload"), None, duration_ms)


class Dispatcher:
    """Maps moto's function names to local functions and patches moto's invoke path to use them."""

    def __init__(self) -> None:
        self.functions: dict[str, LocalFunction] = {}

    def register(self, function: LocalFunction) -> None:
        self.functions[function.name] = function

    def by_logical_id(self, logical_id: str) -> LocalFunction:
        for function in self.functions.values():
            if function.logical_id == logical_id:
                return function
        raise KeyError(f"no function {logical_id} in the local stack")

    def install(self) -> None:
        from moto.awslambda.models import LambdaFunction

        patches.install()
        dispatcher = self
        original = getattr(LambdaFunction, "_modelrun_original_invoke", LambdaFunction._invoke_lambda)

        def _invoke_lambda(self: Any, event: Any = None) -> tuple[str, bool, str]:
            function = dispatcher.functions.get(self.function_name)
            if function is None:
                result: tuple[str, bool, str] = original(self, event)
                return result
            if isinstance(event, str | bytes):
                event = json.loads(event or "{}")
            invocation = function.invoke(event if event is not None else {})
            return json.dumps(invocation.payload, default=str), invocation.failed, ""

        LambdaFunction._modelrun_original_invoke = original  # type: ignore[attr-defined]
        LambdaFunction._invoke_lambda = _invoke_lambda  # type: ignore[method-assign]


def lambda_runtime_environment(
    function: Mapping[str, Any], *, name: str, region: str, credentials: Mapping[str, str]
) -> dict[str, str]:
    """The variables the Lambda runtime itself sets, plus ``credentials`` (``AWS_ACCESS_KEY_ID`` and the rest) as it
    sets the execution role's."""
    return {
        "AWS_LAMBDA_FUNCTION_NAME": name,
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(function.get("MemorySize", 128)),
        "AWS_LAMBDA_FUNCTION_TIMEOUT": str(function.get("Timeout", 3)),
        "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{name}",
        "AWS_EXECUTION_ENV": f"AWS_Lambda_{function.get('Runtime', 'python3.12')}",
        "AWS_REGION": region,
        "AWS_DEFAULT_REGION": region,
        "_HANDLER": str(function.get("Handler", "")),
        **credentials,
    }
