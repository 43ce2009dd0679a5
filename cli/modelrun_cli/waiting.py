"""Waiting for a batch: poll GET /batches/{id} with a growing interval until it ends or the deadline passes, or
follow its live progress over the WebSocket API (``watch_batch``), polling when that is not possible."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from websocket import (
    ABNF,
    WebSocketBadStatusException,
    WebSocketConnectionClosedException,
    WebSocketException,
    WebSocketTimeoutException,
    create_connection,
)

from modelrun_cli.errors import ApiError

TERMINAL = frozenset({"COMPLETED", "COMPLETED_WITH_ERRORS", "FAILED"})
SUCCEEDED = frozenset({"COMPLETED", "COMPLETED_WITH_ERRORS"})
FIRST_INTERVAL_S = 0.5
MAX_INTERVAL_S = 5.0
GROWTH = 1.5
DEFAULT_TIMEOUT_S = 3600.0


def poll_intervals(
    first: float = FIRST_INTERVAL_S, maximum: float = MAX_INTERVAL_S, growth: float = GROWTH
) -> Iterator[float]:
    """0.5, 0.75, 1.125, ... up to 5 seconds, then 5 seconds for ever."""
    interval = first
    while True:
        yield interval
        interval = min(interval * growth, maximum)


def progress_key(job: dict[str, Any]) -> tuple[Any, ...]:
    """What has to change for a new progress line: the status or a count."""
    counts = job.get("counts") or {}
    return job.get("status"), counts.get("predicted"), counts.get("failed"), counts.get("pending")


def transient(error: ApiError) -> bool:
    """Worth polling on: no answer, throttling, or the gateway/function failing for a moment."""
    return error.status == 0 or error.status == 429 or error.status >= 500


class BatchReader(Protocol):
    """What waiting needs of the API client: GET /batches/{id}."""

    def batch(self, batch_id: str) -> dict[str, Any]: ...


@dataclass
class WaitOutcome:
    job: dict[str, Any]
    finished: bool  # False: the deadline passed first

    @property
    def succeeded(self) -> bool:
        return self.finished and self.job.get("status") in SUCCEEDED


def wait_for_batch(
    client: BatchReader,
    batch_id: str,
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    on_progress: Callable[[dict[str, Any], float], None] | None = None,
    on_retry: Callable[[ApiError], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> WaitOutcome:
    """Poll until the batch is terminal or ``timeout_s`` has passed; ``on_progress`` hears of every change.

    A transient error (no answer, 429, 5xx) while polling is reported to ``on_retry`` and polled through until
    the deadline; any other error (unknown batch, bad key) ends the wait at once.
    """
    started = clock()
    deadline = started + timeout_s
    intervals = poll_intervals()
    job: dict[str, Any] | None = None
    seen: tuple[Any, ...] | None = None
    while True:
        try:
            job = client.batch(batch_id)
        except ApiError as error:
            if not transient(error) or clock() >= deadline:
                raise
            if on_retry is not None:
                on_retry(error)
        else:
            key = progress_key(job)
            if key != seen:
                seen = key
                if on_progress is not None:
                    on_progress(job, clock() - started)
            if job.get("status") in TERMINAL:
                return WaitOutcome(job, finished=True)
        remaining = deadline - clock()
        if remaining <= 0:
            if job is None:
                raise ApiError(0, "timeout", f"no answer about batch {batch_id} within {timeout_s:g} s")
            return WaitOutcome(job, finished=False)
        sleep(min(next(intervals), remaining))


# -- live progress over the WebSocket API ------------------------------------------------------------------------
LIVE_CONNECT_TIMEOUT_S = 10.0
# With no message for this long, GET /batches/{id} checks whether the batch ended (a lost or late ``completed``).
LIVE_SILENCE_S = 15.0
# Progress on a rate measured over less than this is noise, so polling shows no rate or ETA before it.
MIN_RATE_WINDOW_S = 1.0

Connect = Callable[..., Any]  # websocket.create_connection, or a stand-in


class LiveUnavailable(Exception):
    """The WebSocket could not be used (no connection, refused, dropped, or an error message): why, in words."""


def ws_url_with_key(url: str, api_key: str) -> str:
    """The WebSocket URL with ``api_key`` in its query, as the API accepts it (unless the URL carries one)."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    if not any(name == "api_key" for name, _ in query):
        query.append(("api_key", api_key))
    return urlunsplit(parts._replace(query=urlencode(query)))


def progress_of(job: dict[str, Any], *, rate: float | None = None, eta_s: float | None = None) -> dict[str, Any]:
    """A job document (GET /batches/{id}) in the shape of a WebSocket progress message."""
    terminal = job.get("status") in TERMINAL
    return {
        "type": "completed" if terminal else "progress",
        "batch_id": job.get("batch_id"),
        "status": job.get("status"),
        "attempt": job.get("attempt"),
        "total": job.get("total"),
        "counts": dict(job.get("counts") or {}),
        "percent": job.get("percent"),
        "rate": rate,
        "eta_s": 0.0 if terminal else eta_s,
    }


class RateMeter:
    """Images per second and the time left, from the counts seen while polling (the WebSocket sends its own)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.first: tuple[float, int] | None = None

    def measure(self, job: dict[str, Any]) -> tuple[float | None, float | None]:
        counts = job.get("counts") or {}
        done = int(counts.get("predicted", 0)) + int(counts.get("failed", 0))
        now = self.clock()
        if self.first is None or done < self.first[1]:  # a new attempt starts its count again
            self.first = (now, done)
            return None, None
        elapsed = now - self.first[0]
        if elapsed < MIN_RATE_WINDOW_S or done == self.first[1]:
            return None, None
        rate = (done - self.first[1]) / elapsed
        return rate, int(counts.get("pending", 0)) / rate


def _describe(exc: BaseException) -> str:
    if isinstance(exc, WebSocketBadStatusException):
        return f"the WebSocket API refused the connection (HTTP {exc.status_code})"
    if isinstance(exc, WebSocketTimeoutException):
        return "the WebSocket API did not answer in time"
    if isinstance(exc, WebSocketConnectionClosedException):
        return "the WebSocket connection closed"
    if isinstance(exc, ConnectionRefusedError):
        return "nothing answers at the WebSocket URL"
    return f"the WebSocket connection failed: {type(exc).__name__}: {exc}"


def follow_live(
    batch_id: str,
    *,
    ws_url: str,
    api_key: str,
    deadline: float,
    on_message: Callable[[dict[str, Any]], None],
    check: Callable[[], bool],
    clock: Callable[[], float] = time.monotonic,
    connect: Connect = create_connection,
) -> bool:
    """Subscribe to the batch and pass on its progress until its ``completed`` message (True) or the deadline
    (False). ``check`` is asked whether the batch ended after each silence of LIVE_SILENCE_S. Raises
    LiveUnavailable when the WebSocket cannot be used, so the caller can poll instead."""
    try:
        ws = connect(
            ws_url_with_key(ws_url, api_key),
            timeout=LIVE_CONNECT_TIMEOUT_S,
            header=[f"x-api-key: {api_key}"],
        )
    except (WebSocketException, OSError) as exc:
        raise LiveUnavailable(_describe(exc)) from exc
    try:
        ws.send(json.dumps({"action": "subscribe", "batch_id": batch_id}))
        while True:
            remaining = deadline - clock()
            if remaining <= 0:
                return False
            ws.settimeout(min(remaining, LIVE_SILENCE_S))
            try:
                opcode, raw = ws.recv_data()
            except WebSocketTimeoutException:
                if check():
                    return True
                continue
            if opcode == ABNF.OPCODE_CLOSE:
                raise LiveUnavailable("the server closed the WebSocket connection")
            message = _message(raw)
            if message is None or message.get("batch_id") not in (None, batch_id):
                continue
            kind = message.get("type")
            if kind == "error":
                raise LiveUnavailable(f"the WebSocket API answered {message.get('code')}: {message.get('message')}")
            if kind in ("progress", "completed"):
                on_message(message)
            if kind == "completed":
                return True
    except (WebSocketException, OSError) as exc:
        raise LiveUnavailable(_describe(exc)) from exc
    finally:
        with contextlib.suppress(WebSocketException, OSError):
            ws.close(timeout=1)
        ws.shutdown()  # the socket itself, even when the closing handshake failed


def _message(raw: str | bytes) -> dict[str, Any] | None:
    try:
        message = json.loads(raw)
    except ValueError:
        return None
    return message if isinstance(message, dict) else None


def watch_batch(
    client: BatchReader,
    batch_id: str,
    *,
    ws_url: str | None,
    api_key: str,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    on_progress: Callable[[dict[str, Any]], None],
    on_note: Callable[[str], None],
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    connect: Connect = create_connection,
) -> WaitOutcome:
    """Follow a batch to its end with live progress from the WebSocket API, or by polling GET /batches/{id} when
    no WebSocket URL is known or the connection fails (``on_note`` hears why, once).

    ``on_progress`` gets progress-message-shaped dicts either way. The outcome's job is GET /batches/{id} at the
    end. An unknown batch (or any non-transient API error) ends the watch at once with ApiError.
    """
    deadline = clock() + timeout_s
    job = client.batch(batch_id)
    on_progress(progress_of(job))
    if job.get("status") in TERMINAL:
        return WaitOutcome(job, finished=True)
    if ws_url:

        def ended() -> bool:
            try:
                return client.batch(batch_id).get("status") in TERMINAL
            except ApiError as error:
                if transient(error):
                    return False
                raise

        try:
            finished = follow_live(
                batch_id,
                ws_url=ws_url,
                api_key=api_key,
                deadline=deadline,
                on_message=on_progress,
                check=ended,
                clock=clock,
                connect=connect,
            )
        except LiveUnavailable as reason:
            on_note(f"live progress unavailable ({reason}): polling GET /batches/{batch_id} instead")
        else:
            job = client.batch(batch_id)
            return WaitOutcome(job, finished=finished and job.get("status") in TERMINAL)
    else:
        on_note(
            "no WebSocket URL known (--ws-url, MODELRUN_WS_URL or the stack's WebSocketUrl): "
            f"polling GET /batches/{batch_id} instead"
        )
    meter = RateMeter(clock)

    def polled(document: dict[str, Any], _elapsed: float) -> None:
        rate, eta_s = meter.measure(document)
        on_progress(progress_of(document, rate=rate, eta_s=eta_s))

    return wait_for_batch(
        client,
        batch_id,
        timeout_s=max(deadline - clock(), 0.0),
        on_progress=polled,
        clock=clock,
        sleep=sleep,
    )
