"""Another attempt of a batch: POST /batches/{id}/retry runs its failed and missing images again."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from aws_lambda_powertools import Logger

from modelrun.batches.faults import Faults
from modelrun.batches.keys import BatchKeys
from modelrun.batches.manifest import (
    DEADLINE_CHECK_EVERY,
    iter_keys_file,
    lambda_max_remaining_ms,
    until_deadline,
    write_manifest,
)
from modelrun.batches.requests import BatchLimits
from modelrun.batches.store import COMPLETED_WITH_ERRORS, FAILED, FAILED_OUTCOME, RECOVERING, JobStore, now_iso
from modelrun.batches.submit import start_execution
from modelrun.datasets.history import DatasetRun
from modelrun.errors import Conflict, InvalidRequest

logger = Logger(child=True)


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
    remaining_ms: Callable[[], int] = lambda_max_remaining_ms
    deadline_check_every: int = DEADLINE_CHECK_EVERY

    def retry(self, batch_id: str) -> dict[str, Any]:
        job = self.store.get(batch_id)
        if job["status"] not in RETRYABLE:
            raise Conflict(
                f"batch {batch_id} is {job['status']}: only a batch that ended with failures "
                f"or waits for recovery ({', '.join(sorted(RETRYABLE))}) can be retried",
                status=job["status"],
            )
        batch = BatchKeys.of_job(job)
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
                batch=batch,
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
            batch,
            job["model"],
            str(job["version"]),
            summary,
            concurrency,
            attempt,
            Faults.from_event(job),
            DatasetRun.start(str(job["tenant"]), str(job["dataset_id"])) if job.get("dataset_id") else None,
        )
        logger.info("batch retried", batch_id=batch_id, attempt=attempt, images=summary.total)
        return {
            "batch_id": batch_id,
            "status": "QUEUED",
            "attempt": attempt,
            "retried": summary.total,
            "execution_arn": execution_arn,
        }
