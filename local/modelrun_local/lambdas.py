"""Lambda for the local stack: the unchanged handlers, each function with its own environment and warm sandboxes.

moto serves every Lambda invocation (boto3 ``Invoke``, Step Functions tasks, S3 notifications, SQS mappings)
through ``LambdaFunction._invoke_lambda``, which normally starts a Docker container. ``install()`` patches that one
method to run the handler in one of the function's sandboxes instead: worker processes (``modelrun_local.sandbox``)
that Lambda would call execution environments, started on demand up to the function's reserved concurrency (or
``LOCAL_SANDBOX_CAP``), each serving one invocation at a time, stopped after ``IDLE_TIMEOUT_S`` unused. A handler
exception comes back as a function error whose ``errorType`` is the exception's class name, and a sandbox that timed
out, died or ran out of memory as Lambda's ``Sandbox.Timedout``, ``Runtime.ExitError`` or ``Runtime.OutOfMemory``, so
the state machine's ``Retry``/``Catch`` match them by name as on AWS.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import uuid
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelrun_local import LOGGER, patches
from modelrun_local.sandbox import InitFailed, SandboxDied, SandboxProcess, SandboxSpec

log = logging.getLogger(LOGGER)

# Sandboxes per function where the template reserves no concurrency: two per core keeps every core busy while some
# sandboxes wait on the local endpoint, and at least four lets a batch's chunks run four at once on a small machine
# (each sandbox is a process of 100-400 MB, and its cold start costs about a second of CPU).
LOCAL_SANDBOX_CAP = max(4, 2 * (os.cpu_count() or 1))
# Lambda keeps an unused environment for minutes; so does local mode, then gives its memory back.
IDLE_TIMEOUT_S = 300.0
# What Lambda gives a function: one vCPU per 1,769 MB of memory, up to six (modelrun.models.onnx, which local code
# does not import).
LAMBDA_MB_PER_VCPU = 1769
LAMBDA_MAX_VCPUS = 6


def sandbox_threads(memory_mb: int, max_sandboxes: int, cpus: int | None = None) -> int:
    """The ONNX Runtime intra-op threads each of a function's sandboxes gets (``INTRA_OP_THREADS``).

    On Lambda each execution environment has vCPUs of its own (one per 1,769 MB); here a function's sandboxes are
    processes sharing this machine's cores, up to ``max_sandboxes`` of them at once, and ONNX Runtime's threads
    spin while they wait for each other, so more threads than cores burn CPU for nothing (four sandboxes of two
    threads on two cores ran ``session.run`` 11 % slower than four of one thread). Each gets the vCPUs its memory
    size buys on Lambda, but no more than its share of the cores when all its sandboxes run: at least one.
    """
    cores = cpus if cpus is not None else (os.cpu_count() or 1)
    vcpus = min(max(-(-memory_mb // LAMBDA_MB_PER_VCPU), 1), LAMBDA_MAX_VCPUS)
    return max(1, min(vcpus, cores // max(1, max_sandboxes)))


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
    max_sandboxes: int = LOCAL_SANDBOX_CAP
    idle_timeout_s: float = IDLE_TIMEOUT_S
    # What happened to this function's invocations (tests and benchmarks read these).
    invocations: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    _idle: list[SandboxProcess] = field(default_factory=list)
    _live: int = 0  # sandboxes started and not stopped, bounded by max_sandboxes
    _numbered: int = 0
    _lock: threading.Condition = field(default_factory=threading.Condition)
    closed: bool = False  # the stack stopped: sandboxes are stopped as their invocations end

    @property
    def sandboxes(self) -> int:
        """How many sandboxes the function has now, busy or idle."""
        return self._live

    def _acquire(self) -> SandboxProcess:
        with self._lock:
            while not self._idle and self._live >= self.max_sandboxes:
                self._lock.wait()
            if self._idle:
                return self._idle.pop()
            self._live += 1
            self._numbered += 1
            number, live = self._numbered, self._live
        spec = SandboxSpec(self.code_dir, self.handler, dict(self.environment), self.timeout, self.memory_mb)
        try:
            sandbox = SandboxProcess(spec, number)
        except BaseException:
            self._forget(None)
            raise
        self._log_count(live)
        return sandbox

    def _release(self, sandbox: SandboxProcess) -> None:
        with self._lock:
            if not self.closed:
                sandbox.idle_since = time.monotonic()
                self._idle.append(sandbox)
                self._lock.notify()
                return
        self._forget(sandbox)

    def _forget(self, sandbox: SandboxProcess | None) -> None:
        """A sandbox that will never serve again: stopped, and its slot free for a new one."""
        if sandbox is not None:
            sandbox.stop()
        with self._lock:
            self._live -= 1
            live = self._live
            self._lock.notify()
        self._log_count(live)

    def _log_count(self, live: int) -> None:
        """The line ``modelrun-local`` shows when a function's count of sandboxes changes (the count it changed to)."""
        log.info("sandboxes %s: %d", self.logical_id, live)

    def _count_error(self, error_type: str) -> None:
        with self._lock:
            self.errors[error_type] += 1

    def invoke(self, event: Any) -> Invocation:
        """Run one invocation on an idle (or new) sandbox, honouring the function's timeout and memory size."""
        sandbox = self._acquire()
        with self._lock:
            self.invocations += 1
        started = time.perf_counter()
        request = {
            "event": event,
            "context": {
                "function_name": self.name,
                "memory_limit_in_mb": self.memory_mb,
                "invoked_function_arn": self.arn,
                "aws_request_id": str(uuid.uuid4()),
                "log_group_name": f"/aws/lambda/{self.name}",
            },
        }
        cold = not sandbox.ready
        try:
            reply = sandbox.invoke(request, time.monotonic() + self.timeout)
        except (InitFailed, SandboxDied) as failure:
            self._forget(sandbox)
            duration_ms = (time.perf_counter() - started) * 1000
            if isinstance(failure, InitFailed):
                payload = failure.error
            else:
                payload = error_payload(failure.error_type, str(failure))
            self._count_error(payload["errorType"])
            log.error("%s failed (%s): %s", self.logical_id, payload["errorType"], payload["errorMessage"])
            return Invocation(payload, payload["errorType"], duration_ms)
        except BaseException:
            self._forget(sandbox)
            raise
        if cold:
            log.info("cold start %s sandbox %d in %.0f ms", self.logical_id, sandbox.number, sandbox.init_ms)
        self._release(sandbox)
        duration_ms = (time.perf_counter() - started) * 1000
        if "error" in reply:
            error = reply["error"]
            self._count_error(error["errorType"])
            log.error("%s failed (%s): %s", self.logical_id, error["errorType"], error["errorMessage"])
            return Invocation(error, error["errorType"], duration_ms)
        return Invocation(reply.get("payload"), None, duration_ms)

    def close(self) -> None:
        """Stop every sandbox now idle, and each busy one when its invocation ends."""
        self.closed = True
        self.stop_idle(0)

    def stop_idle(self, older_than_s: float | None = None) -> int:
        """Stop the sandboxes unused for ``older_than_s`` (``idle_timeout_s`` by default; 0: every idle one)."""
        limit = self.idle_timeout_s if older_than_s is None else older_than_s
        now = time.monotonic()
        with self._lock:
            stale = [sandbox for sandbox in self._idle if now - sandbox.idle_since >= limit]
            self._idle = [sandbox for sandbox in self._idle if sandbox not in stale]
        for sandbox in stale:
            self._forget(sandbox)
        return len(stale)


class Dispatcher:
    """Maps moto's function names to local functions and patches moto's invoke path to use them."""

    def __init__(self) -> None:
        self.functions: dict[str, LocalFunction] = {}
        self._stopping = threading.Event()
        self._reaper: threading.Thread | None = None

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
        if self._reaper is None:
            self._reaper = threading.Thread(target=self._stop_idle_sandboxes, name="sandbox-reaper", daemon=True)
            self._reaper.start()

    def _stop_idle_sandboxes(self) -> None:
        while not self._stopping.wait(min(10.0, IDLE_TIMEOUT_S / 4)):
            for function in list(self.functions.values()):
                function.stop_idle()

    def stop(self) -> None:
        """Stop every idle sandbox; one still serving is stopped when its invocation ends (its pipe closes)."""
        self._stopping.set()
        for function in self.functions.values():
            function.close()


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
