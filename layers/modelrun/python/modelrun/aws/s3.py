"""S3 adapter for images referenced by bucket and key."""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

from modelrun.aws.errors import error_code
from modelrun.errors import ImageNotFound, ImageTooLarge, InvalidRequest

_MISSING = {"NoSuchKey", "404", "NotFound", "NoSuchBucket"}


class ImageStore:
    """Reads image objects from the buckets this function may use (least privilege mirrored in code)."""

    def __init__(self, s3: Any, allowed_buckets: set[str]) -> None:
        self._s3 = s3
        self._allowed = frozenset(allowed_buckets)

    def read(self, bucket: str, key: str, *, max_bytes: int) -> bytes:
        if bucket not in self._allowed:
            raise InvalidRequest(
                f"bucket {bucket!r} is not readable by this stack: put the image in {', '.join(sorted(self._allowed))}",
            )
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
