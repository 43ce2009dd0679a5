"""Datasets in the DatasetsTable (``pk``, ``sk``): who owns what is in every partition key.

========================  ======================================  ==========================================
item                      pk                                      sk
========================  ======================================  ==========================================
a dataset (its header)    ``<tenant>``                            ``dataset#<dataset id>``
a dataset name, taken     ``<tenant>``                            ``name#<name>`` (holds the dataset id)
an image of a dataset     ``<tenant>#<dataset id>``               ``<image id>`` (holds the S3 key)
a prediction of an image  ``<tenant>#<dataset id>#<image id>``    ``<time>#<run>`` (``history``)
========================  ======================================  ==========================================

A tenant's datasets are one query of its own partition, newest first (dataset ids sort by creation time); a
dataset's images are one partition, paged in image id order; an image's predictions are a partition of their own,
so a batch over a million images writes its history across a million partitions, not into one. Names are unique
per tenant: registering under a taken name registers into that dataset again.

The header's ``status`` is ``REGISTERING`` while images are being added from a prefix or a list file (by
``modelrun.datasets.registration``), then ``READY`` or ``FAILED`` (with ``reason``). ``step`` counts the
registration's steps across the dataset's whole life, so a late or duplicated queue message of an earlier step is
recognised and dropped; ``cursor`` says where the next step starts.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any, Final

from modelrun.aws.dynamo import applied, dynamo, plain
from modelrun.batches.store import now_iso
from modelrun.datasets.ids import image_id_of, is_dataset_id, is_image_id
from modelrun.errors import DatasetNotFound, DatasetNotReady, ImageNotFound, InvalidRequest
from modelrun.http.paging import decode_token, encode_token
from modelrun.tenants import Tenant

REGISTERING: Final = "REGISTERING"
READY: Final = "READY"
FAILED: Final = "FAILED"

HEADER: Final = "dataset#"
NAME: Final = "name#"
TOKEN_KEY: Final = {"pk", "sk"}
# BatchGetItem reads at most 100 keys per call; a batch's image_ids are read in calls of this many.
GET_BATCH: Final = 100
# Inline keys and uploads are added with one conditional write each, a few at a time.
WRITE_THREADS: Final = 8


def _missing(dataset_id: str) -> DatasetNotFound:
    return DatasetNotFound(
        f"no dataset {dataset_id!r} for this API key: check the id POST /datasets returned (GET /datasets lists yours)",
        dataset_id=dataset_id,
    )


def _no_image(dataset_id: str, image_id: str) -> ImageNotFound:
    return ImageNotFound(
        f"dataset {dataset_id} has no image {image_id!r}: GET /datasets/{dataset_id}/images lists its images",
        image_id=image_id,
    )


@dataclass
class DatasetStore:
    """The DatasetsTable (a boto3 ``Table`` resource), for one tenant.

    Every key is built from the tenant, so one tenant's view never reads another's items: another tenant's dataset
    is :class:`DatasetNotFound`, exactly as a missing one. The unscoped store (built once per sandbox) has no tenant;
    :meth:`for_tenant` gives the view a request or a worker (which knows the tenant from its message) uses.
    """

    table: Any
    tenant: Tenant | None = None

    def for_tenant(self, tenant: Tenant) -> DatasetStore:
        """This store for one tenant (same table, no new connections)."""
        return replace(self, tenant=tenant)

    @property
    def scope(self) -> Tenant:
        if self.tenant is None:
            raise RuntimeError("a DatasetStore reads and writes for a tenant: use store.for_tenant(tenant)")
        return self.tenant

    def _header_key(self, dataset_id: str) -> dict[str, str]:
        return {"pk": self.scope.name, "sk": f"{HEADER}{dataset_id}"}

    def images_partition(self, dataset_id: str) -> str:
        return self.scope.partition(dataset_id)

    # -- headers ------------------------------------------------------------------------------------------------
    def claim_name(self, name: str, dataset_id: str) -> str:
        """Take ``name`` for a new dataset ``dataset_id``; when another dataset of the tenant has it, that one's id."""
        key = {"pk": self.scope.name, "sk": f"{NAME}{name}"}
        if applied(
            self.table.put_item,
            Item={**key, "dataset_id": dataset_id, "created_at": now_iso()},
            ConditionExpression="attribute_not_exists(pk)",
        ):
            return dataset_id
        found = self.table.get_item(Key=key, ConsistentRead=True).get("Item") or {}
        return str(found.get("dataset_id") or dataset_id)

    def create(self, dataset_id: str, name: str, source: dict[str, Any], status: str) -> dict[str, Any]:
        """Write a new dataset's header; returns it.

        Raises:
            DatasetNotReady: the header exists already (another request made it a moment ago).
        """
        now = now_iso()
        header = {
            **self._header_key(dataset_id),
            "tenant": self.scope.name,
            "dataset_id": dataset_id,
            "name": name,
            "status": status,
            "source": source,
            "images": 0,
            "keys_read": 0,
            "step": 1,
            "created_at": now,
            "updated_at": now,
        }
        if status != REGISTERING:
            header["finished_at"] = now
        if not applied(self.table.put_item, Item=dynamo(header), ConditionExpression="attribute_not_exists(pk)"):
            raise DatasetNotReady(f"dataset {name!r} is being created by another request: read it again", name=name)
        return header

    def find(self, dataset_id: str) -> dict[str, Any] | None:
        """The header of one of the tenant's datasets, or None (a malformed id names none)."""
        if not is_dataset_id(dataset_id):
            return None
        found = self.table.get_item(Key=self._header_key(dataset_id), ConsistentRead=True).get("Item")
        return plain(found) if found else None

    def get(self, dataset_id: str) -> dict[str, Any]:
        """The header of one of the tenant's datasets.

        Raises:
            DatasetNotFound: no such dataset, a malformed id, or another tenant's (the same answer).
        """
        header = self.find(dataset_id)
        if header is None:
            raise _missing(dataset_id)
        return header

    def page(self, *, limit: int, token: str | None) -> tuple[list[dict[str, Any]], str | None]:
        """One page of the tenant's datasets, newest first.

        Raises:
            InvalidRequest: a ``next_token`` this listing did not return (another tenant's included).
        """
        query: dict[str, Any] = {
            "KeyConditionExpression": "pk = :t AND begins_with(sk, :h)",
            "ExpressionAttributeValues": {":t": self.scope.name, ":h": HEADER},
            "ScanIndexForward": False,
            "Limit": limit,
        }
        start = decode_token(token)
        if start is not None:
            sk = start.get("sk")
            if (
                set(start) != TOKEN_KEY
                or start.get("pk") != self.scope.name
                or not isinstance(sk, str)
                or not is_dataset_id(sk.removeprefix(HEADER))
            ):
                raise InvalidRequest('"next_token" is not a token this listing returned: start again without it')
            query["ExclusiveStartKey"] = start
        found = self.table.query(**query)
        return [plain(item) for item in found.get("Items", [])], encode_token(found.get("LastEvaluatedKey"))

    def restart(self, dataset_id: str, *, seen_step: int, source: dict[str, Any]) -> dict[str, Any]:
        """Start another registration of a READY or FAILED dataset from ``source``, as step ``seen_step + 1``.

        Raises:
            DatasetNotReady: it is being registered (another request started it first).
        """
        applied_ = applied(
            self.table.update_item,
            Key=self._header_key(dataset_id),
            UpdateExpression=(
                "SET #status = :registering, step = :next, #source = :source, keys_read = :zero, updated_at = :now "
                "REMOVE #cursor, reason, finished_at"
            ),
            ConditionExpression="attribute_exists(pk) AND #status IN (:ready, :failed) AND step = :seen",
            ExpressionAttributeNames={"#status": "status", "#source": "source", "#cursor": "cursor"},
            ExpressionAttributeValues={
                ":registering": REGISTERING,
                ":ready": READY,
                ":failed": FAILED,
                ":next": seen_step + 1,
                ":seen": seen_step,
                ":source": dynamo(source),
                ":zero": 0,
                ":now": now_iso(),
            },
        )
        if not applied_:
            raise registering(dataset_id)
        return self.get(dataset_id)

    def mark_added(self, dataset_id: str, *, source: dict[str, Any] | None, added: int) -> None:
        """Count ``added`` new images on a dataset that is not being registered; with ``source``, it becomes the
        dataset's latest registration (READY, any earlier failure cleared).

        Raises:
            DatasetNotReady: it is being registered (the registration's own count would race with this one).
        """
        names = {"#status": "status"}
        values: dict[str, Any] = {":added": added, ":now": now_iso(), ":registering": REGISTERING}
        update = "ADD images :added SET updated_at = :now"
        if source is not None:
            update += ", #status = :ready, #source = :source, finished_at = :now REMOVE reason"
            names["#source"] = "source"
            values.update({":ready": READY, ":source": dynamo(source)})
        if not applied(
            self.table.update_item,
            Key=self._header_key(dataset_id),
            UpdateExpression=update,
            ConditionExpression="attribute_exists(pk) AND #status <> :registering",
            ExpressionAttributeNames=names,
            ExpressionAttributeValues=values,
        ):
            raise registering(dataset_id)

    def advance(self, dataset_id: str, *, step: int, cursor: dict[str, Any], keys_read: int) -> bool:
        """End registration step ``step`` short of the end: the next starts at ``cursor``. False when the dataset has
        moved on (another worker ended the step, it was deleted or registered again)."""
        return applied(
            self.table.update_item,
            Key=self._header_key(dataset_id),
            UpdateExpression="SET step = :next, #cursor = :cursor, updated_at = :now ADD keys_read :read",
            ConditionExpression="#status = :registering AND step = :step",
            ExpressionAttributeNames={"#status": "status", "#cursor": "cursor"},
            ExpressionAttributeValues={
                ":registering": REGISTERING,
                ":step": step,
                ":next": step + 1,
                ":cursor": dynamo(cursor),
                ":read": keys_read,
                ":now": now_iso(),
            },
        )

    def advance_progress(self, dataset_id: str, *, step: int, keys_read: int) -> None:
        """Add ``keys_read`` to the running registration's count of keys read (progress only)."""
        applied(
            self.table.update_item,
            Key=self._header_key(dataset_id),
            UpdateExpression="SET updated_at = :now ADD keys_read :read",
            ConditionExpression="#status = :registering AND step = :step",
            ExpressionAttributeNames={"#status": "status"},
            ExpressionAttributeValues={
                ":registering": REGISTERING,
                ":step": step,
                ":read": keys_read,
                ":now": now_iso(),
            },
        )

    def finish(
        self, dataset_id: str, *, step: int, status: str, images: int, keys_read: int, reason: str | None
    ) -> bool:
        """End the registration at step ``step`` as READY or FAILED (with ``reason``), with its exact image count.
        False when the dataset has moved on."""
        values: dict[str, Any] = {
            ":registering": REGISTERING,
            ":step": step,
            ":status": status,
            ":images": images,
            ":read": keys_read,
            ":now": now_iso(),
        }
        update = "SET #status = :status, images = :images, updated_at = :now, finished_at = :now"
        if reason is not None:
            update += ", reason = :reason"
            values[":reason"] = reason
        return applied(
            self.table.update_item,
            Key=self._header_key(dataset_id),
            UpdateExpression=f"{update} ADD keys_read :read REMOVE #cursor",
            ConditionExpression="#status = :registering AND step = :step",
            ExpressionAttributeNames={"#status": "status", "#cursor": "cursor"},
            ExpressionAttributeValues=values,
        )

    def delete(self, dataset_id: str) -> dict[str, Any]:
        """Remove a dataset's header and free its name; its image entries are left for :meth:`purge_images`.

        Returns:
            The header as it was.

        Raises:
            DatasetNotFound: no such dataset (or another tenant's).
            DatasetNotReady: it is being registered.
        """
        header = self.get(dataset_id)
        if header["status"] == REGISTERING:
            raise registering(dataset_id)
        if not applied(
            self.table.delete_item,
            Key=self._header_key(dataset_id),
            ConditionExpression="attribute_exists(pk) AND #status <> :registering",
            ExpressionAttributeNames={"#status": "status"},
            ExpressionAttributeValues={":registering": REGISTERING},
        ):
            if self.find(dataset_id) is None:
                raise _missing(dataset_id)
            raise registering(dataset_id)
        applied(
            self.table.delete_item,
            Key={"pk": self.scope.name, "sk": f"{NAME}{header['name']}"},
            ConditionExpression="dataset_id = :d",
            ExpressionAttributeValues={":d": dataset_id},
        )
        return header

    # -- images ---------------------------------------------------------------------------------------------------
    def image(self, dataset_id: str, image_id: str) -> dict[str, Any]:
        """One image of the dataset: ``{"image_id", "key", "added_at"}``.

        Raises:
            ImageNotFound: the dataset has no such image (a malformed id included).
        """
        if not is_image_id(image_id):
            raise _no_image(dataset_id, image_id)
        found = self.table.get_item(Key={"pk": self.images_partition(dataset_id), "sk": image_id}).get("Item")
        if not found:
            raise _no_image(dataset_id, image_id)
        return image_entry(found)

    def images_page(self, dataset_id: str, *, limit: int, token: str | None) -> tuple[list[dict[str, Any]], str | None]:
        """One page of the dataset's images, in image id order.

        Raises:
            InvalidRequest: a ``next_token`` this listing did not return.
        """
        partition = self.images_partition(dataset_id)
        query: dict[str, Any] = {
            "KeyConditionExpression": "pk = :p",
            "ExpressionAttributeValues": {":p": partition},
            "Limit": limit,
        }
        start = decode_token(token)
        if start is not None:
            if set(start) != TOKEN_KEY or start.get("pk") != partition or not is_image_id(start.get("sk")):
                raise InvalidRequest('"next_token" is not a token this listing returned: start again without it')
            query["ExclusiveStartKey"] = start
        found = self.table.query(**query)
        return [image_entry(item) for item in found.get("Items", [])], encode_token(found.get("LastEvaluatedKey"))

    def keys_of(self, dataset_id: str, image_ids: list[str]) -> tuple[dict[str, str], list[str]]:
        """The S3 keys of the named images: ``({image id: key}, [ids the dataset has no image of, in order])``."""
        partition = self.images_partition(dataset_id)
        wanted = list(dict.fromkeys(image_ids))
        pending = [image_id for image_id in wanted if is_image_id(image_id)]
        found: dict[str, str] = {}
        client = self.table.meta.client
        for start in range(0, len(pending), GET_BATCH):
            request: dict[str, Any] = {
                self.table.name: {
                    "Keys": [{"pk": partition, "sk": image_id} for image_id in pending[start : start + GET_BATCH]],
                    "ProjectionExpression": "sk, #k",
                    "ExpressionAttributeNames": {"#k": "key"},
                    "ConsistentRead": True,
                }
            }
            while request:
                answer = client.batch_get_item(RequestItems=request)
                for item in answer.get("Responses", {}).get(self.table.name, []):
                    found[str(item["sk"])] = str(item["key"])
                request = answer.get("UnprocessedKeys") or {}
        return found, [image_id for image_id in wanted if image_id not in found]

    def iter_keys(self, dataset_id: str) -> Iterator[str]:
        """Every image key of the dataset, in image id order, streamed page by page."""
        query: dict[str, Any] = {
            "KeyConditionExpression": "pk = :p",
            "ExpressionAttributeValues": {":p": self.images_partition(dataset_id)},
            "ProjectionExpression": "#k",
            "ExpressionAttributeNames": {"#k": "key"},
        }
        while True:
            page = self.table.query(**query)
            for item in page.get("Items", []):
                yield str(item["key"])
            if "LastEvaluatedKey" not in page:
                return
            query["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def add_images(self, dataset_id: str, keys: Iterable[str], *, source: dict[str, Any] | None) -> list[str]:
        """Add images by key (inline keys, uploads): one conditional write each, so the count moves by the images
        that are new; an image already there keeps its entry. ``source`` as :meth:`mark_added`.

        Returns:
            The image id of each key, in order.

        Raises:
            DatasetNotReady: the dataset is being registered.
        """
        partition = self.images_partition(dataset_id)
        now = now_iso()

        def add(key: str) -> bool:
            return applied(
                self.table.put_item,
                Item={"pk": partition, "sk": image_id_of(dataset_id, key), "key": key, "added_at": now},
                ConditionExpression="attribute_not_exists(pk)",
            )

        listed = list(keys)
        with ThreadPoolExecutor(max_workers=WRITE_THREADS, thread_name_prefix="dataset-add") as pool:
            added = sum(pool.map(add, dict.fromkeys(listed)))
        self.mark_added(dataset_id, source=source, added=added)
        return [image_id_of(dataset_id, key) for key in listed]

    def writer(self, dataset_id: str) -> ImageWriter:
        """A buffered writer of image entries (BatchWriteItem, 25 at a time), for a registration's stream of keys."""
        return ImageWriter(self.table, dataset_id, self.images_partition(dataset_id))

    def count_images(self, dataset_id: str) -> int:
        """How many images the dataset has, counted from its entries (one query page per megabyte of them)."""
        query: dict[str, Any] = {
            "KeyConditionExpression": "pk = :p",
            "ExpressionAttributeValues": {":p": self.images_partition(dataset_id)},
            "Select": "COUNT",
        }
        total = 0
        while True:
            page = self.table.query(**query)
            total += int(page.get("Count", 0))
            if "LastEvaluatedKey" not in page:
                return total
            query["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def purge_images(self, dataset_id: str, *, keep_going: Any) -> tuple[int, bool]:
        """Delete the image entries of a deleted dataset, a page at a time while ``keep_going()`` says so.

        Returns:
            (entries deleted, whether none is left).
        """
        query: dict[str, Any] = {
            "KeyConditionExpression": "pk = :p",
            "ExpressionAttributeValues": {":p": self.images_partition(dataset_id)},
            "ProjectionExpression": "pk, sk",
        }
        removed = 0
        with self.table.batch_writer() as batch:
            while keep_going():
                page = self.table.query(**query)
                for item in page.get("Items", []):
                    batch.delete_item(Key={"pk": item["pk"], "sk": item["sk"]})
                    removed += 1
                if "LastEvaluatedKey" not in page:
                    return removed, True
                query["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        return removed, False


class ImageWriter:
    """Image entries written 25 at a time (boto3's batch writer, which re-sends what DynamoDB left unprocessed); the
    same key twice in one batch is written once."""

    def __init__(self, table: Any, dataset_id: str, partition: str) -> None:
        self.dataset_id = dataset_id
        self.partition = partition
        self.now = now_iso()
        self._batch = table.batch_writer(overwrite_by_pkeys=["pk", "sk"])
        self.written = 0

    def __enter__(self) -> ImageWriter:
        self._batch.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._batch.__exit__(*exc)

    def add(self, key: str) -> str:
        image_id = image_id_of(self.dataset_id, key)
        self._batch.put_item(Item={"pk": self.partition, "sk": image_id, "key": key, "added_at": self.now})
        self.written += 1
        return image_id


def registering(dataset_id: str) -> DatasetNotReady:
    """The answer to what a registering dataset cannot do yet."""
    return DatasetNotReady(
        f"dataset {dataset_id} is being registered: wait until GET /datasets/{dataset_id} says READY or FAILED",
        dataset_id=dataset_id,
        status=REGISTERING,
    )


def image_entry(item: dict[str, Any]) -> dict[str, Any]:
    """An image item as the API shows it."""
    return {"image_id": str(item["sk"]), "key": str(item["key"]), "added_at": item.get("added_at")}


def dataset_document(header: dict[str, Any], links: dict[str, str]) -> dict[str, Any]:
    """A dataset's header as the API shows it (GET /datasets/{id}, the listing, POST /datasets)."""
    document: dict[str, Any] = {
        "dataset_id": header["dataset_id"],
        "name": header["name"],
        "status": header["status"],
        "source": dict(header.get("source") or {}),
        "images": int(header.get("images", 0)),
        "keys_read": int(header.get("keys_read", 0)),
        "created_at": header.get("created_at"),
        "updated_at": header.get("updated_at"),
        "finished_at": header.get("finished_at"),
        "links": links,
    }
    if header.get("reason"):
        document["reason"] = header["reason"]
    return document
