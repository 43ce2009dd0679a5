"""Batch jobs and their per-image outcomes in DynamoDB.

Jobs table: one item per batch (``batch_id``): status, model, totals, counters, timings, execution ARN.
Items table: one item per image outcome (``batch_id``, ``item``), written with a condition so that reprocessing
a chunk never records or counts an image twice. A failed outcome may be replaced by a later *attempt* (a retry of
the batch), never by the same one. Counters on the job move atomically (``ADD``) by what each write changed;
``recount`` derives the exact figures from the items, and is what closes a job.

Attempts: a retry runs every failed and missing image again as attempt *n*, and moves the job's failures back to
pending (``start_attempt``). Until attempt *n* records an image, the failure an earlier attempt left on it is not a
final outcome of the job: ``recount`` counts it as pending, so a job never closes while its retry still runs.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from modelrun.aws.dynamo import applied, dynamo, plain
from modelrun.errors import NotFound
from modelrun.tenants import DEFAULT_TENANT, Tenant

QUEUED = "QUEUED"
RUNNING = "RUNNING"
RECOVERING = "RECOVERING"
COMPLETED = "COMPLETED"
COMPLETED_WITH_ERRORS = "COMPLETED_WITH_ERRORS"
FAILED = "FAILED"
TERMINAL = frozenset({COMPLETED, COMPLETED_WITH_ERRORS, FAILED})

PREDICTED = "predicted"
FAILED_OUTCOME = "failed"

RETENTION_DAYS = 30

DATASET_FIELDS = ("dataset_id", "image_id")
"""What an outcome of a batch over a dataset carries next to its key."""


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def expires_at(days: int = RETENTION_DAYS) -> int:
    return int(time.time()) + days * 86400


def new_batch_id() -> str:
    """Sortable by creation time and unique: also the Step Functions execution name (80 chars max)."""
    return f"b-{datetime.now(UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:12]}"


@dataclass(frozen=True)
class Outcome:
    """The final result for one image of a batch: a prediction, or a failure with a stable code.

    ``result`` is a prediction's task result as the item keeps it (``label, score, top_k`` for a classification;
    see :meth:`modelrun.batches.results.ResultObjects.keep` for masks and long detection lists). An image of a
    batch over a dataset carries its ``dataset_id`` and ``image_id``.
    """

    item: int
    key: str
    chunk: int
    status: str
    attempt: int = 1
    result: dict[str, Any] = field(default_factory=dict)
    error_code: str | None = None
    error_message: str | None = None
    dataset_id: str | None = None
    image_id: str | None = None

    def record(self, batch_id: str) -> dict[str, Any]:
        record: dict[str, Any] = {
            "batch_id": batch_id,
            "item": self.item,
            "key": self.key,
            **({"dataset_id": self.dataset_id, "image_id": self.image_id} if self.image_id else {}),
            "chunk": self.chunk,
            "status": self.status,
            "batch_status": f"{batch_id}#{self.status}",
            "attempt": self.attempt,
            "updated_at": now_iso(),
            "expires_at": expires_at(),
        }
        if self.status == PREDICTED:
            # One map attribute: a model's own postprocess may return any field name, even one of the item's own.
            record["result"] = self.result
        else:
            record.update(error_code=self.error_code, error_message=self.error_message)
        return dynamo(record)


def public_outcome(record: dict[str, Any]) -> dict[str, Any]:
    """An items-table record as the API and the results file show it: a prediction's result fields beside the
    item's own (which win over a result field of the same name)."""
    record = plain(record)
    shown: dict[str, Any] = {
        "item": record["item"],
        "key": record["key"],
        **{name: record[name] for name in DATASET_FIELDS if record.get(name)},
        "status": record["status"],
        "attempt": record.get("attempt", 1),
        "updated_at": record.get("updated_at"),
    }
    if record["status"] == PREDICTED:
        result = record.get("result") or {}
        shown.update((name, value) for name, value in result.items() if name not in shown)
    else:
        shown["error"] = {"code": record.get("error_code"), "message": record.get("error_message")}
    return shown


# The error report's fields, in this order in errors-<attempt>.csv and in GET /batches/{id}/errors; a batch over a
# dataset adds DATASET_FIELDS after the key.
ERROR_FIELDS = ("item", "key", "code", "message", "attempts", "last_attempt_at")


def is_final(record: dict[str, Any], attempt: int) -> bool:
    """Whether a stored outcome is final for the job's ``attempt``: a failure an earlier attempt recorded is pending,
    as ``attempt`` runs that image again."""
    return not (record["status"] == FAILED_OUTCOME and int(record.get("attempt", 1)) < attempt)


def error_fields(*, dataset: bool) -> tuple[str, ...]:
    """The error report's columns: :data:`ERROR_FIELDS`, with :data:`DATASET_FIELDS` for a batch over a dataset."""
    return (*ERROR_FIELDS[:2], *DATASET_FIELDS, *ERROR_FIELDS[2:]) if dataset else ERROR_FIELDS


def error_entry(record: dict[str, Any]) -> dict[str, Any]:
    """A failed outcome as the error report shows it: which image, why (code, message), which attempt, when."""
    shown = public_outcome(record)
    error = shown.get("error") or {}
    return {
        "item": shown["item"],
        "key": shown["key"],
        **{name: shown[name] for name in DATASET_FIELDS if name in shown},
        "code": error.get("code"),
        "message": error.get("message"),
        "attempts": shown["attempt"],
        "last_attempt_at": shown["updated_at"],
    }


@dataclass
class JobStore:
    """Jobs and items tables (boto3 ``Table`` resources), for one tenant or (``tenant`` None) for the workers.

    A tenant's view (:meth:`for_tenant`) stamps the tenant on the jobs it creates and answers NotFound for another
    tenant's job, exactly as for a missing one; the items of a job are reached only through a job it has read.
    The unscoped store is the workers': they act for whichever tenant submitted the batch.
    """

    jobs: Any
    items: Any
    tenant: Tenant | None = None

    def for_tenant(self, tenant: Tenant) -> JobStore:
        """This store scoped to one tenant (same tables, no new connections)."""
        return replace(self, tenant=tenant)

    # -- jobs -------------------------------------------------------------------------------------------------
    def create(self, job: dict[str, Any]) -> None:
        """Register a new job as this store's tenant's (every job names its owner, whose space holds its files).

        Raises:
            RuntimeError: the store is the unscoped one (workers never create jobs).
        """
        if self.tenant is None:
            raise RuntimeError("the unscoped job store creates no job: use JobStore.for_tenant(tenant)")
        record = {
            **job,
            "tenant": self.tenant.name,
            "status": QUEUED,
            "predicted": 0,
            "failed": 0,
            "created_at": now_iso(),
            "updated_at": now_iso(),
            "expires_at": expires_at(),
        }
        self.jobs.put_item(Item=dynamo(record), ConditionExpression="attribute_not_exists(batch_id)")

    def get(self, batch_id: str) -> dict[str, Any]:
        found = self.jobs.get_item(Key={"batch_id": batch_id}, ConsistentRead=True).get("Item")
        # A job from before tenants has none: it is the default tenant's, whose space the whole bucket was.
        if not found or (self.tenant is not None and found.get("tenant", DEFAULT_TENANT) != self.tenant.name):
            raise NotFound(f"no batch {batch_id!r}: check the id returned by POST /batches", batch_id=batch_id)
        return plain(found)

    def update(self, batch_id: str, **fields: Any) -> None:
        names = {f"#{name}": name for name in fields}
        values = {f":{name}": value for name, value in dynamo(fields).items()}
        assignments = ", ".join(f"#{name} = :{name}" for name in fields)
        self.jobs.update_item(
            Key={"batch_id": batch_id},
            UpdateExpression=f"SET {assignments}",
            ExpressionAttributeNames=names,
            ExpressionAttributeValues=values,
        )

    def start_attempt(self, batch_id: str, *, seen_attempt: int, statuses: Iterable[str], **fields: Any) -> bool:
        """Move a job from attempt ``seen_attempt`` to the next, QUEUED, with its failures back to pending (the new
        attempt runs them all again); only while it is still at that attempt and in one of ``statuses``. False when
        another writer moved it first (two retries at once start one attempt)."""
        allowed = {f":s{number}": status for number, status in enumerate(statuses)}
        names = {"#status": "status", "#attempt": "attempt", **{f"#{name}": name for name in fields}}
        values = {
            ":queued": QUEUED,
            ":next": seen_attempt + 1,
            ":seen": seen_attempt,
            ":zero": 0,
            **allowed,
            **{f":{name}": value for name, value in dynamo(fields).items()},
        }
        assignments = ", ".join(
            ["#status = :queued", "#attempt = :next", "failed = :zero", *(f"#{name} = :{name}" for name in fields)]
        )
        # Jobs created before attempts were recorded have none: that is attempt 1.
        seen = "#attempt = :seen" if seen_attempt != 1 else "(#attempt = :seen OR attribute_not_exists(#attempt))"
        return applied(
            self.jobs.update_item,
            Key={"batch_id": batch_id},
            UpdateExpression=f"SET {assignments}",
            ConditionExpression=f"attribute_exists(batch_id) AND {seen} AND #status IN ({', '.join(allowed)})",
            ExpressionAttributeNames=names,
            ExpressionAttributeValues=values,
        )

    def update_open(self, batch_id: str, **fields: Any) -> bool:
        """``update`` unless the job has ended: False when another writer closed it first (a late ``RECOVERING``
        must not reopen a job that recover has just closed)."""
        names = {"#status": "status", **{f"#{name}": name for name in fields}}
        values = {f":{name}": value for name, value in dynamo(fields).items()}
        values.update({":c": COMPLETED, ":cwe": COMPLETED_WITH_ERRORS, ":f": FAILED})
        return applied(
            self.jobs.update_item,
            Key={"batch_id": batch_id},
            UpdateExpression="SET " + ", ".join(f"#{name} = :{name}" for name in fields),
            ConditionExpression="attribute_exists(batch_id) AND NOT #status IN (:c, :cwe, :f)",
            ExpressionAttributeNames=names,
            ExpressionAttributeValues=values,
        )

    def add_counts(self, batch_id: str, *, predicted: int, failed: int) -> None:
        if not predicted and not failed:
            return
        self.jobs.update_item(
            Key={"batch_id": batch_id},
            UpdateExpression="ADD predicted :p, failed :f SET updated_at = :now",
            ExpressionAttributeValues={":p": predicted, ":f": failed, ":now": now_iso()},
        )

    def note_parked(self, batch_id: str, entry: dict[str, Any]) -> None:
        """Record on the job that one of its chunks went to the parking queue (the job document shows it)."""
        self.jobs.update_item(
            Key={"batch_id": batch_id},
            UpdateExpression="SET parked = list_append(if_not_exists(parked, :empty), :entry), updated_at = :now",
            ExpressionAttributeValues={":entry": [dynamo(entry)], ":empty": [], ":now": now_iso()},
        )

    def close(self, batch_id: str, status: str, **fields: Any) -> bool:
        """Move a job to a terminal status once; False when another writer closed it first."""
        return self.update_open(batch_id, status=status, **fields)

    # -- items ------------------------------------------------------------------------------------------------
    def record_outcome(self, batch_id: str, outcome: Outcome) -> tuple[int, int]:
        """Write one outcome unless the image already has a final one; the (predicted, failed) change it made.

        A failure replaced by a later attempt's outcome was moved back to pending when that attempt started
        (``start_attempt``), so replacing it counts only the new outcome."""
        written = applied(
            self.items.put_item,
            Item=outcome.record(batch_id),
            ConditionExpression="attribute_not_exists(#item) OR (#status = :failed AND #attempt < :attempt)",
            ExpressionAttributeNames={"#item": "item", "#status": "status", "#attempt": "attempt"},
            ExpressionAttributeValues={":failed": FAILED_OUTCOME, ":attempt": outcome.attempt},
        )
        if not written:
            return 0, 0
        return (1, 0) if outcome.status == PREDICTED else (0, 1)

    def outcomes(
        self, batch_id: str, *, status: str | None = None, limit: int = 1000, start: dict[str, Any] | None = None
    ) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
        """One page of outcomes in item order, optionally of one status (through the by-status index)."""
        query: dict[str, Any] = {"Limit": limit}
        if status is None:
            query["KeyConditionExpression"] = "batch_id = :b"
            query["ExpressionAttributeValues"] = {":b": batch_id}
            query["ConsistentRead"] = True
        else:
            query["IndexName"] = "by_status"
            query["KeyConditionExpression"] = "batch_status = :bs"
            query["ExpressionAttributeValues"] = {":bs": f"{batch_id}#{status}"}
        if start:
            query["ExclusiveStartKey"] = start
        page = self.items.query(**query)
        return page.get("Items", []), page.get("LastEvaluatedKey")

    def iter_outcomes(self, batch_id: str, *, status: str | None = None) -> Iterator[dict[str, Any]]:
        start: dict[str, Any] | None = None
        while True:
            page, start = self.outcomes(batch_id, status=status, start=start)
            yield from page
            if not start:
                return

    def reconcile(self, batch_id: str) -> dict[str, int]:
        """Recount a job from its items; set its counters to the recount once it has ended.

        The counters only drift if a writer died between an outcome and its ``ADD``. While a job runs, writers are
        still adding, and a recount cannot be atomic with their writes, so its counters are left to them (closing
        always sets the exact figures); once it has ended nothing writes, and the recount is the truth."""
        job = self.get(batch_id)
        counts = self.recount(batch_id, attempt=int(job.get("attempt", 1)))
        if job["status"] in TERMINAL:
            self.update(batch_id, predicted=counts[PREDICTED], failed=counts[FAILED_OUTCOME], updated_at=now_iso())
        return counts

    def recount(self, batch_id: str, *, attempt: int = 1) -> dict[str, int]:
        """Exact counts of the final outcomes of ``attempt`` from the items themselves (the reconciliation check):
        a failure an earlier attempt recorded is pending, as ``attempt`` runs that image again."""
        counts = {PREDICTED: 0, FAILED_OUTCOME: 0}
        start: dict[str, Any] | None = None
        while True:
            query: dict[str, Any] = {
                "KeyConditionExpression": "batch_id = :b",
                "ExpressionAttributeValues": {":b": batch_id},
                "ProjectionExpression": "#status, #attempt",
                "ExpressionAttributeNames": {"#status": "status", "#attempt": "attempt"},
                "ConsistentRead": True,
            }
            if start:
                query["ExclusiveStartKey"] = start
            page = self.items.query(**query)
            for record in page.get("Items", []):
                if is_final(record, attempt):
                    counts[record["status"]] = counts.get(record["status"], 0) + 1
            start = page.get("LastEvaluatedKey")
            if not start:
                return counts


def job_document(job: dict[str, Any], links: dict[str, str]) -> dict[str, Any]:
    """The public shape of a job (GET /batches/{id})."""
    total = int(job.get("total", 0))
    predicted, failed = int(job.get("predicted", 0)), int(job.get("failed", 0))
    done = predicted + failed
    timings: dict[str, Any] = {
        "created_at": job.get("created_at"),
        "started_at": job.get("started_at"),
        "finished_at": job.get("finished_at"),
    }
    if job.get("started_at") and job.get("finished_at"):
        started = datetime.fromisoformat(str(job["started_at"]).replace("Z", "+00:00"))
        finished = datetime.fromisoformat(str(job["finished_at"]).replace("Z", "+00:00"))
        timings["duration_s"] = round((finished - started).total_seconds(), 3)
    document = {
        "batch_id": job["batch_id"],
        "status": job["status"],
        "model": job.get("model"),
        "version": job.get("version"),
        "total": total,
        "counts": {"predicted": predicted, "failed": failed, "pending": max(total - done, 0)},
        "percent": round(100.0 * done / total, 2) if total else 100.0,
        "attempt": int(job.get("attempt", 1)),
        "chunks": int(job.get("chunk_count", 0)),
        "timings": timings,
        "execution_arn": job.get("execution_arn"),
        "links": links,
    }
    if job.get("dataset_id"):
        document["dataset_id"] = job["dataset_id"]
    if job.get("parked"):
        document["parked"] = job["parked"]
    return document
