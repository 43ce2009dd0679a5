"""Every prediction a dataset image has had: single predictions by id and batch outcomes, newest first.

One item per prediction in the DatasetsTable, under the image's own partition ``<tenant>#<dataset id>#<image id>``
(so writes of a big batch spread over its images' partitions), sort key ``<time>#<run>``:

* a single prediction: the time it was made and its prediction id;
* a batch outcome: the time its attempt started (``run_at``, fixed when the attempt's execution starts) then the
  batch id, attempt and item. A chunk that runs again writes the same item again, never a second one. It is written
  once the outcome itself is recorded, by whoever records it (the chunk, or recovery), in the same batched writes.

Each item keeps a summary of the result, not the result: a mask or a long detection list stays with the batch (its
results and results file) or the prediction's response. Items expire after :data:`RETENTION_DAYS` (the table's TTL)
and are left when their dataset is deleted: nothing reaches them once the dataset is gone.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from modelrun.aws.dynamo import dynamo, plain
from modelrun.batches.store import PREDICTED, now_iso
from modelrun.errors import InvalidRequest
from modelrun.http.paging import decode_token, encode_token
from modelrun.tenants import Tenant

if TYPE_CHECKING:
    from modelrun.batches.store import Outcome

RETENTION_DAYS: Final = 365
SINGLE: Final = "single"
"""The ``batch_id`` of a single prediction's entry."""
TOKEN_KEY: Final = {"pk", "sk"}
# A summary keeps at most this many labels (multilabel) or classes (segmentation).
SUMMARY_ENTRIES: Final = 10


def summary(result: dict[str, Any]) -> dict[str, Any]:
    """What an entry keeps of a task result: a classification's ``label`` and ``score``; a multilabel's labels; a
    detection's ``count`` and labels found; a segmentation's classes present with their share; for a model that
    predicts every frame, each frame's summary. A model's own postprocess output keeps only these fields, if any."""
    if isinstance(result.get("frames"), list):
        frames = [entry for entry in result["frames"] if isinstance(entry, dict)]
        return {"frames": [{"frame": entry.get("frame"), **summary(entry)} for entry in frames[:SUMMARY_ENTRIES]]}
    kept: dict[str, Any] = {}
    for name in ("label", "score", "count", "frame"):
        value = result.get(name)
        if isinstance(value, str | int | float) and not isinstance(value, bool):
            kept[name] = value
    labels = result.get("labels")
    if isinstance(labels, list):
        kept["labels"] = [entry["label"] for entry in labels if isinstance(entry, dict) and "label" in entry][
            :SUMMARY_ENTRIES
        ]
    detections = result.get("detections")
    if isinstance(detections, list):
        found = {str(entry["label"]) for entry in detections if isinstance(entry, dict) and "label" in entry}
        kept["labels"] = sorted(found)[:SUMMARY_ENTRIES]
    classes = result.get("classes")
    if isinstance(classes, list):
        present = [
            {"label": entry.get("label"), "fraction": entry.get("fraction")}
            for entry in classes
            if isinstance(entry, dict) and entry.get("pixels")
        ]
        kept["classes"] = present[:SUMMARY_ENTRIES]
    return kept


@dataclass(frozen=True)
class DatasetRun:
    """What a batch's chunks know of the dataset they predict: its owner, its id and when the attempt started.

    It travels in the execution input and each Map iteration's input as ``dataset`` (``{}`` for a batch of plain
    keys), and so in a dead-letter message too.
    """

    tenant: str
    dataset_id: str
    run_at: str

    @classmethod
    def start(cls, tenant: str, dataset_id: str) -> DatasetRun:
        """The run of an attempt starting now."""
        return cls(tenant=tenant, dataset_id=dataset_id, run_at=now_iso())

    @classmethod
    def from_event(cls, event: dict[str, Any]) -> DatasetRun | None:
        value = event.get("dataset")
        if not isinstance(value, dict) or not value.get("dataset_id"):
            return None
        return cls(tenant=str(value["tenant"]), dataset_id=str(value["dataset_id"]), run_at=str(value["run_at"]))

    def to_event(self) -> dict[str, str]:
        return {"tenant": self.tenant, "dataset_id": self.dataset_id, "run_at": self.run_at}


@dataclass
class PredictionHistory:
    """Writes and reads prediction entries in the DatasetsTable (a boto3 ``Table`` resource)."""

    table: Any
    retention_days: int = RETENTION_DAYS

    @staticmethod
    def partition(tenant: Tenant, dataset_id: str, image_id: str) -> str:
        return tenant.partition(f"{dataset_id}#{image_id}")

    def _expires_at(self) -> int:
        return int(time.time()) + self.retention_days * 86400

    def record_single(self, tenant: Tenant, *, dataset_id: str, image_id: str, result: dict[str, Any]) -> None:
        """An entry for a single prediction (``result`` as POST /predictions answers it)."""
        now = now_iso()
        self.table.put_item(
            Item=dynamo(
                {
                    "pk": self.partition(tenant, dataset_id, image_id),
                    "sk": f"{now}#{result['prediction_id']}",
                    "time": now,
                    "batch_id": SINGLE,
                    "prediction_id": result["prediction_id"],
                    "model": result.get("model"),
                    "version": result.get("version"),
                    "status": PREDICTED,
                    "summary": summary(result),
                    "expires_at": self._expires_at(),
                }
            )
        )

    def record_outcomes(
        self, run: DatasetRun, *, batch_id: str, model: str, version: str, outcomes: Iterable[Outcome]
    ) -> int:
        """Entries for batch outcomes of dataset images, 25 per write; the number written."""
        tenant = Tenant(run.tenant)
        written = 0
        with self.table.batch_writer(overwrite_by_pkeys=["pk", "sk"]) as batch:
            for outcome in outcomes:
                if outcome.image_id is None:
                    continue
                entry: dict[str, Any] = {
                    "pk": self.partition(tenant, run.dataset_id, outcome.image_id),
                    "sk": f"{run.run_at}#{batch_id}#{outcome.attempt}#{outcome.item}",
                    "time": now_iso(),
                    "batch_id": batch_id,
                    "item": outcome.item,
                    "attempt": outcome.attempt,
                    "model": model,
                    "version": version,
                    "status": outcome.status,
                    "expires_at": self._expires_at(),
                }
                if outcome.status == PREDICTED:
                    entry["summary"] = summary(outcome.result)
                else:
                    entry["error"] = {"code": outcome.error_code, "message": outcome.error_message}
                batch.put_item(Item=dynamo(entry))
                written += 1
        return written

    def page(
        self, tenant: Tenant, *, dataset_id: str, image_id: str, limit: int, token: str | None
    ) -> tuple[list[dict[str, Any]], str | None]:
        """One page of an image's entries, newest first.

        Raises:
            InvalidRequest: a ``next_token`` this listing did not return.
        """
        partition = self.partition(tenant, dataset_id, image_id)
        query: dict[str, Any] = {
            "KeyConditionExpression": "pk = :p",
            "ExpressionAttributeValues": {":p": partition},
            "ScanIndexForward": False,
            "Limit": limit,
        }
        start = decode_token(token)
        if start is not None:
            if set(start) != TOKEN_KEY or start.get("pk") != partition or not isinstance(start.get("sk"), str):
                raise InvalidRequest('"next_token" is not a token this listing returned: start again without it')
            query["ExclusiveStartKey"] = start
        found = self.table.query(**query)
        return [history_entry(item) for item in found.get("Items", [])], encode_token(found.get("LastEvaluatedKey"))


def history_entry(item: dict[str, Any]) -> dict[str, Any]:
    """A stored entry as GET /datasets/{id}/images/{image_id}/predictions shows it."""
    item = plain(item)
    shown: dict[str, Any] = {
        "time": item.get("time"),
        "batch_id": item.get("batch_id"),
        "model": item.get("model"),
        "version": item.get("version"),
        "status": item.get("status"),
    }
    for name in ("prediction_id", "item", "attempt", "summary", "error"):
        if name in item:
            shown[name] = item[name]
    return shown
