"""POST /uploads: what a browser may upload, and the keys its files get under ``inputs/{upload_id}/``.

The handler signs a PUT URL per file with the declared content type and size, so S3 refuses any other body.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from modelrun.errors import ImageTooLarge, InvalidRequest, UnsupportedMediaType
from modelrun.http.requests import IMAGE_CONTENT_TYPES
from modelrun.tenants import Tenant

PREFIX = "inputs"
MAX_FILES = 1000
URL_EXPIRY_S = 15 * 60
MAX_NAME_CHARS = 255
MAX_SAFE_STEM = 120
MAX_IDEMPOTENCY_KEY_CHARS = 256
UPLOAD_TYPES = frozenset(IMAGE_CONTENT_TYPES - {"application/octet-stream"})


@dataclass(frozen=True)
class FileSpec:
    """One file the client is about to upload, as it described it."""

    name: str
    content_type: str
    size: int

    @classmethod
    def parse(cls, index: int, value: Any, *, max_bytes: int) -> FileSpec:
        where = f"files[{index}]"
        if not isinstance(value, dict):
            raise InvalidRequest(f'{where} must be an object {{"name", "content_type", "size"}}', file=index)
        name, content_type, size = value.get("name"), value.get("content_type"), value.get("size")
        if not isinstance(name, str) or not name.strip() or len(name) > MAX_NAME_CHARS:
            raise InvalidRequest(f"{where}.name must be a file name of 1 to {MAX_NAME_CHARS} characters", file=index)
        if any(unicodedata.category(char) == "Cc" for char in name):
            raise InvalidRequest(f"{where}.name {name!r} contains control characters: rename the file", file=index)
        if not isinstance(content_type, str):
            raise InvalidRequest(f'{where}.content_type must be a string such as "image/png"', file=index)
        media_type = content_type.split(";", 1)[0].strip().lower()
        if media_type not in UPLOAD_TYPES:
            raise UnsupportedMediaType(
                f"{name!r} has content type {content_type!r}: only images can be uploaded "
                f"({', '.join(sorted(UPLOAD_TYPES))})",
                file=index,
                name=name,
            )
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise InvalidRequest(f"{where}.size must be the file's size in bytes (an integer, 0 or more)", file=index)
        if size > max_bytes:
            raise ImageTooLarge(
                f"{name!r} is {size:,} bytes, over the {max_bytes:,}-byte limit: resize or recompress it",
                file=index,
                name=name,
            )
        return cls(name=name, content_type=media_type, size=size)


def parse_files(body: Any, *, max_bytes: int) -> list[FileSpec]:
    if not isinstance(body, dict):
        raise InvalidRequest('the request body must be a JSON object {"files": [...]}')
    unknown = sorted(set(body) - {"files", "dataset_id"})  # dataset_id: the handler's (modelrun.datasets)
    if unknown:
        raise InvalidRequest(f"unknown field(s): {', '.join(unknown)}")
    files = body.get("files")
    if not isinstance(files, list) or not files:
        raise InvalidRequest('"files" must be a non-empty list of {"name", "content_type", "size"}')
    if len(files) > MAX_FILES:
        raise InvalidRequest(
            f'"files" lists {len(files):,} files, over {MAX_FILES:,} per call: split them over several calls'
        )
    return [FileSpec.parse(index, value, max_bytes=max_bytes) for index, value in enumerate(files)]


def safe_name(name: str) -> str:
    """A key-friendly version of a file name: its last path part, ASCII letters, digits, ``._-`` only."""
    base = re.split(r"[\\/]", name)[-1]
    ascii_name = unicodedata.normalize("NFKD", base).encode("ascii", "ignore").decode("ascii")
    stem, dot, extension = ascii_name.rpartition(".")
    if not dot:
        stem, extension = extension, ""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("._-")[:MAX_SAFE_STEM] or "image"
    extension = re.sub(r"[^A-Za-z0-9]+", "", extension).lower()[:10]
    return f"{stem}.{extension}" if extension else stem


def unique_names(files: list[FileSpec]) -> list[str]:
    """Safe names, numbered where two files would get the same key (``a.png``, ``a-2.png``, ...)."""
    taken: set[str] = set()
    names = []
    for spec in files:
        candidate = safe_name(spec.name)
        stem, dot, extension = candidate.rpartition(".") if "." in candidate else (candidate, "", "")
        number = 1
        while candidate.lower() in taken:
            number += 1
            candidate = f"{stem}-{number}{dot}{extension}"
        taken.add(candidate.lower())
        names.append(candidate)
    return names


def new_upload_id() -> str:
    return f"u-{datetime.now(UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:12]}"


def upload_id_for(tenant: Tenant, idempotency_key: str) -> str:
    """The upload id of a call with an Idempotency-Key: the same for the same tenant and key, so a retried call signs
    the same keys; another tenant's same key is another upload (and its keys are in its own space anyway).

    Raises:
        InvalidRequest: a key longer than :data:`MAX_IDEMPOTENCY_KEY_CHARS`.
    """
    if len(idempotency_key) > MAX_IDEMPOTENCY_KEY_CHARS:
        raise InvalidRequest(f"the Idempotency-Key is at most {MAX_IDEMPOTENCY_KEY_CHARS} characters")
    digest = hashlib.sha256(f"{tenant.name}\n{idempotency_key}".encode()).hexdigest()
    return f"u-k-{digest[:24]}"
