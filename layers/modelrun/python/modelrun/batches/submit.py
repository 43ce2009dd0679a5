"""Submitting a batch: write its keys and chunk files, register the job, start the execution of an attempt."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from aws_lambda_powertools import Logger

from modelrun.batches.failures import as_transient, is_transient
from modelrun.batches.faults import Faults
from modelrun.batches.keys import BatchKeys
from modelrun.batches.manifest import (
    DEADLINE_CHECK_EVERY,
    ManifestSummary,
    file_keys,
    inline_keys,
    lambda_max_remaining_ms,
    prefix_keys,
    until_deadline,
    write_manifest,
)
from modelrun.batches.requests import BatchLimits, BatchRequest, resolve_version
from modelrun.batches.store import RECOVERING, JobStore, new_batch_id
from modelrun.datasets.history import DatasetRun
from modelrun.datasets.store import READY, DatasetStore
from modelrun.errors import DatasetNotReady, ImageNotFound
from modelrun.models.registry import ModelRegistry
from modelrun.tenants import Tenant

logger = Logger(child=True)


@dataclass
class BatchSubmitter:
    """Submits batches for one tenant (:meth:`for_tenant`): it takes only the tenant's own objects as sources,
    writes the batch's files in the tenant's space and creates the job as the tenant's. The unscoped submitter is
    the base a function builds its tenants' views from; it submits nothing itself."""

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
    remaining_ms: Callable[[], int] = lambda_max_remaining_ms
    deadline_check_every: int = DEADLINE_CHECK_EVERY
    tenant: Tenant | None = None
    # The DatasetsTable, where batches over a dataset are submitted (POST /batches); upload triggers have none.
    datasets: DatasetStore | None = None

    def for_tenant(self, tenant: Tenant) -> BatchSubmitter:
        """This submitter for one tenant (same clients): its sources, datasets and jobs are the tenant's."""
        datasets = self.datasets.for_tenant(tenant) if self.datasets is not None else None
        return replace(self, store=self.store.for_tenant(tenant), tenant=tenant, datasets=datasets)

    def keys(self, request: BatchRequest) -> Iterator[str]:
        """The request's keys; a prefix listing or a list file stops, refused, when the invocation runs short of
        time (an inline list is already in memory).

        For a tenant, a prefix lists only the tenant's keys and a list file outside its space does not exist, exactly
        as missing ones; a key outside it, inline or in a list, refuses the batch (ImageNotFound, naming it). A
        dataset's keys are its image entries (registered in the tenant's space)."""
        if request.source == "images":
            return self._own(inline_keys(request.value))
        if request.source == "dataset_id":
            keys: Iterator[str] = self._dataset_keys(request)
        elif request.source == "s3_prefix":
            # Listed keys are filtered, not the prefix tested: a short prefix ("t") also lists other spaces' keys.
            listed = prefix_keys(self.s3, self.bucket, request.value)
            tenant = self.tenant
            keys = listed if tenant is None else (key for key in listed if tenant.owns(key))
        else:
            if self.tenant is not None and not self.tenant.owns(request.value):
                raise ImageNotFound(f"no manifest file s3://{self.bucket}/{request.value}")
            keys = self._own(file_keys(self.s3, self.bucket, request.value))
        return until_deadline(
            keys,
            self.remaining_ms,
            source=request.source,
            value=request.value,
            check_every=self.deadline_check_every,
        )

    def _dataset_keys(self, request: BatchRequest) -> Iterator[str]:
        """The keys of a dataset's images (all, or those ``image_ids`` names, in its order), streamed.

        Raises:
            DatasetNotFound: no such dataset of the tenant.
            DatasetNotReady: it is being registered, or its registration failed.
            ImageNotFound: some of ``image_ids`` name no image of it (all of those are in ``details``).
        """
        if self.datasets is None:
            raise RuntimeError("this submitter has no DatasetsTable: batches over a dataset come through the API")
        dataset_id = str(request.value)
        header = self.datasets.get(dataset_id)
        if header["status"] != READY:
            why = f": {header['reason']}" if header.get("reason") else ""
            raise DatasetNotReady(
                f"dataset {dataset_id} is {header['status']}{why}; a batch runs over a READY dataset "
                "(wait for it, or register its images again)",
                dataset_id=dataset_id,
                status=header["status"],
            )
        if request.image_ids is None:
            yield from self.datasets.iter_keys(dataset_id)
            return
        found, unknown = self.datasets.keys_of(dataset_id, request.image_ids)
        if unknown:
            shown = ", ".join(unknown[:5]) + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else "")
            raise ImageNotFound(
                f"dataset {dataset_id} has no image {shown}: GET /datasets/{dataset_id}/images lists its images",
                image_ids=unknown,
            )
        for image_id in request.image_ids:
            yield found[image_id]

    def _own(self, keys: Iterator[str]) -> Iterator[str]:
        if self.tenant is None:
            yield from keys
            return
        for position, key in enumerate(keys):
            if not self.tenant.owns(key):
                raise ImageNotFound(
                    f"image {position}: no object s3://{self.bucket}/{key} for this API key "
                    f"(its images are under {self.tenant.prefix or 'any key outside tenants/'})"
                )
            yield key

    def submit(self, request: BatchRequest) -> dict[str, Any]:
        """Write the batch's manifest, then register the job and start its execution (named by the batch id).

        A source that cannot be read in time is refused (``TooManyToList``) before anything is written.

        Raises:
            RuntimeError: the submitter is the unscoped one (a wiring mistake: submit through ``for_tenant``).
        """
        if self.tenant is None:
            raise RuntimeError("an unscoped submitter submits nothing: use BatchSubmitter.for_tenant(tenant)")
        model = request.model or self.default_model
        version = resolve_version(self.registry, model, request.version)
        faults = Faults.parse(request.faults, allowed=self.allow_faults)
        batch = BatchKeys(self.tenant, new_batch_id())
        batch_id = batch.batch_id
        dataset_id = str(request.value) if request.source == "dataset_id" else None
        summary = write_manifest(
            self.s3,
            self.keys(request),
            bucket=self.bucket,
            batch=batch,
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
                **({"dataset_id": dataset_id} if dataset_id else {}),
            }
        )
        run = DatasetRun.start(self.tenant.name, dataset_id) if dataset_id else None
        execution_arn = start_execution(
            self.sfn,
            self.store,
            self.state_machine_arn,
            batch,
            model,
            version,
            summary,
            request.max_concurrency,
            1,
            faults,
            run,
        )
        logger.info(
            "batch submitted",
            tenant=self.tenant.name,
            batch_id=batch_id,
            total=summary.total,
            chunks=summary.chunks,
            model=model,
            dataset_id=dataset_id,
        )
        return {
            "batch_id": batch_id,
            "status": "QUEUED",
            "model": model,
            "version": version,
            "total": summary.total,
            "execution_arn": execution_arn,
            **({"dataset_id": dataset_id} if dataset_id else {}),
        }


def start_execution(
    sfn: Any,
    store: JobStore,
    state_machine_arn: str,
    batch: BatchKeys,
    model: str,
    version: str,
    manifest: ManifestSummary,
    concurrency: int,
    attempt: int,
    faults: Faults,
    dataset: DatasetRun | None = None,
) -> str:
    """Start the attempt's execution, named by the batch id (``-a<n>`` from the second attempt on). A batch over a
    dataset passes the attempt's :class:`DatasetRun` to every chunk (``dataset``; ``{}`` for any other batch).

    One that cannot start leaves the job RECOVERING (its files are written, nothing runs them), which
    POST /batches/{id}/retry accepts: the error is raised, as a transient one where it is.

    The input names the batch's tenant, which every chunk passes on to where it writes its result objects."""
    batch_id = batch.batch_id
    execution_input = {
        "batch_id": batch_id,
        "tenant": batch.tenant.name,
        "model": model,
        "version": version,
        "bucket": manifest.bucket,
        "manifest": {"bucket": manifest.bucket, "key": manifest.key},
        "keys_object": manifest.keys_key,
        "max_concurrency": concurrency,
        "attempt": attempt,
        "faults": faults.to_dict(),
        "dataset": dataset.to_event() if dataset is not None else {},
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
