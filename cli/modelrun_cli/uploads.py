"""Local images into the stack's images bucket, and what POST /batches is then asked to predict.

Two ways in: through the API (``stage_through_api``: POST /uploads signs a PUT per file, into the API key's tenant's
``inputs/``, so any tenant's key can stage its own images and no AWS credentials are needed), or straight to S3
under a prefix the user names (``upload_images``: their AWS credentials, and a prefix in their key's space, which for
a tenant's key is under ``tenants/<tenant>/``).
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import secrets
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from modelrun_cli.config import Target
from modelrun_cli.errors import ApiError, CliError

if TYPE_CHECKING:
    from modelrun_cli.client import ApiClient

CONTENT_TYPES = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".bmp": "image/bmp",
    ".tif": "image/tiff",
    ".tiff": "image/tiff",
    ".webp": "image/webp",
    ".dcm": "application/dicom",
    ".dicom": "application/dicom",
}
IMAGE_EXTENSIONS = frozenset(CONTENT_TYPES)
FALLBACK_CONTENT_TYPE = "application/octet-stream"  # the API reads the format from the bytes anyway
DICOM_CONTENT_TYPE = "application/dicom"
# A DICOM file (PS3.10) starts with a 128-byte preamble and then these four bytes. Scanners and PACS exports often
# name files by UID or number with no extension at all, so a folder's DICOM files are found by this marker.
DICOM_MARKER = b"DICM"
DICOM_MARKER_OFFSET = 128
UPLOAD_ROOT = "uploads/batches"
MANIFEST_ROOT = "uploads/manifests"
TENANTS_ROOT = "tenants/"
# POST /uploads signs at most this many files per call.
API_UPLOAD_FILES = 1000
# Past this many keys the request carries a manifest file's key instead of the list, so it stays small.
INLINE_KEYS_LIMIT = 20_000
# The largest image `predict` sends as the request body. Lambda refuses a synchronous event over 6 MB, and API Gateway
# puts a binary body in the event base64-encoded, 4 bytes for every 3 (a JSON body's base64 image is as large): past
# 6 MB * 3/4 = 4.5 MB of image, less the event's own headers and fields, the request never reaches the function and
# API Gateway answers a 5xx. 4 MiB leaves half a MiB for those; a larger image is uploaded and sent as image_s3.
DIRECT_BODY_LIMIT = 4 * 1024 * 1024
UPLOAD_WORKERS = 16
UPLOAD_WINDOW = 1000


def content_type_for(path: Path | str) -> str:
    """The Content-Type to send a file with: by its extension, else ``application/dicom`` for a file with the DICOM
    marker (an extensionless ``IM0001``), else ``application/octet-stream``."""
    by_extension = CONTENT_TYPES.get(Path(path).suffix.lower())
    if by_extension is not None:
        return by_extension
    return DICOM_CONTENT_TYPE if is_dicom(Path(path)) else FALLBACK_CONTENT_TYPE


def is_dicom(path: Path) -> bool:
    """Whether ``path`` is a readable file whose bytes 128..131 are ``DICM``; never raises."""
    try:
        with path.open("rb") as stream:
            head = stream.read(DICOM_MARKER_OFFSET + len(DICOM_MARKER))
    except OSError:
        return False
    return head[DICOM_MARKER_OFFSET:] == DICOM_MARKER


@dataclass(frozen=True)
class LocalImage:
    path: Path
    relative: str  # POSIX path under the upload prefix


def collect_images(paths: Sequence[Path]) -> list[LocalImage]:
    """The images to upload, in a stable order.

    A folder contributes every image below it (by extension, case-insensitive, or for DICOM by the ``DICM`` marker
    in its bytes, whatever its name), sorted by relative path; a file named on the command line is taken whatever
    its extension (the API judges the bytes). Two paths that would land on the same key are refused rather than
    overwriting each other.
    """
    images: list[LocalImage] = []
    for path in paths:
        if path.is_dir():
            found = sorted(
                (candidate for candidate in path.rglob("*") if _is_image_file(candidate)),
                key=lambda candidate: candidate.relative_to(path).as_posix(),
            )
            images += [LocalImage(found_path, found_path.relative_to(path).as_posix()) for found_path in found]
        elif path.is_file():
            images.append(LocalImage(path, path.name))
        else:
            raise CliError(f"{path}: no such file or folder")
    unique: dict[str, LocalImage] = {}
    for image in images:
        other = unique.get(image.relative)
        if other is not None and other.path.resolve() != image.path.resolve():
            raise CliError(f"{other.path} and {image.path} would both be uploaded as {image.relative!r}: rename one")
        unique.setdefault(image.relative, image)
    if not unique:
        names = ", ".join(sorted(IMAGE_EXTENSIONS))
        raise CliError(f"no images found in {', '.join(map(str, paths))} (looked for {names} and DICOM files)")
    return list(unique.values())


def _is_image_file(path: Path) -> bool:
    if not path.is_file():
        return False
    return path.suffix.lower() in IMAGE_EXTENSIONS or is_dicom(path)


# -- S3 locations ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class S3Prefix:
    bucket: str
    prefix: str


def parse_s3_url(url: str) -> S3Prefix:
    if not url.startswith("s3://"):
        raise CliError(f"{url!r} is not an s3://bucket/prefix URL")
    bucket, _, prefix = url[len("s3://") :].partition("/")
    if not bucket:
        raise CliError(f"{url!r} names no bucket: use s3://bucket/prefix")
    if not prefix:
        raise CliError(f"{url!r} names no prefix: use s3://{bucket}/<prefix> (a batch never takes a whole bucket)")
    return S3Prefix(bucket, prefix)


def upload_prefix(custom: str | None = None, *, idempotency_key: str | None = None) -> str:
    """Where this run's uploads go: ``--prefix`` as given, else ``uploads/batches/<id>``.

    The id is random, except with an idempotency key: then it is derived from the key, so a retried submit
    uploads to the same keys, sends the same body, and gets the first submit's batch back (the API refuses a
    known key with a different body).
    """
    if custom is not None:
        prefix = custom.strip("/")
        if not prefix:
            raise CliError("--prefix must not be empty")
        return prefix
    if idempotency_key:
        return f"{UPLOAD_ROOT}/k-{_digest(idempotency_key)}"
    return f"{UPLOAD_ROOT}/{secrets.token_hex(6)}"


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def object_key(prefix: str, relative: str) -> str:
    return str(PurePosixPath(prefix, relative))


def s3_client(target: Target) -> Any:
    """An S3 client for the target's images bucket: the user's AWS setup, or the local stack's endpoint.

    Raises:
        CliError: the target has an AWS endpoint but no credentials for it.
    """
    import boto3
    from botocore.config import Config

    kwargs: dict[str, Any] = {}
    if target.region:
        kwargs["region_name"] = target.region
    options: dict[str, Any] = {"max_pool_connections": UPLOAD_WORKERS * 2, "retries": {"mode": "standard"}}
    if target.aws_endpoint:
        kwargs["endpoint_url"] = target.aws_endpoint
        kwargs.setdefault("region_name", "us-east-1")
        options["s3"] = {"addressing_style": "path"}
        # The local stack's endpoint answers only its own credentials; the user's AWS ones are never sent there.
        if target.aws_credentials is None:
            raise CliError(
                f"the AWS endpoint {target.aws_endpoint} (from {target.source}) needs the credentials the local stack "
                "printed at start (`AWS credentials: ...`, also in .modelrun/local.json): set AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY to them"
            )
        kwargs["aws_access_key_id"], kwargs["aws_secret_access_key"] = target.aws_credentials
    return boto3.session.Session().client("s3", config=Config(**options), **kwargs)


# -- uploading ---------------------------------------------------------------------------------------------------
Progress = Callable[[int, int], None]


def upload_images(
    s3: Any,
    bucket: str,
    images: Sequence[LocalImage],
    prefix: str,
    *,
    workers: int = UPLOAD_WORKERS,
    progress: Progress | None = None,
) -> list[str]:
    """Upload concurrently; the keys come back in the images' order. The first failure stops the run."""
    from botocore.exceptions import BotoCoreError, ClientError

    done = 0
    lock = threading.Lock()

    def put(image: LocalImage) -> str:
        nonlocal done
        key = object_key(prefix, image.relative)
        try:
            with image.path.open("rb") as body:
                s3.put_object(Bucket=bucket, Key=key, Body=body, ContentType=content_type_for(image.path))
        except OSError as exc:
            raise CliError(f"cannot read {image.path}: {exc}") from exc
        except (BotoCoreError, ClientError) as exc:
            raise CliError(f"upload of {image.path} to s3://{bucket}/{key} failed: {exc}") from exc
        with lock:
            done += 1
            if progress is not None:
                progress(done, len(images))
        return key

    keys: list[str] = []
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        # A window at a time, so a million files never means a million pending futures; map() cancels the rest
        # of its window when one upload fails.
        for start in range(0, len(images), UPLOAD_WINDOW):
            keys += pool.map(put, images[start : start + UPLOAD_WINDOW])
    return keys


def fits_in_a_request(size: int) -> bool:
    """Whether an image of ``size`` bytes can go as the body of POST /predictions (else: upload it, send image_s3)."""
    return size <= DIRECT_BODY_LIMIT


def throttled_progress(report: Callable[[str], None], *, every_s: float = 1.0) -> Progress:
    """A progress callback that reports at most once per ``every_s`` seconds, and always at the end."""
    started = last = time.monotonic()

    def update(done: int, total: int) -> None:
        nonlocal last
        now = time.monotonic()
        if done == total or now - last >= every_s:
            last = now
            report(f"uploaded {done}/{total} images ({now - started:.1f}s)")

    return update


def manifest_key(upload_prefix: str) -> str:
    """Where the list of a run's uploads goes: outside the upload prefix (an s3:// submit of that prefix must not
    take the list for an image), in the same tenant's space (``tenants/<tenant>/`` when the prefix is in one: a
    tenant's batch may name only its own list), and named after the prefix, so a retried submit writes the same
    key."""
    name, slash, _ = upload_prefix.removeprefix(TENANTS_ROOT).partition("/")
    space = f"{TENANTS_ROOT}{name}/" if upload_prefix.startswith(TENANTS_ROOT) and slash else ""
    return f"{space}{MANIFEST_ROOT}/{_digest(upload_prefix)}.jsonl"


def write_manifest(s3: Any, bucket: str, key: str, keys: Iterable[str]) -> str:
    """A JSON-lines list of keys in the bucket (POST /batches ``manifest``), streamed through a temporary file."""
    with tempfile.TemporaryFile("w+b") as spool:
        for image_key in keys:
            spool.write(json.dumps(image_key).encode("utf-8") + b"\n")
        spool.seek(0)
        s3.upload_fileobj(spool, bucket, key, ExtraArgs={"ContentType": "application/x-ndjson"})
    return key


def images_source(
    s3: Any, bucket: str, prefix: str, keys: Sequence[str], *, inline_limit: int | None = None
) -> dict[str, Any]:
    """The POST /batches field naming the images: the list itself, or a manifest file once the list is long."""
    if len(keys) <= (INLINE_KEYS_LIMIT if inline_limit is None else inline_limit):
        return {"images": list(keys)}
    return {"manifest": write_manifest(s3, bucket, manifest_key(prefix), keys)}


@dataclass(frozen=True)
class Staged:
    """Images uploaded through the API: their keys in the images' order, and where they went (for messages)."""

    bucket: str
    keys: list[str]
    image_ids: list[str] = field(default_factory=list)
    """Into a dataset: each image's id, in the images' order (empty otherwise)."""

    @property
    def location(self) -> str:
        """``s3://bucket/<the folder every key is in>/``."""
        folder = posixpath.commonpath([key.rpartition("/")[0] for key in self.keys])
        return f"s3://{self.bucket}/{folder}/" if folder else f"s3://{self.bucket}/"


def stage_through_api(
    client: ApiClient,
    images: Sequence[LocalImage],
    *,
    idempotency_key: str | None = None,
    dataset_id: str | None = None,
    workers: int = UPLOAD_WORKERS,
    progress: Progress | None = None,
) -> Staged:
    """Upload the images with presigned PUTs from POST /uploads (at most :data:`API_UPLOAD_FILES` per call), so they
    land where the API key's tenant may name them. With an idempotency key each call sends ``<key>#<part>``, so a
    retried submit signs and uploads to the same keys, and POST /batches gets the same body. With ``dataset_id``
    the files are registered in that dataset as they are signed, and their image ids come back too.

    Raises:
        CliError: a file POST /uploads does not take (no image extension and no DICOM marker: only images are
            signed), or a file that could not be read or uploaded; nothing is submitted then.
    """
    specs = []
    for image in images:
        content_type = content_type_for(image.path)
        if content_type == FALLBACK_CONTENT_TYPE:
            raise CliError(
                f"{image.path}: not an image by its extension nor a DICOM file, and the API signs uploads of images "
                "only: give it its image extension, or upload it yourself with --prefix"
            )
        try:
            size = image.path.stat().st_size
        except OSError as exc:
            raise CliError(f"cannot read {image.path}: {exc.strerror or exc}") from exc
        specs.append({"name": image.relative, "content_type": content_type, "size": size})
    done = 0
    lock = threading.Lock()

    def put(pair: tuple[LocalImage, dict[str, Any]]) -> None:
        nonlocal done
        image, signed = pair
        try:
            client.upload(signed["url"], image.path, signed.get("headers") or {})
        except OSError as exc:
            raise CliError(f"cannot read {image.path}: {exc.strerror or exc}") from exc
        except ApiError as exc:
            raise CliError(f"upload of {image.path} to {signed['key']} failed: {exc.message}") from exc
        with lock:
            done += 1
            if progress is not None:
                progress(done, len(images))

    bucket, keys, image_ids = "", [], []
    into = {"dataset_id": dataset_id} if dataset_id else {}
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for part, start in enumerate(range(0, len(images), API_UPLOAD_FILES)):
            window = slice(start, start + API_UPLOAD_FILES)
            answer = client.create_uploads(
                specs[window], idempotency_key=f"{idempotency_key}#{part}" if idempotency_key else None, **into
            )
            signed: list[dict[str, Any]] = answer["uploads"]
            list(pool.map(put, zip(images[window], signed, strict=True)))
            bucket = str(answer["bucket"])
            keys += [str(item["key"]) for item in signed]
            image_ids += [str(item["image_id"]) for item in signed if "image_id" in item]
    return Staged(bucket, keys, image_ids)


def download_object(s3: Any, bucket: str, key: str) -> bytes:
    """An object of the images bucket (a batch's mask, when its results carry no presigned link)."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        body: bytes = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    except (BotoCoreError, ClientError) as exc:
        raise CliError(f"download of s3://{bucket}/{key} failed: {exc}") from exc
    return body
