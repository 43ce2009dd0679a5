"""Live batch progress: the WebSocket messages and the decisions about when to send them (pure, no I/O).

Client -> server: ``{"action": "subscribe" | "unsubscribe", "batch_id": "..."}``.
Server -> client (every message a JSON object with a ``type``):

- ``subscribed`` / ``unsubscribed``: the acknowledgement of an action, with the ``batch_id``;
- ``progress``: ``batch_id, status, attempt, total, counts {predicted, failed, pending}, percent, rate, eta_s,
  updated_at`` (``rate``: images per second since the job started; ``eta_s``: seconds left at that rate; either is
  null when it cannot be known yet);
- ``completed``: the same fields once the job is COMPLETED, COMPLETED_WITH_ERRORS or FAILED, plus
  ``links {results, errors}``; sent once per terminal status of each attempt;
- ``error``: ``code`` (``invalid_message``, ``unknown_action``, ``not_found``) and a ``message`` saying what to do.

Every message stays far below API Gateway's 128 KB WebSocket message limit: ``encode`` refuses one that does not.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import quote

from modelrun.batches.store import TERMINAL
from modelrun.errors import ModelrunError

MAX_MESSAGE_BYTES = 128 * 1024
# "A few progress messages per second per batch": at most one every half second (terminal messages always go).
PROGRESS_INTERVAL_MS = 500
ACTIONS = ("subscribe", "unsubscribe")
BATCH_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")


class InvalidMessage(ModelrunError):
    """A client message that is not a JSON object with an action and a well-formed batch id."""

    code = "invalid_message"
    status = 400


class UnknownAction(ModelrunError):
    code = "unknown_action"
    status = 400


@dataclass(frozen=True)
class Request:
    """A client's subscribe or unsubscribe request."""

    action: str
    batch_id: str


def parse_request(body: str | None) -> Request:
    """The request a client message makes, or the error that says what to send instead."""
    example = '{"action": "subscribe", "batch_id": "<id from POST /batches>"}'
    try:
        parsed = json.loads(body or "")
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise InvalidMessage(f"the message is not JSON: send {example}") from None
    if not isinstance(parsed, dict) or "action" not in parsed:
        raise InvalidMessage(f'the message must be a JSON object with an "action": send {example}')
    action = parsed["action"]
    if action not in ACTIONS:
        shown = action if isinstance(action, str) and len(action) <= 64 else "(not a short string)"
        raise UnknownAction(f"unknown action {shown!r}: use one of {', '.join(ACTIONS)}")
    batch_id = parsed.get("batch_id")
    if not isinstance(batch_id, str) or not BATCH_ID.match(batch_id):
        raise InvalidMessage(f'"batch_id" must be the id POST /batches returned: send {example}')
    return Request(action=action, batch_id=batch_id)


# -- figures --------------------------------------------------------------------------------------------------
def _moment(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def rate_and_eta(job: dict[str, Any]) -> tuple[float | None, float | None]:
    """Images per second since ``started_at`` (as of the last count update, or the finish), and seconds left.

    Both are None while they cannot be known: before the job starts, or when no time has passed yet.
    """
    total, done = _counts(job)
    pending = max(total - done, 0)
    started = _moment(job.get("started_at"))
    finished = _moment(job.get("finished_at")) if job.get("status") in TERMINAL else None
    as_of = finished or _moment(job.get("updated_at"))
    rate: float | None = None
    if started is not None and as_of is not None:
        elapsed = (as_of - started).total_seconds()
        if elapsed > 0:
            rate = round(done / elapsed, 2)
    if pending == 0:
        return rate, 0.0
    if rate:
        return rate, round(pending / rate, 1)
    return rate, None


def _counts(job: dict[str, Any]) -> tuple[int, int]:
    total = int(job.get("total", 0))
    return total, int(job.get("predicted", 0)) + int(job.get("failed", 0))


def links(api_url: str, batch_id: str) -> dict[str, str]:
    """Where a client reads a finished batch's results and its error report (REST API routes, absolute URLs, as the
    job document's links)."""
    base = f"{api_url.rstrip('/')}/batches/{quote(batch_id, safe='')}"
    return {"results": f"{base}/results", "errors": f"{base}/errors"}


# -- messages -------------------------------------------------------------------------------------------------
def is_terminal(job: dict[str, Any]) -> bool:
    return job.get("status") in TERMINAL


def progress_message(job: dict[str, Any]) -> dict[str, Any]:
    """A job's current figures (a plain job record, as ``JobStore.get`` or a stream image gives it)."""
    total, done = _counts(job)
    predicted, failed = int(job.get("predicted", 0)), int(job.get("failed", 0))
    rate, eta = rate_and_eta(job)
    return {
        "type": "progress",
        "batch_id": job["batch_id"],
        "status": job.get("status"),
        "attempt": int(job.get("attempt", 1)),
        "total": total,
        "counts": {"predicted": predicted, "failed": failed, "pending": max(total - done, 0)},
        "percent": round(100.0 * done / total, 2) if total else 100.0,
        "rate": rate,
        "eta_s": eta,
        "updated_at": job.get("updated_at"),
    }


def completed_message(job: dict[str, Any], api_url: str) -> dict[str, Any]:
    """The final figures of a terminal job, with links to its results."""
    if not is_terminal(job):
        raise ValueError(f"batch {job.get('batch_id')} is {job.get('status')}, not terminal")
    return {**progress_message(job), "type": "completed", "links": links(api_url, job["batch_id"])}


def state_message(job: dict[str, Any], api_url: str) -> dict[str, Any]:
    """What a new subscriber gets at once: the progress, or the completed message of a terminal job."""
    return completed_message(job, api_url) if is_terminal(job) else progress_message(job)


def subscribed_message(batch_id: str) -> dict[str, Any]:
    return {"type": "subscribed", "batch_id": batch_id}


def unsubscribed_message(batch_id: str) -> dict[str, Any]:
    return {"type": "unsubscribed", "batch_id": batch_id}


def error_message(error: ModelrunError) -> dict[str, Any]:
    return {"type": "error", "code": error.code, "message": error.message}


def encode(message: dict[str, Any]) -> bytes:
    """The message as sent: compact JSON, refused if it would exceed the WebSocket message limit."""
    data = json.dumps(message, separators=(",", ":"), default=str).encode("utf-8")
    if len(data) > MAX_MESSAGE_BYTES:
        raise ValueError(f"a {message.get('type')} message of {len(data)} bytes exceeds {MAX_MESSAGE_BYTES} bytes")
    return data


# -- when to send -----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class NotifyState:
    """What was last sent as progress for a batch: when, and for which status and attempt."""

    sent_at_ms: int
    status: str
    attempt: int


def progress_due(
    last: NotifyState | None, job: dict[str, Any], now_ms: int, interval_ms: int = PROGRESS_INTERVAL_MS
) -> bool:
    """Whether a progress message for this job may go now: a status or attempt change always may, otherwise at most
    one per ``interval_ms``. (Terminal jobs get a ``completed`` message instead, never throttled.)"""
    if is_terminal(job):
        return False
    if last is None:
        return True
    if last.status != job.get("status") or last.attempt != int(job.get("attempt", 1)):
        return True
    return now_ms - last.sent_at_ms >= interval_ms


@dataclass(frozen=True)
class Completion:
    """Which terminal outcome a completed message announces: one per attempt (and status) of a batch."""

    attempt: int
    status: str

    @classmethod
    def of(cls, job: dict[str, Any]) -> Completion:
        return cls(attempt=int(job.get("attempt", 1)), status=str(job.get("status")))


def latest_images(images: list[dict[str, Any]]) -> tuple[dict[str, dict[str, Any]], dict[str, list[dict[str, Any]]]]:
    """From a batch of job images in stream order: each batch's latest image, and every distinct terminal image of
    each batch (one per attempt and status, the latest of each), in order."""
    latest: dict[str, dict[str, Any]] = {}
    terminal: dict[str, dict[Completion, dict[str, Any]]] = {}
    for image in images:
        batch_id = image.get("batch_id")
        if not isinstance(batch_id, str):
            continue
        latest[batch_id] = image
        if is_terminal(image):
            terminal.setdefault(batch_id, {})[Completion.of(image)] = image
    return latest, {batch_id: list(found.values()) for batch_id, found in terminal.items()}
