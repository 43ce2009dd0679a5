"""The thread both event-source pollers (SQS, DynamoDB streams) run: poll, and idle when there was nothing."""

from __future__ import annotations

import logging
import threading
from typing import ClassVar

from modelrun_local import LOGGER
from modelrun_local.lambdas import LocalFunction

log = logging.getLogger(LOGGER)


class PollingLoop:
    """Calls ``poll_once`` on a daemon thread until ``stop``; waits ``idle_wait_s`` after an empty poll.

    A mixin for the pollers' dataclasses, which declare the attributes it uses."""

    kind: ClassVar[str]
    function: LocalFunction
    idle_wait_s: float
    _stop: threading.Event
    _thread: threading.Thread | None

    def poll_once(self) -> int:
        raise NotImplementedError

    def _start_thread(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"{self.kind}-{self.function.logical_id}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                handled = self.poll_once()
            except Exception:
                log.exception("%s poller for %s failed; polling on", self.kind, self.function.logical_id)
                handled = 0
            if not handled:
                self._stop.wait(self.idle_wait_s)
