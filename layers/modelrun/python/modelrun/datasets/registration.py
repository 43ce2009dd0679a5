"""Registering a dataset's images, and removing a deleted dataset's entries: the request side and the worker side.

POST /datasets checks the source while the client waits (the prefix has an object of the caller's, the list file
exists and is the caller's, inline keys are the caller's), then:

* inline keys (at most 1,000) and an empty dataset are written at once: the answer is READY;
* a prefix or a list file can name millions of images: the answer is REGISTERING, and a message on the DatasetQueue
  asks DatasetWorkerFunction to register it. The worker streams the source exactly as a batch submit does (pages of
  ListObjectsV2, or the list file line by line: ``modelrun.batches.manifest``) into batched writes of image entries,
  holding one page at a time. Before its invocation runs out of time it records where it stopped (the last key
  listed, or the number of list lines read) as the next *step* and sends the next message, so a registration of any
  size goes on step by step. The last step counts the entries and marks the dataset READY; a source that turns out
  bad (a line that is not a key, a key outside the caller's space) marks it FAILED with the reason.

Why a queue and not the function invoking itself asynchronously: SQS keeps the message while a step runs and
delivers it again when the worker fails (a crash, a timeout, throttling), its redrive policy parks a message that
keeps failing, the same event source runs on the local stack (``modelrun_local.sqs``) and on AWS, and the worker
needs no permission to invoke itself.

Messages may come twice, late or out of order: each names the step it is for, and the header's ``step`` says which
step is due. A message of another step is dropped; a message delivered again after its step was already recorded
(the worker died between recording the step and sending the next message) sends that next message again. Writing an
image entry twice writes the same item (its id comes from the key), so a step that runs twice changes nothing.

DELETE /datasets/{id} removes the header at once (the dataset answers 404 from then on) and sends a ``purge``
message: the worker deletes the image entries in steps of its own. Prediction entries and the S3 objects stay.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from itertools import islice
from typing import Any, Final

from aws_lambda_powertools import Logger
from botocore.exceptions import ClientError

from modelrun.aws.errors import error_code
from modelrun.batches.failures import as_transient, is_transient
from modelrun.batches.manifest import DEADLINE_CHECK_EVERY, file_keys, lambda_max_remaining_ms, prefix_keys
from modelrun.datasets.ids import new_dataset_id
from modelrun.datasets.requests import DatasetRequest
from modelrun.datasets.store import FAILED, READY, REGISTERING, DatasetStore, registering
from modelrun.errors import ImageNotFound, ModelrunError
from modelrun.tenants import Tenant

logger = Logger(child=True)

REGISTER: Final = "register"
PURGE: Final = "purge"
# A step stops once less than this is left of the invocation: enough to flush the last writes, count the entries of
# a dataset of a few million images and record the step.
STEP_MARGIN_MS: Final = 120_000
# While a step runs, the header's keys_read is brought up to date every this many keys (progress for GET).
PROGRESS_EVERY: Final = 10_000
# POST /datasets looks for one of the caller's objects under a prefix in at most this many listing pages (a short
# prefix of the default tenant may list other tenants' keys first); past that, the worker decides.
CHECK_PAGES: Final = 5
MAX_REASON_CHARS: Final = 500


def own_listing_prefix(tenant: Tenant, prefix: str) -> str | None:
    """The prefix to list for ``prefix`` within the tenant's space: the prefix itself when it lies in the space, the
    space itself when the prefix is shorter (``tenants/`` for tenant ``a`` lists ``tenants/a/``), None when no key
    under it can be the tenant's. The default tenant's space is everything outside ``tenants/``: a short prefix of it
    (``t``) also lists other spaces' keys, which the listing skips key by key."""
    if tenant.owns(prefix):
        return prefix
    if tenant.prefix and tenant.prefix.startswith(prefix):
        return tenant.prefix
    return None


@dataclass
class Registrations:
    """Starts registrations (the API) and runs their steps (the worker); the same object on both sides.

    Attributes:
        store: the unscoped dataset store; each operation takes the tenant's view.
        s3: a boto3 S3 client for the images bucket.
        bucket: the images bucket.
        sqs: a boto3 SQS client.
        queue_url: the DatasetQueue.
        max_receives: the queue's maxReceiveCount: the last delivery of a failing step marks the dataset FAILED.
        remaining_ms: the invocation's time left (set per invocation from the Lambda context).
    """

    store: DatasetStore
    s3: Any
    bucket: str
    sqs: Any
    queue_url: str
    max_receives: int = 5
    remaining_ms: Callable[[], int] = lambda_max_remaining_ms
    margin_ms: int = STEP_MARGIN_MS
    check_every: int = DEADLINE_CHECK_EVERY
    progress_every: int = PROGRESS_EVERY
    tenant: Tenant | None = field(default=None)

    def for_tenant(self, tenant: Tenant) -> Registrations:
        return replace(self, store=self.store.for_tenant(tenant), tenant=tenant)

    # -- the request side ---------------------------------------------------------------------------------------
    def submit(self, request: DatasetRequest) -> tuple[dict[str, Any], bool]:
        """Create the dataset (or take the one with this name) and register the request's images.

        Returns:
            (the dataset's header, whether it was created by this request).

        Raises:
            ImageNotFound: the prefix has no object of the caller's, the list file is missing or not the caller's,
                or an inline key is outside the caller's space.
            DatasetNotReady: the dataset of that name is being registered.
        """
        store = self.store
        tenant = store.scope
        self.check_source(tenant, request)
        dataset_id = store.claim_name(request.name, new_dataset_id())
        header = store.find(dataset_id)
        created = header is None
        source = request.source_record()
        if header is None:
            header = store.create(dataset_id, request.name, source, REGISTERING if request.runs_async else READY)
        elif header["status"] == REGISTERING:
            raise registering(dataset_id)
        elif request.runs_async:
            header = store.restart(dataset_id, seen_step=int(header["step"]), source=source)
        if request.runs_async:
            self._start(tenant, dataset_id, int(header["step"]))
            logger.info("dataset registration queued", tenant=tenant.name, dataset_id=dataset_id, step=header["step"])
            return header, created
        if request.source == "images":
            store.add_images(dataset_id, request.value, source=source)
        elif not created:
            store.mark_added(dataset_id, source=source, added=0)
        logger.info("dataset registered", tenant=tenant.name, dataset_id=dataset_id, source=request.source)
        return store.get(dataset_id), created

    def check_source(self, tenant: Tenant, request: DatasetRequest) -> None:
        """Refuse a source that names nothing of the caller's, while the client waits: 404 ``image_not_found``,
        the same for a missing object and for another tenant's."""
        if request.source == "images":
            for position, key in enumerate(request.value):
                if not tenant.owns(key):
                    raise ImageNotFound(
                        f"images[{position}]: no object s3://{self.bucket}/{key} for this API key "
                        f"(its images are under {tenant.prefix or 'any key outside tenants/'})"
                    )
        elif request.source == "manifest":
            if not tenant.owns(request.value) or not self._exists(request.value):
                raise ImageNotFound(f"no manifest file s3://{self.bucket}/{request.value}")
        elif request.source == "s3_prefix" and not self._has_own_object(tenant, request.value):
            raise ImageNotFound(
                f"no object of this API key under s3://{self.bucket}/{request.value}: check the prefix "
                f"(its images are under {tenant.prefix or 'any key outside tenants/'})"
            )

    def _exists(self, key: str) -> bool:
        try:
            self.s3.head_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if error_code(exc) in ("404", "NoSuchKey", "NotFound"):
                return False
            raise
        return True

    def _has_own_object(self, tenant: Tenant, prefix: str) -> bool:
        listed = own_listing_prefix(tenant, prefix)
        if listed is None:
            return False
        paginator = self.s3.get_paginator("list_objects_v2")
        pages = paginator.paginate(Bucket=self.bucket, Prefix=listed, PaginationConfig={"PageSize": 1000})
        for number, page in enumerate(pages, start=1):
            if any(not entry["Key"].endswith("/") and tenant.owns(entry["Key"]) for entry in page.get("Contents", [])):
                return True
            if number >= CHECK_PAGES:
                return True  # only other spaces' keys so far: the worker lists the rest
        return False

    def delete(self, dataset_id: str) -> dict[str, Any]:
        """Remove the dataset (404 from now on) and queue the removal of its image entries.

        Returns:
            The header it had.
        """
        header = self.store.delete(dataset_id)
        self._send({"action": PURGE, "tenant": self.store.scope.name, "dataset_id": dataset_id})
        logger.info("dataset deleted", tenant=self.store.scope.name, dataset_id=dataset_id)
        return header

    def _start(self, tenant: Tenant, dataset_id: str, step: int) -> None:
        """Queue the first step of a registration; one that cannot be queued is FAILED at once (nothing would run
        it), saying to register again."""
        try:
            self._send_step(tenant, dataset_id, step)
        except Exception as exc:
            reason = "the registration could not be queued: register again (POST /datasets with the same name)"
            self.store.for_tenant(tenant).finish(
                dataset_id, step=step, status=FAILED, images=0, keys_read=0, reason=reason
            )
            if is_transient(exc):
                raise as_transient(exc, f"queueing the registration of {dataset_id}") from exc
            raise

    def _send_step(self, tenant: Tenant, dataset_id: str, step: int) -> None:
        self._send({"action": REGISTER, "tenant": tenant.name, "dataset_id": dataset_id, "step": step})

    def _send(self, message: dict[str, Any]) -> None:
        self.sqs.send_message(QueueUrl=self.queue_url, MessageBody=json.dumps(message))

    # -- the worker side ----------------------------------------------------------------------------------------
    def handle(self, message: dict[str, Any], *, receive_count: int) -> dict[str, Any]:
        """Run what a DatasetQueue message asks: one registration step, or removing a deleted dataset's entries.

        Raises:
            Exception: a failure worth another delivery (the message comes back after its visibility timeout).
        """
        tenant = Tenant(str(message["tenant"]))
        dataset_id = str(message["dataset_id"])
        scoped = self.for_tenant(tenant)
        if message.get("action") == PURGE:
            return scoped.purge(dataset_id)
        return scoped.step(dataset_id, int(message["step"]), receive_count=receive_count)

    def step(self, dataset_id: str, step: int, *, receive_count: int) -> dict[str, Any]:
        """Run registration step ``step`` of the dataset, if it is the one due."""
        outcome = {"dataset_id": dataset_id, "step": step}
        header = self.store.find(dataset_id)
        if header is None or header["status"] != REGISTERING:
            return {**outcome, "done": "not registering"}
        due = int(header["step"])
        if due != step:
            if due == step + 1 and receive_count > 1:
                # This step was recorded, then the worker died before the next message went out.
                self._send_step(self.store.scope, dataset_id, due)
                return {**outcome, "done": "next step sent again"}
            return {**outcome, "done": "stale"}
        try:
            return {**outcome, **self._run(header, step)}
        except ModelrunError as exc:
            if exc.status >= 500:
                raise
            return {**outcome, **self._fail(header, step, exc.message, code=exc.code)}
        except Exception as exc:
            if receive_count < self.max_receives:
                logger.warning("registration step failed", dataset_id=dataset_id, step=step, error=type(exc).__name__)
                raise
            reason = f"the registration failed {receive_count} times (last: {type(exc).__name__}): register again"
            return {**outcome, **self._fail(header, step, reason, code="retries_exhausted")}

    def _fail(self, header: dict[str, Any], step: int, reason: str, *, code: str) -> dict[str, Any]:
        dataset_id = header["dataset_id"]
        images = self.store.count_images(dataset_id)
        self.store.finish(
            dataset_id, step=step, status=FAILED, images=images, keys_read=0, reason=reason[:MAX_REASON_CHARS]
        )
        logger.info("dataset registration failed", tenant=self.store.scope.name, dataset_id=dataset_id, code=code)
        return {"done": FAILED, "images": images}

    def _run(self, header: dict[str, Any], step: int) -> dict[str, Any]:
        dataset_id = header["dataset_id"]
        source = dict(header.get("source") or {})
        cursor = dict(header.get("cursor") or {})
        started = time.perf_counter()
        read = 0
        reported = 0
        last_key: str | None = cursor.get("after")
        out_of_time = False
        with self.store.writer(dataset_id) as writer:
            for key in self._keys(source, cursor):
                if read and read % self.check_every == 0:
                    if self.remaining_ms() < self.margin_ms:
                        out_of_time = True
                        break
                    if read - reported >= self.progress_every:
                        self.store.advance_progress(dataset_id, step=step, keys_read=read - reported)
                        reported = read
                writer.add(key)
                last_key = key
                read += 1
        fields: dict[str, Any] = {"keys_read": read, "seconds": round(time.perf_counter() - started, 1)}
        if out_of_time:
            if "s3_prefix" in source:
                next_cursor: dict[str, Any] = {"after": last_key}
            else:
                next_cursor = {"skip": int(cursor.get("skip", 0)) + read}
            if self.store.advance(dataset_id, step=step, cursor=next_cursor, keys_read=read - reported):
                self._send_step(self.store.scope, dataset_id, step + 1)
            logger.info("registration step done", extra={"dataset_id": dataset_id, "step": step, **fields})
            return {"done": "step", **fields}
        images = self.store.count_images(dataset_id)
        self.store.finish(dataset_id, step=step, status=READY, images=images, keys_read=read - reported, reason=None)
        logger.info(
            "dataset ready",
            extra={"tenant": self.store.scope.name, "dataset_id": dataset_id, "images": images, **fields},
        )
        return {"done": READY, "images": images, **fields}

    def _keys(self, source: dict[str, Any], cursor: dict[str, Any]) -> Iterator[str]:
        """The source's keys from the cursor on: the caller's own under a prefix (others' skipped), or the list
        file's (a key outside the caller's space is ImageNotFound, naming its position in the file)."""
        tenant = self.store.scope
        if "s3_prefix" in source:
            listed = own_listing_prefix(tenant, str(source["s3_prefix"]))
            if listed is None:
                return
            for key in prefix_keys(self.s3, self.bucket, listed, start_after=cursor.get("after")):
                if tenant.owns(key):
                    yield key
            return
        manifest = str(source["manifest"])
        skip = int(cursor.get("skip", 0))
        for position, key in enumerate(islice(file_keys(self.s3, self.bucket, manifest), skip, None), start=skip):
            if not tenant.owns(key):
                raise ImageNotFound(
                    f"key {position + 1} of {manifest} is not an object of this API key "
                    f"(its images are under {tenant.prefix or 'any key outside tenants/'}): fix the list and register "
                    "again"
                )
            yield key

    def purge(self, dataset_id: str) -> dict[str, Any]:
        """Delete a deleted dataset's image entries until done or short of time (then queue the rest)."""
        if self.store.find(dataset_id) is not None:
            return {"dataset_id": dataset_id, "done": "exists"}  # a dataset is never re-created under its id
        removed, done = self.store.purge_images(dataset_id, keep_going=lambda: self.remaining_ms() >= self.margin_ms)
        if not done:
            self._send({"action": PURGE, "tenant": self.store.scope.name, "dataset_id": dataset_id})
        logger.info("dataset entries removed", dataset_id=dataset_id, removed=removed, done=done)
        return {"dataset_id": dataset_id, "removed": removed, "done": done}
