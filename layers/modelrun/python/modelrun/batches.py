"""Batch prediction: submit a job, predict one chunk of it, and close it when every image has an outcome."""

from __future__ import annotations

import csv
import io
import json
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from aws_lambda_powertools import Logger

from modelrun.errors import Conflict, InvalidRequest, ModelrunError, UnknownModel
from modelrun.failures import as_transient, is_transient
from modelrun.faults import Faults
from modelrun.images.decode import Limits
from modelrun.inference import predict_arrays
from modelrun.jobs import (
    COMPLETED,
    COMPLETED_WITH_ERRORS,
    ERROR_FIELDS,
    FAILED,
    FAILED_OUTCOME,
    PREDICTED,
    RECOVERING,
    TERMINAL,
    JobStore,
    Outcome,
    error_entry,
    new_batch_id,
    now_iso,
    public_outcome,
)
from modelrun.manifest import (
    DEADLINE_CHECK_EVERY,
    ManifestSummary,
    file_keys,
    inline_keys,
    iter_keys_file,
    no_deadline,
    prefix_keys,
    read_chunk_items,
    until_deadline,
    write_manifest,
)
from modelrun.models.onnx import LoadedModel
from modelrun.models.registry import ModelRegistry
from modelrun.storage import ImageStore
from modelrun.transforms.pipeline import preprocess

logger = Logger(child=True)


@dataclass(frozen=True)
class BatchLimits:
    default_chunk_size: int = 100
    max_chunk_size: int = 500
    default_concurrency: int = 10
    max_concurrency: int = 1000
    max_images: int = 5_000_000


def _bounded_int(body: dict[str, Any], field_name: str, default: int, maximum: int) -> int:
    value = body.get(field_name, default)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= maximum:
        raise InvalidRequest(f'"{field_name}" must be an integer from 1 to {maximum}, got {value!r}')
    return value


@dataclass(frozen=True)
class BatchRequest:
    """A validated POST /batches body: which model, which images (one source), and how to split the work."""

    model: str | None
    version: str | None
    source: str
    value: Any
    chunk_size: int
    max_concurrency: int
    faults: dict[str, Any] | None = None

    SOURCES = ("images", "s3_prefix", "manifest")

    @classmethod
    def parse(cls, body: Any, limits: BatchLimits) -> BatchRequest:
        if not isinstance(body, dict):
            raise InvalidRequest("the request body must be a JSON object")
        unknown = sorted(set(body) - {"model", "version", "chunk_size", "max_concurrency", "faults", *cls.SOURCES})
        if unknown:
            raise InvalidRequest(f"unknown field(s): {', '.join(unknown)}")
        given = [name for name in cls.SOURCES if name in body]
        if len(given) != 1:
            raise InvalidRequest('send exactly one of "images" (a list of keys), "s3_prefix" or "manifest"')
        source = given[0]
        value = body[source]
        if source != "images" and (not isinstance(value, str) or not value.strip()):
            raise InvalidRequest(f'"{source}" must be a non-empty string')
        for name in ("model", "version"):
            if name in body and (not isinstance(body[name], str) or not body[name].strip()):
                raise InvalidRequest(f'"{name}" must be a non-empty string')
        return cls(
            model=body.get("model"),
            version=body.get("version"),
            source=source,
            value=value,
            chunk_size=_bounded_int(body, "chunk_size", limits.default_chunk_size, limits.max_chunk_size),
            max_concurrency=_bounded_int(body, "max_concurrency", limits.default_concurrency, limits.max_concurrency),
            faults=body.get("faults"),
        )


def resolve_version(registry: ModelRegistry, name: str, version: str | None) -> str:
    """The version a batch will use, fixed at submit time so every chunk runs the same model."""
    versions = registry.versions(name)  # raises UnknownModel naming what exists
    if version is None:
        return versions[-1]
    if version not in versions:
        raise UnknownModel(f"model {name!r} has no version {version!r}; available: {', '.join(versions)}")
    return version


@dataclass
class BatchSubmitter:
    store: JobStore
    s3: Any
    sfn: Any
    registry: ModelRegistry
    bucket: str
    state_machine_arn: str
    default_model: str
    limits: BatchLimits = field(default_factory=BatchLimits)
    allow_faults: bool = False
    # The time left of the invocation: handlers set their context's get_remaining_time_in_millis per invocation.
    remaining_ms: Callable[[], int] = no_deadline
    deadline_check_every: int = DEADLINE_CHECK_EVERY

    def keys(self, request: BatchRequest) -> Iterator[str]:
        """The request's keys; a prefix listing or a list file stops, refused, when the invocation runs short of
        time (an inline list is already in memory)."""
        if request.source == "images":
            return inline_keys(request.value)
        if request.source == "s3_prefix":
            keys = prefix_keys(self.s3, self.bucket, request.value)
        else:
            keys = file_keys(self.s3, self.bucket, request.value)
        return until_deadline(
            keys,
            self.remaining_ms,
            source=request.source,
            value=request.value,
            check_every=self.deadline_check_every,
        )

    def submit(self, request: BatchRequest) -> dict[str, Any]:
        """Write the batch's manifest, then register the job and start its execution (named by the batch id).

        A source that cannot be read in time is refused (``TooManyToList``) before anything is written."""
        model = request.model or self.default_model
        version = resolve_version(self.registry, model, request.version)
        faults = Faults.parse(request.faults, allowed=self.allow_faults)
        batch_id = new_batch_id()
        summary = write_manifest(
            self.s3,
            self.keys(request),
            bucket=self.bucket,
            batch_id=batch_id,
            chunk_size=request.chunk_size,
            max_images=self.limits.max_images,
        )
        self.store.create(
            {
                "batch_id": batch_id,
                "model": model,
                "version": version,
                "total": summary.total,
                "chunk_count": summary.chunks,
                "chunk_size": request.chunk_size,
                "max_concurrency": request.max_concurrency,
                "manifest_key": summary.key,
                "source": {request.source: request.value if request.source != "images" else "inline"},
                "keys_object": summary.keys_key,
                "attempt": 1,
                "faults": faults.to_dict(),
            }
        )
        execution_arn = start_execution(
            self.sfn,
            self.store,
            self.state_machine_arn,
            batch_id,
            model,
            version,
            summary,
            request.max_concurrency,
            1,
            faults,
        )
        logger.info("batch submitted", batch_id=batch_id, total=summary.total, chunks=summary.chunks, model=model)
        return {"batch_id": batch_id, "status": "QUEUED", "total": summary.total, "execution_arn": execution_arn}


def start_execution(
    sfn: Any,
    store: JobStore,
    state_machine_arn: str,
    batch_id: str,
    model: str,
    version: str,
    manifest: ManifestSummary,
    concurrency: int,
    attempt: int,
    faults: Faults,
) -> str:
    """Start the attempt's execution, named by the batch id (``-a<n>`` from the second attempt on).

    One that cannot start leaves the job RECOVERING (its files are written, nothing runs them), which
    POST /batches/{id}/retry accepts: the error is raised, as a transient one where it is."""
    execution_input = {
        "batch_id": batch_id,
        "model": model,
        "version": version,
        "bucket": manifest.bucket,
        "manifest": {"bucket": manifest.bucket, "key": manifest.key},
        "keys_object": manifest.keys_key,
        "max_concurrency": concurrency,
        "attempt": attempt,
        "faults": faults.to_dict(),
    }
    name = batch_id if attempt == 1 else f"{batch_id}-a{attempt}"
    try:
        started = sfn.start_execution(stateMachineArn=state_machine_arn, name=name, input=json.dumps(execution_input))
    except Exception as exc:
        store.update(batch_id, status=RECOVERING, execution_error=f"{type(exc).__name__}: {exc}")
        logger.exception("batch registered but its execution did not start", batch_id=batch_id, attempt=attempt)
        if is_transient(exc):
            raise as_transient(
                exc, f"starting attempt {attempt} of batch {batch_id}; start it with POST /batches/{batch_id}/retry"
            ) from exc
        raise
    arn: str = started["executionArn"]
    store.update(batch_id, execution_arn=arn)
    return arn


# -- one chunk ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Chunk:
    """One iteration of the Map: some items of a batch, with their image keys."""

    batch_id: str
    index: int
    items: list[tuple[int, str]]
    bucket: str
    model: str
    version: str
    attempt: int = 1
    faults: Faults = field(default_factory=Faults)

    @property
    def keys(self) -> list[str]:
        return [key for _, key in self.items]

    @classmethod
    def from_event(cls, event: dict[str, Any], s3: Any) -> Chunk:
        """The chunk a Map iteration (or a dead-letter message) describes, its keys read from the keys file."""
        chunk = event["chunk"]
        items = read_chunk_items(
            s3,
            event["bucket"],
            event["keys_object"],
            offset=int(chunk["offset"]),
            length=int(chunk["length"]),
            count=int(chunk["count"]),
            first_item=int(chunk["first_item"]),
        )
        return cls(
            batch_id=event["batch_id"],
            index=int(chunk["index"]),
            items=items,
            bucket=event["bucket"],
            model=event["model"],
            version=str(event["version"]),
            attempt=int(event.get("attempt", 1)),
            faults=Faults.from_event(event),
        )


@dataclass
class ChunkPredictor:
    """Decodes a chunk's images concurrently, runs batched inference, and records one outcome per image."""

    store: JobStore
    images: ImageStore
    registry: ModelRegistry
    limits: Limits
    pool: ThreadPoolExecutor

    def prepare(self, model: LoadedModel, bucket: str, key: str) -> np.ndarray | ModelrunError:
        """The model input for one image, or the permanent failure that image is (a bad image is an outcome)."""
        try:
            data = self.images.read(bucket, key, max_bytes=self.limits.max_bytes)
            return preprocess(data, model.spec, self.limits)
        except ModelrunError as exc:
            if exc.status >= 500:
                raise
            return exc
        except Exception as exc:
            if is_transient(exc):
                raise as_transient(exc, f"reading s3://{bucket}/{key}") from exc
            raise

    def run(self, chunk: Chunk, only: set[int] | None = None) -> dict[str, Any]:
        """Predict the chunk (or only the given items of it) and record each image's outcome once."""
        started = time.perf_counter()
        model = self.registry.get(chunk.model, chunk.version)
        items = chunk.items if only is None else [(item, key) for item, key in chunk.items if item in only]
        prepared = list(self.pool.map(lambda entry: self.prepare(model, chunk.bucket, entry[1]), items))
        good = [(entry, array) for entry, array in zip(items, prepared, strict=True) if isinstance(array, np.ndarray)]
        predictions = predict_arrays(model, [array for _, array in good]) if good else []
        outcomes = [
            Outcome(
                item=item,
                key=key,
                chunk=chunk.index,
                status=PREDICTED,
                attempt=chunk.attempt,
                label=prediction.label,
                score=prediction.score,
                top_k=prediction.top_k,
            )
            for ((item, key), _), prediction in zip(good, predictions, strict=True)
        ]
        failures = [
            failure_outcome(item, key, chunk, error)
            for (item, key), error in zip(items, prepared, strict=True)
            if isinstance(error, ModelrunError)
        ]
        for failure in failures:
            logger.info(
                "image failed",
                extra={
                    "batch_id": chunk.batch_id,
                    "key": failure.key,
                    "item": failure.item,
                    "chunk": chunk.index,
                    "attempt": chunk.attempt,
                    "code": failure.error_code,
                    "kind": "permanent",
                },
            )
        outcomes += failures
        try:
            deltas = list(self.pool.map(lambda outcome: self.store.record_outcome(chunk.batch_id, outcome), outcomes))
            predicted = sum(delta[0] for delta in deltas)
            failed = sum(delta[1] for delta in deltas)
            self.store.add_counts(chunk.batch_id, predicted=predicted, failed=failed)
        except Exception as exc:
            # Outcomes already written stay (the next try skips them); the counters are reconciled at close.
            if is_transient(exc):
                raise as_transient(exc, f"recording chunk {chunk.index} of {chunk.batch_id}") from exc
            raise
        summary = {
            "batch_id": chunk.batch_id,
            "chunk": chunk.index,
            "images": len(items),
            "predicted": sum(1 for outcome in outcomes if outcome.status == PREDICTED),
            "failed": sum(1 for outcome in outcomes if outcome.status == FAILED_OUTCOME),
            "newly_recorded": sum(1 for delta in deltas if delta != (0, 0)),
            "duration_ms": round((time.perf_counter() - started) * 1000, 1),
        }
        logger.info("chunk predicted", extra=summary)
        return summary


def failure_outcome(item: int, key: str, chunk: Chunk, error: ModelrunError, code: str | None = None) -> Outcome:
    return Outcome(
        item=item,
        key=key,
        chunk=chunk.index,
        status=FAILED_OUTCOME,
        attempt=chunk.attempt,
        error_code=code or error.code,
        error_message=error.message,
    )


# -- closing ---------------------------------------------------------------------------------------------------
def final_status(predicted: int, failed: int) -> str:
    if failed == 0:
        return COMPLETED
    return FAILED if predicted == 0 else COMPLETED_WITH_ERRORS


def results_key(batch_id: str, attempt: int) -> str:
    return f"results/{batch_id}/results-{attempt}.jsonl"


def errors_key(batch_id: str, attempt: int, extension: str) -> str:
    """The error report file of an attempt: ``extension`` is ``csv`` or ``jsonl``."""
    return f"results/{batch_id}/errors-{attempt}.{extension}"


def csv_line(cells: Iterable[Any]) -> bytes:
    """One CSV row (RFC 4180 quoting, None as an empty cell), UTF-8 encoded."""
    line = io.StringIO()
    csv.writer(line, lineterminator="\n").writerow(cells)
    return line.getvalue().encode("utf-8")


@dataclass
class BatchCloser:
    """Closes a job once every image has exactly one outcome; whoever gets there last (finalize or recover)."""

    store: JobStore
    s3: Any
    bucket: str
    on_closed: Callable[[dict[str, Any]], None] | None = None

    def try_close(self, batch_id: str, *, map_done: bool = True) -> dict[str, Any]:
        """Recount the job from its items and close it if every image has an outcome.

        ``map_done``: the caller is the state machine after its Map (``finalize``), so missing outcomes mean chunks
        are with recovery: the job becomes RECOVERING. ``recover`` calls with False and never changes the status
        of a job whose Map may still be running.
        """
        job = self.store.get(batch_id)
        if job["status"] in TERMINAL:
            return {"batch_id": batch_id, "status": job["status"], "closed": False}
        attempt = int(job.get("attempt", 1))
        counts = self.store.recount(batch_id, attempt=attempt)
        predicted, failed = counts.get(PREDICTED, 0), counts.get(FAILED_OUTCOME, 0)
        pending = int(job["total"]) - predicted - failed
        if pending > 0:
            # Only the status: the counters stay the writers' (a recount cannot be atomic with their ADDs).
            status = RECOVERING if map_done else job["status"]
            if status != job["status"] and not self.store.update_open(batch_id, status=status, updated_at=now_iso()):
                # recover closed it since the recount: it had the last outcomes.
                ended = self.store.get(batch_id)["status"]
                return {"batch_id": batch_id, "status": ended, "closed": False}
            logger.info("batch not complete", batch_id=batch_id, pending=pending, status=status)
            return {"batch_id": batch_id, "status": status, "pending": pending, "closed": False}
        files = self.write_results(batch_id, attempt)
        status = final_status(predicted, failed)
        closed = self.store.close(
            batch_id,
            status,
            predicted=predicted,
            failed=failed,
            finished_at=now_iso(),
            updated_at=now_iso(),
            **files,
        )
        logger.info("batch closed", batch_id=batch_id, status=status, predicted=predicted, failed=failed)
        if closed and self.on_closed is not None:
            self.on_closed(self.store.get(batch_id))
        return {"batch_id": batch_id, "status": status, "closed": closed, "predicted": predicted, "failed": failed}

    def write_results(self, batch_id: str, attempt: int) -> dict[str, Any]:
        """Every outcome as JSON lines, and the failed ones as the error report (CSV and JSON lines), in one pass
        over the outcomes streamed page by page to S3 (no error files when nothing failed).

        Returns what ``close`` stores on the job: the files' keys (None for error files not written, so a retry that
        fixed everything drops the last attempt's) and ``error_summary`` ({code: count}), so the report's summary
        costs no read of the items.
        """
        keys: dict[str, str | None] = {
            "results_key": results_key(batch_id, attempt),
            "errors_csv_key": errors_key(batch_id, attempt, "csv"),
            "errors_jsonl_key": errors_key(batch_id, attempt, "jsonl"),
        }
        content_types = ("application/x-ndjson", "text/csv; charset=utf-8", "application/x-ndjson")
        summary: dict[str, int] = {}
        with ExitStack() as files:
            spools = [files.enter_context(tempfile.TemporaryFile("w+b")) for _ in keys]
            results, errors_csv, errors_jsonl = spools
            errors_csv.write(csv_line(ERROR_FIELDS))
            for record in self.store.iter_outcomes(batch_id):
                results.write(json.dumps(public_outcome(record), separators=(",", ":")).encode("utf-8") + b"\n")
                if record["status"] != FAILED_OUTCOME:
                    continue
                entry = error_entry(record)
                summary[str(entry["code"])] = summary.get(str(entry["code"]), 0) + 1
                errors_csv.write(csv_line(entry[name] for name in ERROR_FIELDS))
                errors_jsonl.write(json.dumps(entry, separators=(",", ":")).encode("utf-8") + b"\n")
            written = spools if summary else spools[:1]
            for spool, key, content_type in zip(written, keys.values(), content_types, strict=False):
                spool.seek(0)
                self.s3.upload_fileobj(spool, self.bucket, key, ExtraArgs={"ContentType": content_type})
        if not summary:
            keys.update(errors_csv_key=None, errors_jsonl_key=None)
        return {**keys, "error_summary": summary}


# -- another attempt --------------------------------------------------------------------------------------------
RETRYABLE = frozenset({COMPLETED_WITH_ERRORS, FAILED, RECOVERING})


def items_to_retry(store: JobStore, s3: Any, bucket: str, job: dict[str, Any]) -> Iterator[tuple[int, str]]:
    """Every item of the batch with no outcome or a failed one, in item order, streamed: the keys file and the
    outcomes (both sorted by item) are merged without holding either."""
    outcomes = store.iter_outcomes(job["batch_id"])
    current = next(outcomes, None)
    for item, key in iter_keys_file(s3, bucket, job["keys_object"]):
        while current is not None and int(current["item"]) < item:
            current = next(outcomes, None)
        if current is None or int(current["item"]) != item or current["status"] == FAILED_OUTCOME:
            yield item, key


@dataclass
class BatchRetrier:
    """POST /batches/{id}/retry: run the failed and missing images again as a new attempt of the same batch."""

    store: JobStore
    s3: Any
    sfn: Any
    bucket: str
    state_machine_arn: str
    limits: BatchLimits = field(default_factory=BatchLimits)
    # The invocation's remaining time (set per invocation from the Lambda context), as BatchSubmitter's.
    remaining_ms: Callable[[], int] = no_deadline
    deadline_check_every: int = DEADLINE_CHECK_EVERY

    def retry(self, batch_id: str) -> dict[str, Any]:
        job = self.store.get(batch_id)
        if job["status"] not in RETRYABLE:
            raise Conflict(
                f"batch {batch_id} is {job['status']}: only a batch that ended with failures "
                f"or waits for recovery ({', '.join(sorted(RETRYABLE))}) can be retried",
                status=job["status"],
            )
        seen = int(job.get("attempt", 1))
        attempt = seen + 1
        # Claimed before its files are written: a second retry at the same time gets a conflict, and cannot rewrite
        # the keys file under a running attempt.
        if not self.store.start_attempt(batch_id, seen_attempt=seen, statuses=RETRYABLE, updated_at=now_iso()):
            raise Conflict(f"batch {batch_id} was retried or changed at the same time: read it again", status="QUEUED")
        try:
            summary = write_manifest(
                self.s3,
                until_deadline(
                    items_to_retry(self.store, self.s3, self.bucket, job),
                    self.remaining_ms,
                    source="retry",
                    value=batch_id,
                    check_every=self.deadline_check_every,
                ),
                bucket=self.bucket,
                batch_id=batch_id,
                chunk_size=int(job.get("chunk_size", self.limits.default_chunk_size)),
                max_images=self.limits.max_images,
                attempt=attempt,
            )
        except BaseException as exc:
            # Nothing started: the job goes back as it was (closing it, if it is complete, is reconcile's), so no
            # failure of the retry itself can leave it QUEUED with no execution.
            self.store.update(batch_id, status=job["status"], attempt=seen, failed=int(job.get("failed", 0)))
            if isinstance(exc, InvalidRequest):  # nothing left to run: its last images got outcomes meanwhile
                message = f"batch {batch_id} has no failed or missing images to retry"
                raise Conflict(message, status=job["status"]) from exc
            raise
        self.store.update(batch_id, retried=summary.total, updated_at=now_iso())
        concurrency = int(job.get("max_concurrency", self.limits.default_concurrency))
        execution_arn = start_execution(
            self.sfn,
            self.store,
            self.state_machine_arn,
            batch_id,
            job["model"],
            str(job["version"]),
            summary,
            concurrency,
            attempt,
            Faults.from_event(job),
        )
        logger.info("batch retried", batch_id=batch_id, attempt=attempt, images=summary.total)
        return {
            "batch_id": batch_id,
            "status": "QUEUED",
            "attempt": attempt,
            "retried": summary.total,
            "execution_arn": execution_arn,
        }
