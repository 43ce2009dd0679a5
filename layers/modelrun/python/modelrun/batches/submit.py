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
from modelrun.errors import ImageNotFound
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

    def for_tenant(self, tenant: Tenant) -> BatchSubmitter:
        """This submitter for one tenant (same clients): its sources and its jobs are the tenant's."""
        return replace(self, store=self.store.for_tenant(tenant), tenant=tenant)

    def keys(self, request: BatchRequest) -> Iterator[str]:
        """The request's keys; a prefix listing or a list file stops, refused, when the invocation runs short of
        time (an inline list is already in memory).

        For a tenant, a prefix lists only the tenant's keys and a list file outside its space does not exist, exactly
        as missing ones; a key outside it, inline or in a list, refuses the batch (ImageNotFound, naming it)."""
        if request.source == "images":
            return self._own(inline_keys(request.value))
        if request.source == "s3_prefix":
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
            }
        )
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
        )
        logger.info(
            "batch submitted",
            tenant=self.tenant.name,
            batch_id=batch_id,
            total=summary.total,
            chunks=summary.chunks,
            model=model,
        )
        return {
            "batch_id": batch_id,
            "status": "QUEUED",
            "model": model,
            "version": version,
            "total": summary.total,
            "execution_arn": execution_arn,
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
) -> str:
    """Start the attempt's execution, named by the batch id (``-a<n>`` from the second attempt on).

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
