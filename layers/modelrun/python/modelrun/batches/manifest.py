"""The list of images of a batch, streamed from where the user keeps it into two objects on S3.

A batch's images come from an inline list, every object under an S3 prefix, or a JSON-lines/CSV file on S3.
Whatever the source, keys flow one at a time into the batch's keys file (one JSON string per line, line *n* is item
*n*; where it lives: ``modelrun.batches.keys``) while chunk boundaries are noted as byte ranges of that file. The
chunk manifest is the list
of chunk descriptors ``{"index", "first_item", "count", "offset", "length"}`` that the state machine's Distributed
Map reads with ``ItemReader``; each iteration fetches its own keys with a ranged GET.

So memory holds one chunk's keys at most, in the submit function, in the state machine (whose items are a few
dozen bytes whatever the keys), in the dead-letter queue's messages, and in the local runtime alike: a
1,000,000-image prefix streams like a 10-image one.

Memory is not the limit, time is: POST /batches must answer within API Gateway's 29 s, and a prefix of a few
hundred thousand objects cannot be listed in that time, nor a list file of a few million keys read (streaming one
into the manifest takes 5-8 s per million keys on one vCPU). ``until_deadline`` stops the stream while there is still
time to write the manifest and start the batch, and refuses it (413 ``too_many_to_list``) with the count read so far.
Nothing is on S3 then: both objects are spooled to local temporary files and uploaded only after the last key.
"""

from __future__ import annotations

import csv
import json
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import IO, Any

from botocore.exceptions import ClientError

from modelrun.aws.errors import error_code
from modelrun.batches.keys import BatchKeys
from modelrun.errors import ImageNotFound, InvalidRequest, TooManyToList

MAX_KEY_LENGTH = 1024
# The key stream stops once less than this is left of the invocation: enough to upload the keys file (up to a few
# hundred MB) and the manifest, create the job row and start the execution.
SUBMIT_MARGIN_MS = 5_000
# How often the stream asks for the time left: every this many keys (one listing page), not per key.
DEADLINE_CHECK_EVERY = 1_000


def lambda_max_remaining_ms() -> int:
    """The time left where no Lambda context says otherwise: a Lambda's longest timeout, 15 minutes, never short."""
    return 900_000


def check_key(key: Any, where: str) -> str:
    if not isinstance(key, str) or not key.strip():
        raise InvalidRequest(f"{where}: an image key must be a non-empty string, got {key!r}")
    if len(key.encode("utf-8")) > MAX_KEY_LENGTH:
        raise InvalidRequest(f"{where}: an S3 key is at most {MAX_KEY_LENGTH} bytes of UTF-8")
    return key


def inline_keys(images: Any) -> Iterator[str]:
    if not isinstance(images, list):
        raise InvalidRequest('"images" must be a list of S3 keys in the images bucket')
    for position, key in enumerate(images):
        yield check_key(key, f"images[{position}]")


def prefix_keys(s3: Any, bucket: str, prefix: str, *, start_after: str | None = None) -> Iterator[str]:
    """Every object under the prefix, in key order, page by page (folder placeholders skipped); with
    ``start_after``, only the keys after it (where an earlier listing stopped)."""
    paginator = s3.get_paginator("list_objects_v2")
    after = {"StartAfter": start_after} if start_after else {}
    for page in paginator.paginate(Bucket=bucket, Prefix=prefix, PaginationConfig={"PageSize": 1000}, **after):
        for entry in page.get("Contents", []):
            if not entry["Key"].endswith("/"):
                yield entry["Key"]


def file_keys(s3: Any, bucket: str, key: str) -> Iterator[str]:
    """Keys from a JSON-lines file (a string or {"key": ...} per line) or a CSV file (first column, optional
    ``key`` header), read line by line from S3."""
    try:
        body = s3.get_object(Bucket=bucket, Key=key)["Body"]
    except ClientError as exc:
        if error_code(exc) in ("NoSuchKey", "404", "NoSuchBucket"):
            raise ImageNotFound(f"no manifest file s3://{bucket}/{key}") from exc
        raise
    lines = _decoded_lines(body.iter_lines(), key)
    if key.lower().endswith(".csv"):
        yield from _csv_keys(lines, key)
    else:
        yield from _jsonl_keys(lines, key)


_OUT_OF_TIME_ADVICE = {
    "s3_prefix": (
        'write the keys to a list file in the bucket and send {"manifest": "<its key>"} instead (reading a file is '
        "much faster than listing a prefix), or submit smaller prefixes"
    ),
    "manifest": (
        "split the list into smaller files, one batch each, or upload it under batches/ (the upload trigger "
        "reads it with a longer time limit)"
    ),
    "dataset_id": (
        'submit it in parts, naming its images in "image_ids" (GET /datasets/{id}/images lists them), or as a list '
        'file of their keys ({"manifest": "<its key>"})'
    ),
    "retry": (
        'the batch is unchanged: submit its failed images as a new batch, {"manifest": "<its error report file>"} '
        "(the JSON-lines error report of an ended batch, results/<batch id>/errors-<attempt>.jsonl in your space, "
        "is a list of their keys)"
    ),
}
_WHAT = {
    "s3_prefix": "s3_prefix {!r}",
    "manifest": "manifest file {!r}",
    "dataset_id": "the images of dataset {}",
    "retry": "the images to retry of {}",
}


def until_deadline[T](
    keys: Iterable[T],
    remaining_ms: Callable[[], int],
    *,
    source: str,
    value: str,
    margin_ms: int = SUBMIT_MARGIN_MS,
    check_every: int = DEADLINE_CHECK_EVERY,
) -> Iterator[T]:
    """``keys`` as they come, until less than ``margin_ms`` is left (asked every ``check_every`` keys): then
    ``TooManyToList``, naming how many keys were read and what to send instead. ``source`` is ``s3_prefix``,
    ``manifest`` or ``dataset_id`` (``value`` the prefix, the list file's key or the dataset id), or ``retry``
    (``value`` the batch id)."""
    for listed, key in enumerate(keys):
        if listed % check_every == 0 and remaining_ms() < margin_ms:
            what = _WHAT[source].format(value)
            raise TooManyToList(
                f"time ran out reading {what} after {listed:,} keys, before the batch could be submitted: "
                + _OUT_OF_TIME_ADVICE[source],
                listed=listed,
            )
        yield key


def _decoded_lines(raw: Iterable[bytes], source: str) -> Iterator[str]:
    """Each line as text, blank ones included (so errors can name the line), a UTF-8 byte-order mark dropped."""
    for number, line in enumerate(raw):
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidRequest(f"{source} line {number + 1} is not UTF-8 text: save the list as UTF-8") from exc
        yield text.removeprefix("\ufeff") if number == 0 else text


def _jsonl_keys(lines: Iterable[str], source: str) -> Iterator[str]:
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InvalidRequest(f"{source} line {number} is not JSON: {exc.msg} (use .csv for a CSV file)") from exc
        key = entry.get("key") if isinstance(entry, dict) else entry
        yield check_key(key, f"{source} line {number}")


def _csv_keys(lines: Iterable[str], source: str) -> Iterator[str]:
    first_row = True
    for number, row in enumerate(csv.reader(lines), start=1):
        if not row or not row[0].strip():
            continue
        if first_row and row[0].strip().lower() == "key":
            first_row = False
            continue
        first_row = False
        yield check_key(row[0].strip(), f"{source} row {number}")


@dataclass(frozen=True)
class ManifestSummary:
    bucket: str
    key: str
    keys_key: str
    total: int
    chunks: int


class ChunkWriter:
    """Writes the keys file and, alongside, the JSON array of chunk descriptors (byte ranges of the keys file)."""

    def __init__(self, keys_out: IO[bytes], manifest_out: IO[bytes], chunk_size: int) -> None:
        self.keys_out = keys_out
        self.manifest_out = manifest_out
        self.chunk_size = chunk_size
        self.total = 0
        self.chunks = 0
        self._offset = 0
        self._chunk_start = 0
        self._chunk_count = 0
        self.manifest_out.write(b"[")

    def add(self, key: str, item: int | None = None) -> None:
        """Append a key; with ``item``, the line names its item number (a retry's sparse list)."""
        entry: Any = key if item is None else [item, key]
        line = json.dumps(entry, ensure_ascii=False).encode("utf-8") + b"\n"
        if self._chunk_count >= self.chunk_size:
            self._flush()
        self.keys_out.write(line)
        self._offset += len(line)
        self._chunk_count += 1

    def _flush(self) -> None:
        if not self._chunk_count:
            return
        chunk = {
            "index": self.chunks,
            "first_item": self.total,
            "count": self._chunk_count,
            "offset": self._chunk_start,
            "length": self._offset - self._chunk_start,
        }
        separator = b"," if self.chunks else b""
        self.manifest_out.write(separator + json.dumps(chunk, separators=(",", ":")).encode("utf-8") + b"\n")
        self.total += self._chunk_count
        self.chunks += 1
        self._chunk_start = self._offset
        self._chunk_count = 0

    def close(self) -> None:
        self._flush()
        self.manifest_out.write(b"]")


def write_manifest(
    s3: Any,
    keys: Iterable[str] | Iterable[str | tuple[int, str]],
    *,
    bucket: str,
    batch: BatchKeys,
    chunk_size: int,
    max_images: int,
    attempt: int = 1,
) -> ManifestSummary:
    """Stream ``keys`` into the keys file and the chunk manifest of the attempt on S3, in the batch's tenant's space;
    refuses an empty batch and one over ``max_images``. Attempt 1 takes keys; a later attempt (a retry) takes
    (item, key) pairs."""
    names = (batch.keys_file(attempt), batch.manifest(attempt))
    with tempfile.TemporaryFile("w+b") as keys_file, tempfile.TemporaryFile("w+b") as manifest_file:
        writer = ChunkWriter(keys_file, manifest_file, chunk_size)
        for count, entry in enumerate(keys, start=1):
            if count > max_images:
                raise InvalidRequest(f"a batch holds at most {max_images} images: split the list")
            if isinstance(entry, str):
                writer.add(entry)
            else:
                item, image_key = entry
                writer.add(image_key, item=item)
        writer.close()
        if writer.total == 0:
            raise InvalidRequest("the batch names no images: check the list, prefix or manifest file")
        for spool, key, content_type in (
            (keys_file, names[0], "application/x-ndjson"),
            (manifest_file, names[1], "application/json"),
        ):
            spool.seek(0)
            s3.upload_fileobj(spool, bucket, key, ExtraArgs={"ContentType": content_type})
    return ManifestSummary(bucket=bucket, key=names[1], keys_key=names[0], total=writer.total, chunks=writer.chunks)


def read_chunk_items(
    s3: Any, bucket: str, keys_object: str, *, offset: int, length: int, count: int, first_item: int
) -> list[tuple[int, str]]:
    """One chunk's (item, key) pairs: a ranged GET of its lines of the keys file.

    A line is a key (its item number follows from the chunk's first item) or ``[item, key]`` (a retry's keys file,
    which lists only the items to run again)."""
    body = s3.get_object(Bucket=bucket, Key=keys_object, Range=f"bytes={offset}-{offset + length - 1}")["Body"]
    # Split on "\n" only: str.splitlines() would also break at U+2028, U+2029 and U+0085, which JSON leaves raw.
    lines = [json.loads(line) for line in body.read().decode("utf-8").split("\n") if line]
    if len(lines) != count:
        raise ValueError(f"chunk at bytes {offset}+{length} of {keys_object} has {len(lines)} keys, expected {count}")
    return [
        (int(line[0]), str(line[1])) if isinstance(line, list) else (first_item + position, str(line))
        for position, line in enumerate(lines)
    ]


def iter_keys_file(s3: Any, bucket: str, keys_object: str) -> Iterator[tuple[int, str]]:
    """Every (item, key) of a batch's first keys file, streamed."""
    body = s3.get_object(Bucket=bucket, Key=keys_object)["Body"]
    for item, line in enumerate(body.iter_lines()):
        yield item, json.loads(line)
