"""Lambda execution environments as worker processes: one process per warm sandbox.

On Lambda every execution environment is a process (in a micro-VM) of its own. Here too: a sandbox is a Python
process started for its function (``subprocess``, so spawned with a fresh interpreter, never forked from this
threaded one) that runs ``modelrun_local.worker``. Its environment is exactly the function's, its working directory
the function's code folder; it imports the handler once (its cold start) and serves one invocation at a time over a
pair of pipes, events and results as JSON. Its AWS calls go to the local AWS endpoint through the SDK's own settings
(``AWS_ENDPOINT_URL`` and the stack's key pair), so the handler is the one deployed to AWS, unchanged.

What Lambda does to an environment, this module does to the process:

- at the function's timeout it is killed, and the invocation fails with ``Sandbox.Timedout``;
- if it exits or is killed while serving (``os._exit``, a segfault in a native decoder), the invocation fails with
  ``Runtime.ExitError``, naming the exit status or the signal;
- if its resident memory passes the function's ``MemorySize`` it is killed, and the invocation fails with
  ``Runtime.OutOfMemory``. Memory is read from ``/proc`` every ``MEMORY_POLL_S`` while an invocation runs, so a
  process that allocates very fast may pass the limit by what it allocates in that time before it is stopped.

A sandbox that failed in any of these ways is never reused: the next invocation gets a fresh one (a cold start).
"""

from __future__ import annotations

import contextlib
import logging
import os
import selectors
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import modelrun
import modelrun_local
from modelrun_local import LOGGER
from modelrun_local.worker import read_message, write_message

log = logging.getLogger(LOGGER)

MEMORY_POLL_S = 0.05
PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")
# Where this runtime's own packages are imported from: the workers import the same code (and modelrun from where the
# runtime layer would put it on Lambda, /opt/python), whichever checkout or installation this process runs.
PACKAGE_PATHS = tuple(dict.fromkeys(str(Path(package.__path__[0]).parent) for package in (modelrun_local, modelrun)))


class SandboxDied(Exception):
    """The sandbox's process ended or was stopped: ``error_type`` and ``message`` are what Lambda reports."""

    def __init__(self, error_type: str, message: str) -> None:
        super().__init__(message)
        self.error_type = error_type


class InitFailed(Exception):
    """The handler's module raised while it was imported: ``error`` is the function error to return."""

    def __init__(self, error: dict[str, Any]) -> None:
        super().__init__(error.get("errorMessage", ""))
        self.error = error


@dataclass(frozen=True)
class SandboxSpec:
    """What a function's sandboxes are started with."""

    code_dir: Path
    handler: str
    environment: Mapping[str, str]
    timeout_s: float
    memory_mb: int


def exit_message(returncode: int) -> str:
    """Lambda's words for a runtime that ended: ``exit status 3``, ``signal: segmentation fault``."""
    if returncode < 0:
        name = signal.strsignal(-returncode) or f"signal {-returncode}"
        return f"Runtime exited with error: signal: {name.lower()}"
    return f"Runtime exited with error: exit status {returncode}"


class _LineHandler(logging.Handler):
    """Writes a sandbox's line as it is to this process's own standard output (standard error from WARNING): the
    streams it started with, as a process of its own writes to them, never whatever replaced ``sys.stdout`` since
    (a CLI under test reading its own output)."""

    def emit(self, record: logging.LogRecord) -> None:
        stream = sys.__stderr__ if record.levelno >= logging.WARNING else sys.__stdout__
        if stream is None:
            return
        stream.write(record.getMessage() + "\n")
        stream.flush()


# Every line a sandbox writes is a record of ``modelrun_local.functions.<function name>``, written as it is: the
# console shows the functions' records as CloudWatch would, and a test (or an embedding program) can take one
# function's lines from the logging module.
output_log = logging.getLogger(f"{LOGGER}.functions")
output_log.setLevel(logging.INFO)
output_log.propagate = False
output_log.addHandler(_LineHandler())


def relay_lines(source: IO[bytes] | None, logger: logging.Logger, level: int) -> None:
    """Hand a sandbox's output, line by line, to ``logger`` at ``level`` until the stream closes."""
    if source is None:
        return
    with source:
        for line in iter(source.readline, b""):
            logger.log(level, "%s", line.decode("utf-8", errors="replace").rstrip("\n"))


class SandboxProcess:
    """One execution environment: a worker process and the two pipes to it. Used by one invocation at a time."""

    def __init__(self, spec: SandboxSpec, number: int) -> None:
        self.spec = spec
        self.number = number
        self.ready = False
        self.stopped = False
        self.init_ms = 0.0
        self.idle_since = time.monotonic()
        request_read, request_write = os.pipe()
        reply_read, reply_write = os.pipe()
        environment = {
            **spec.environment,
            "LAMBDA_TASK_ROOT": str(spec.code_dir),
            "PYTHONPATH": os.pathsep.join(PACKAGE_PATHS),
            # The function's log records reach the console as they are written, as they reach CloudWatch.
            "PYTHONUNBUFFERED": "1",
            # A UTF-8 locale, as Lambda sets one (without it Python coerces the C locale and adds LC_CTYPE itself).
            "LANG": "C.UTF-8",
            # Nothing from the user's own AWS configuration (a profile's region or endpoint) applies in a sandbox.
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        }
        try:
            command = [sys.executable, "-m", "modelrun_local.worker", str(spec.code_dir), spec.handler]
            # The command is this interpreter and the template's own handler: nothing from a request.
            self.process = subprocess.Popen(  # noqa: S603
                [*command, str(request_read), str(reply_write)],
                cwd=spec.code_dir,
                env=environment,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                pass_fds=(request_read, reply_write),
                # Its own process group: Ctrl-C in the console reaches the runtime, which stops the sandboxes itself.
                start_new_session=True,
            )
        finally:
            os.close(request_read)
            os.close(reply_write)
        function_log = output_log.getChild(spec.environment.get("AWS_LAMBDA_FUNCTION_NAME", "function"))
        for source, level in ((self.process.stdout, logging.INFO), (self.process.stderr, logging.WARNING)):
            relay = threading.Thread(
                target=relay_lines, args=(source, function_log, level), name=f"sandbox-{number}-output", daemon=True
            )
            relay.start()
        self._requests: IO[bytes] = os.fdopen(request_write, "wb")
        self._replies: IO[bytes] = os.fdopen(reply_read, "rb")
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._replies, selectors.EVENT_READ)

    @property
    def pid(self) -> int:
        return self.process.pid

    def rss_bytes(self) -> int:
        try:
            with open(f"/proc/{self.pid}/statm", "rb") as statm:
                return int(statm.read().split()[1]) * PAGE_BYTES
        except (OSError, IndexError, ValueError):
            return 0

    def invoke(self, request: dict[str, Any], deadline: float) -> dict[str, Any]:
        """Send one invocation and wait for its reply (a cold start first, on a new sandbox).

        Returns:
            ``{"payload": ...}`` or ``{"error": {...}}`` (a handler exception, as Lambda shapes it).

        Raises:
            InitFailed: the handler's module failed to import (the process has ended).
            SandboxDied: timeout, exit, signal or memory: the process is gone, ``stop()`` has been called.
        """
        if not self.ready:
            hello = self._receive(deadline)
            if "init_error" in hello:
                self.stop()
                raise InitFailed(hello["init_error"])
            self.ready = True
            self.init_ms = float(hello["init_ms"])
        request = {**request, "remaining_ms": max(0, int((deadline - time.monotonic()) * 1000))}
        with contextlib.suppress(OSError):  # the worker is gone: _receive reports how it ended
            write_message(self._requests, request)
        reply: dict[str, Any] = self._receive(deadline)
        return reply

    def _receive(self, deadline: float) -> dict[str, Any]:
        limit = self.spec.memory_mb * 1024 * 1024
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.stop()
                raise SandboxDied("Sandbox.Timedout", f"Task timed out after {self.spec.timeout_s:.2f} seconds")
            if self._selector.select(min(remaining, MEMORY_POLL_S)):
                message = read_message(self._replies)
                if message is not None:
                    return dict(message)
                # The pipe closed: the process ended (or is ending) mid-invocation.
                returncode = self._wait_exit()
                raise SandboxDied("Runtime.ExitError", exit_message(returncode))
            used = self.rss_bytes()
            if used > limit:
                self.stop()
                raise SandboxDied(
                    "Runtime.OutOfMemory",
                    f"Runtime exited with error: out of memory ({used // 2**20} MB used of {self.spec.memory_mb} MB)",
                )

    def _wait_exit(self) -> int:
        try:
            return self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:  # closed its pipe but lives on: it is useless, stop it
            self.process.kill()
            return self.process.wait()

    def stop(self) -> None:
        """Kill the process (idempotent) and reap it."""
        if self.stopped:
            return
        self.stopped = True
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        for stream in (self._requests, self._replies):
            with contextlib.suppress(OSError):
                stream.close()
        self._selector.close()
