"""Closing a batch once every image has an outcome: the final status and the results and error report files."""

from __future__ import annotations

import csv
import io
import json
import tempfile
from collections.abc import Callable, Iterable
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

from aws_lambda_powertools import Logger

from modelrun.batches.keys import BatchKeys
from modelrun.batches.results import ResultObjects
from modelrun.batches.store import (
    COMPLETED,
    COMPLETED_WITH_ERRORS,
    FAILED,
    FAILED_OUTCOME,
    PREDICTED,
    RECOVERING,
    TERMINAL,
    JobStore,
    error_entry,
    error_fields,
    is_final,
    now_iso,
    public_outcome,
)

logger = Logger(child=True)


def final_status(predicted: int, failed: int) -> str:
    if failed == 0:
        return COMPLETED
    return FAILED if predicted == 0 else COMPLETED_WITH_ERRORS


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

        One pass over the outcomes both recounts them and writes the results files, which are uploaded only if the
        batch is complete (the common case, so each outcome is read once, not once to count and once to write).

        ``map_done``: the caller is the state machine after its Map (``finalize``), so missing outcomes mean chunks
        are with recovery: the job becomes RECOVERING. ``recover`` calls with False and never changes the status
        of a job whose Map may still be running.
        """
        job = self.store.get(batch_id)
        if job["status"] in TERMINAL:
            return {"batch_id": batch_id, "status": job["status"], "closed": False}
        attempt = int(job.get("attempt", 1))
        batch = BatchKeys.of_job(job)
        with ResultFiles(batch, attempt, dataset=bool(job.get("dataset_id"))) as files:
            counts = {PREDICTED: 0, FAILED_OUTCOME: 0}
            for record in self.store.iter_outcomes(batch_id):
                if not is_final(record, attempt):
                    continue  # pending: this attempt runs the image again
                counts[record["status"]] = counts.get(record["status"], 0) + 1
                files.add(self.file_entry(batch, record), record)
            predicted, failed = counts[PREDICTED], counts[FAILED_OUTCOME]
            pending = int(job["total"]) - predicted - failed
            if pending > 0:
                return self.not_complete(job, pending, map_done=map_done)
            written = files.upload(self.s3, self.bucket)
        status = final_status(predicted, failed)
        closed = self.store.close(
            batch_id,
            status,
            predicted=predicted,
            failed=failed,
            finished_at=now_iso(),
            updated_at=now_iso(),
            **written,
        )
        logger.info("batch closed", batch_id=batch_id, status=status, predicted=predicted, failed=failed)
        if closed and self.on_closed is not None:
            self.on_closed(self.store.get(batch_id))
        return {"batch_id": batch_id, "status": status, "closed": closed, "predicted": predicted, "failed": failed}

    def not_complete(self, job: dict[str, Any], pending: int, *, map_done: bool) -> dict[str, Any]:
        """Only the status of a job with ``pending`` images changes (to RECOVERING after the Map): the counters stay
        the writers' (a recount cannot be atomic with their ADDs)."""
        batch_id = job["batch_id"]
        status = RECOVERING if map_done else job["status"]
        if status != job["status"] and not self.store.update_open(batch_id, status=status, updated_at=now_iso()):
            # recover closed it since the recount: it had the last outcomes.
            ended = self.store.get(batch_id)["status"]
            return {"batch_id": batch_id, "status": ended, "closed": False}
        logger.info("batch not complete", batch_id=batch_id, pending=pending, status=status)
        return {"batch_id": batch_id, "status": status, "pending": pending, "closed": False}

    def file_entry(self, batch: BatchKeys, record: dict[str, Any]) -> dict[str, Any]:
        """An outcome as the results file holds it: as the API shows it, with every detection (an item keeps only
        the best :data:`~modelrun.batches.results.MAX_ITEM_DETECTIONS`)."""
        shown = public_outcome(record)
        objects = ResultObjects(self.s3, self.bucket)
        if shown.pop("detections_truncated", False):
            shown["detections"] = objects.full_detections(batch, shown["item"])
        for entry in shown.get("frames") or []:
            if isinstance(entry, dict) and entry.pop("detections_truncated", False):
                entry["detections"] = objects.full_detections(batch, shown["item"], entry.get("frame"))
        return shown


class ResultFiles:
    """Every outcome of a batch as JSON lines, and the failed ones as the error report (CSV and JSON lines), spooled
    to temporary files as they come and uploaded to the batch's tenant's space (no error files when nothing failed).
    For a batch over a dataset (``dataset``), the CSV has the ``dataset_id`` and ``image_id`` columns."""

    CONTENT_TYPES = ("application/x-ndjson", "text/csv; charset=utf-8", "application/x-ndjson")

    def __init__(self, batch: BatchKeys, attempt: int, *, dataset: bool = False) -> None:
        self.keys: dict[str, str | None] = {
            "results_key": batch.results_file(attempt),
            "errors_csv_key": batch.error_report(attempt, "csv"),
            "errors_jsonl_key": batch.error_report(attempt, "jsonl"),
        }
        self.columns = error_fields(dataset=dataset)
        self.summary: dict[str, int] = {}
        self._files = ExitStack()

    def __enter__(self) -> ResultFiles:
        self.spools = [self._files.enter_context(tempfile.TemporaryFile("w+b")) for _ in self.keys]  # noqa: SIM115
        self.spools[1].write(csv_line(self.columns))
        return self

    def __exit__(self, *exc: object) -> None:
        self._files.close()

    def add(self, entry: dict[str, Any], record: dict[str, Any]) -> None:
        """One outcome: ``entry`` as the results file shows it, ``record`` as stored (for the error report)."""
        results, errors_csv, errors_jsonl = self.spools
        results.write(json.dumps(entry, separators=(",", ":")).encode() + b"\n")
        if record["status"] != FAILED_OUTCOME:
            return
        error = error_entry(record)
        self.summary[str(error["code"])] = self.summary.get(str(error["code"]), 0) + 1
        errors_csv.write(csv_line(error.get(name) for name in self.columns))
        errors_jsonl.write(json.dumps(error, separators=(",", ":")).encode("utf-8") + b"\n")

    def upload(self, s3: Any, bucket: str) -> dict[str, Any]:
        """Upload the files; what ``close`` stores on the job: their keys (None for error files not written, so a
        retry that fixed everything drops the last attempt's) and ``error_summary`` ({code: count}), so the report's
        summary costs no read of the items."""
        written = self.spools if self.summary else self.spools[:1]
        for spool, key, content_type in zip(written, self.keys.values(), self.CONTENT_TYPES, strict=False):
            spool.seek(0)
            s3.upload_fileobj(spool, bucket, key, ExtraArgs={"ContentType": content_type})
        keys = dict(self.keys)
        if not self.summary:
            keys.update(errors_csv_key=None, errors_jsonl_key=None)
        return {**keys, "error_summary": self.summary}
