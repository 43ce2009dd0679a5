"""The program a Lambda sandbox runs: ``python -m modelrun_local.worker CODE_DIR HANDLER REQUEST_FD REPLY_FD``.

``modelrun_local.sandbox`` starts one per warm execution environment, with the function's environment as the
process's own and the code folder as its working directory (Lambda's ``/var/task``). The worker imports the handler
module once (the cold start) and says so, then serves one invocation at a time: it reads an event and what the
context needs on ``REQUEST_FD``, calls the handler, and writes the result or the function error on ``REPLY_FD``.
Messages are JSON, each behind an 8-byte big-endian length. stdout and stderr are pipes the runtime
relays line by line (``modelrun_local.sandbox.relay_lines``): the function's log records reach the console as they
would reach CloudWatch.

It keeps no state of its own between invocations beyond what the handler's module keeps, and exits when the runtime
closes the request pipe (or dies).
"""

from __future__ import annotations

import importlib
import json
import os
import struct
import sys
import time
import traceback
from dataclasses import dataclass
from typing import IO, Any

HEADER = struct.Struct(">Q")


def write_message(stream: IO[bytes], message: Any) -> None:
    """One framed JSON message; raises ``TypeError``/``ValueError`` for what JSON cannot hold (nothing is written)."""
    body = json.dumps(message, allow_nan=False).encode()
    stream.write(HEADER.pack(len(body)) + body)
    stream.flush()


def read_message(stream: IO[bytes]) -> Any:
    """The next framed message, or ``None`` when the other side has closed its end."""
    header = stream.read(HEADER.size)
    if len(header) < HEADER.size:
        return None
    (size,) = HEADER.unpack(header)
    body = stream.read(size)
    if len(body) < size:
        return None
    return json.loads(body)


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


def function_error(error_type: str, exc: BaseException) -> dict[str, Any]:
    """A handler's exception as Lambda's Python runtime reports it."""
    trace = [line.rstrip() for line in traceback.format_exception(exc)]
    return {"errorMessage": str(exc), "errorType": error_type, "requestId": "", "stackTrace": trace}


def cold_start(handler: str) -> Any:
    """Import the handler's module as Lambda's runtime does (``app.lambda_handler``: ``app`` from the task root)."""
    module_name, _, attribute = handler.rpartition(".")
    return getattr(importlib.import_module(module_name), attribute)


def invoke(handler: Any, request: dict[str, Any]) -> dict[str, Any]:
    context = LambdaContext(deadline=time.monotonic() + request["remaining_ms"] / 1000, **request["context"])
    try:
        return {"payload": handler(request["event"], context)}
    except Exception as exc:  # a handler error becomes a function error, as on Lambda
        return {"error": function_error(type(exc).__name__, exc)}


def serve(code_dir: str, handler_name: str, requests: IO[bytes], replies: IO[bytes]) -> int:
    # The task root first on sys.path, as Lambda puts /var/task.
    sys.path.insert(0, code_dir)
    started = time.perf_counter()
    try:
        handler = cold_start(handler_name)
    except Exception as exc:
        error_type = "Runtime.ImportModuleError" if isinstance(exc, ImportError) else type(exc).__name__
        write_message(replies, {"init_error": function_error(error_type, exc)})
        return 1
    write_message(replies, {"ready": True, "init_ms": (time.perf_counter() - started) * 1000})
    while (request := read_message(requests)) is not None:
        reply = invoke(handler, request)
        try:
            write_message(replies, reply)
        except (TypeError, ValueError) as exc:
            # What Lambda's runtime answers for a result it cannot serialise.
            write_message(replies, {"error": function_error("Runtime.MarshalError", exc)})
    return 0


def main(argv: list[str]) -> int:
    code_dir, handler_name, request_fd, reply_fd = argv
    with os.fdopen(int(request_fd), "rb") as requests, os.fdopen(int(reply_fd), "wb") as replies:
        return serve(code_dir, handler_name, requests, replies)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
