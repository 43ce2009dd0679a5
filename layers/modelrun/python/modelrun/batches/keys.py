"""Where a batch's objects live in the images bucket: every key of a batch is built here, in its tenant's space.

========================  ==============================================  ========================================
object                    default tenant                                  tenant ``acme``
========================  ==============================================  ========================================
keys file, attempt n      ``jobs/{id}/keys.jsonl`` (n > 1: ``keys-n``)    ``tenants/acme/jobs/{id}/keys.jsonl``
chunk manifest            ``jobs/{id}/manifest.json`` (``manifest-n``)    ``tenants/acme/jobs/{id}/manifest.json``
results file              ``results/{id}/results-{n}.jsonl``              ``tenants/acme/results/{id}/...``
error report              ``results/{id}/errors-{n}.csv|jsonl``           ``tenants/acme/results/{id}/...``
mask (frame f)            ``results/{id}/masks/{item}[.f{f}].png``        ``tenants/acme/results/{id}/masks/...``
full detection list       ``results/{id}/detections/{item}[.f{f}].json``  ``tenants/acme/results/{id}/...``
========================  ==============================================  ========================================

The default tenant's space is the bucket outside ``tenants/`` (:attr:`modelrun.tenants.Tenant.prefix`), so its
layout is the one a single-tenant stack has always had. A batch's objects are in its owner's space, where the owner
may name them again (a results file as a list, a mask as ``image_s3``) and no other tenant may.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from modelrun.tenants import Tenant

JOBS: Final = "jobs"
RESULTS: Final = "results"


@dataclass(frozen=True)
class BatchKeys:
    """The object keys of one batch, in its tenant's space.

    Attributes:
        tenant: the batch's owner.
        batch_id: the batch.
    """

    tenant: Tenant
    batch_id: str

    @classmethod
    def of_job(cls, job: Mapping[str, Any]) -> BatchKeys:
        """The keys of a job row, which always names its tenant (:meth:`JobStore.create` stamps it).

        Raises:
            KeyError: the row has no ``tenant`` (it was not created by a tenant's store).
        """
        return cls(Tenant(str(job["tenant"])), str(job["batch_id"]))

    def keys_file(self, attempt: int = 1) -> str:
        """The batch's keys, one JSON line per item (a later attempt lists only the items it runs again)."""
        return self._jobs(f"keys{_attempt(attempt)}.jsonl")

    def manifest(self, attempt: int = 1) -> str:
        """The attempt's chunk descriptors, which the state machine's Map reads."""
        return self._jobs(f"manifest{_attempt(attempt)}.json")

    def results_file(self, attempt: int) -> str:
        return self._results(f"results-{attempt}.jsonl")

    def error_report(self, attempt: int, extension: str) -> str:
        """The error report file of an attempt: ``extension`` is ``csv`` or ``jsonl``."""
        return self._results(f"errors-{attempt}.{extension}")

    def mask(self, item: int, frame: int | None = None) -> str:
        """An item's mask, or with the ``all`` frame policy one frame's mask."""
        return self._results("masks", f"{item}{_frame(frame)}.png")

    def detections(self, item: int, frame: int | None = None) -> str:
        """The whole detection list of an item (or of one of its frames) whose outcome keeps only the best."""
        return self._results("detections", f"{item}{_frame(frame)}.json")

    def _jobs(self, *parts: str) -> str:
        return self.tenant.key(JOBS, self.batch_id, *parts)

    def _results(self, *parts: str) -> str:
        return self.tenant.key(RESULTS, self.batch_id, *parts)


def _attempt(attempt: int) -> str:
    return "" if attempt == 1 else f"-{attempt}"


def _frame(frame: int | None) -> str:
    return "" if frame is None else f".f{frame}"
