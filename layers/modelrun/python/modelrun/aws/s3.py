"""S3 adapter for images referenced by bucket and key, scoped to the buckets of the stack and to a tenant's space."""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

from modelrun.aws.errors import error_code
from modelrun.errors import ImageNotFound, ImageTooLarge, InvalidRequest
from modelrun.tenants import Tenant

_MISSING = {"NoSuchKey", "404", "NotFound", "NoSuchBucket"}


class ImageStore:
    """Reads image objects from the buckets this function may use (least privilege mirrored in code).

    A tenant's view (:meth:`for_tenant`) reads only keys in that tenant's space: another tenant's key answers
    ImageNotFound, exactly as a missing object. The unscoped store is the workers' (keys checked at submit).
    """

    def __init__(self, s3: Any, allowed_buckets: set[str], tenant: Tenant | None = None) -> None:
        self._s3 = s3
        self._allowed = frozenset(allowed_buckets)
        self.tenant = tenant

    def for_tenant(self, tenant: Tenant) -> ImageStore:
        """This store, reading only the tenant's keys (same client)."""
        return ImageStore(self._s3, set(self._allowed), tenant)

    def read(self, bucket: str, key: str, *, max_bytes: int) -> bytes:
        """The object's bytes.

        Raises:
            InvalidRequest: a bucket of another stack.
            ImageNotFound: no such object, or (for a tenant's view) a key outside the tenant's space.
            ImageTooLarge: an object over ``max_bytes``.
        """
        if bucket not in self._allowed:
            raise InvalidRequest(
                f"bucket {bucket!r} is not readable by this stack: put the image in {', '.join(sorted(self._allowed))}",
            )
        if self.tenant is not None and not self.tenant.owns(key):
            raise ImageNotFound(f"no object s3://{bucket}/{key}: check the bucket and key")
        try:
            obj = self._s3.get_object(Bucket=bucket, Key=key)
        except ClientError as exc:
            code = error_code(exc)
            if code in _MISSING:
                raise ImageNotFound(f"no object s3://{bucket}/{key}: check the bucket and key") from exc
            raise
        size = int(obj.get("ContentLength", 0))
        if size > max_bytes:
            obj["Body"].close()
            raise ImageTooLarge(f"the image is {size} bytes; the limit is {max_bytes} bytes")
        data: bytes = obj["Body"].read()
        return data
