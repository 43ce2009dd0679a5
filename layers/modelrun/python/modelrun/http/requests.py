"""Request parsing: JSON bodies, headers, query integers, and the three forms of a prediction request."""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any

from modelrun.errors import InvalidJson, InvalidRequest, UnsupportedMediaType

IMAGE_CONTENT_TYPES = frozenset(
    {
        "image/png",
        "image/jpeg",
        "image/jpg",
        "image/gif",
        "image/bmp",
        "image/x-ms-bmp",
        "image/tiff",
        "image/webp",
        "application/dicom",
        "application/octet-stream",
    }
)
"""Content types of a raw image body. Only which form the request is: the format itself is sniffed from the bytes."""


@dataclass(frozen=True)
class S3Ref:
    bucket: str
    key: str


@dataclass(frozen=True)
class DatasetImageRef:
    """An image named by its dataset and image id (whether both exist and are the caller's is for the dataset)."""

    dataset_id: str
    image_id: str


@dataclass(frozen=True)
class ImageRequest:
    """What a prediction request asks for: the image bytes, an S3 reference or a dataset image, which model, whether
    a segmentation mask is returned, and whether the model's view of the image is (``preview``)."""

    model: str | None
    version: str | None
    image: bytes = b""
    ref: S3Ref | None = None
    masks: bool = True
    preview: bool = False
    dataset_image: DatasetImageRef | None = None


def header(headers: dict[str, str], name: str) -> str | None:
    """A header's value, whatever the case the client or API Gateway gave its name."""
    wanted = name.lower()
    return next((value for key, value in headers.items() if key.lower() == wanted and value), None)


def _media_type(headers: dict[str, str]) -> str:
    value = header(headers, "content-type") or ""
    return value.split(";", 1)[0].strip().lower()


def json_body(body: str | None, is_base64: bool, *, expected: str = "a JSON object") -> Any:
    """The request body parsed as JSON, or ``invalid_json`` saying what is wrong and what to send."""
    text = _decode_body(body, is_base64=is_base64).decode("utf-8", errors="replace")
    if not text.strip():
        raise InvalidJson(f"the request body is empty: send {expected}")
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidJson(
            f"the request body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from exc
    except ValueError as exc:
        # The one other ValueError of json.loads: an integer over Python's int_max_str_digits (4,300 digits).
        raise InvalidJson("the request body has a number with too many digits to read") from exc
    except RecursionError as exc:
        raise InvalidJson("the request body nests arrays or objects too deeply: send a flatter document") from exc
    if not _is_unicode(parsed):
        # JSON can escape half of a UTF-16 surrogate pair alone ("\ud800"): no key, name or S3 key can hold it.
        raise InvalidJson('the request body escapes a lone UTF-16 surrogate (such as "\\ud800"): send UTF-8 text')
    return parsed


def _is_unicode(value: Any) -> bool:
    """Whether every string (key or value) of a parsed JSON document is Unicode text; iterative, as deep as it is."""
    pending = [value]
    while pending:
        current = pending.pop()
        if isinstance(current, str):
            if current.isascii():
                continue
            try:
                current.encode("utf-8")
            except UnicodeEncodeError:
                return False
        elif isinstance(current, dict):
            pending.extend(current)
            pending.extend(current.values())
        elif isinstance(current, list):
            pending.extend(current)
    return True


def query_int(query: dict[str, str], name: str, *, default: int, maximum: int) -> int:
    raw = query.get(name)
    if raw is None or raw == "":
        return default
    # ASCII digits only: str.isdigit() is also true of "²", which int() refuses.
    if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= maximum:
        raise InvalidRequest(f'query parameter "{name}" must be an integer from 1 to {maximum}, got {raw!r}')
    return int(raw)


def query_bool(query: dict[str, str], name: str, *, default: bool) -> bool:
    """A ``true``/``false`` query parameter (absent or empty: ``default``); anything else is ``invalid_request``."""
    raw = query.get(name)
    if raw is None or raw == "":
        return default
    if raw not in ("true", "false"):
        raise InvalidRequest(f'query parameter "{name}" must be true or false, got {raw!r}')
    return raw == "true"


def _optional_str(body: dict[str, Any], field: str) -> str | None:
    value = body.get(field)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise InvalidRequest(f'"{field}" must be a non-empty string')
    return value.strip()


def parse_image_request(
    body: str | None,
    *,
    is_base64: bool,
    headers: dict[str, str],
    query: dict[str, str],
) -> ImageRequest:
    """Read one of the four request forms.

    - JSON ``{"model", "version"?, "image": "<base64>"}``
    - JSON ``{"model", "version"?, "image_s3": {"bucket", "key"}}``
    - JSON ``{"model", "version"?, "dataset_id", "image_id"}``: an image of one of the caller's datasets
    - a raw image body with an image content type; model and version as query parameters.

    ``masks`` (``"masks": false`` in JSON, or ``?masks=false``) leaves a segmentation's mask out of the response;
    ``preview`` (``"preview": true`` or ``?preview=true``) adds the model's view of the image as 8-bit PNGs (for a
    browser that cannot decode DICOM).
    """
    media_type = _media_type(headers)
    if media_type in IMAGE_CONTENT_TYPES:
        raw = _decode_body(body, is_base64=is_base64)
        return ImageRequest(
            model=query.get("model") or None,
            version=query.get("version") or None,
            image=raw,
            masks=query_bool(query, "masks", default=True),
            preview=query_bool(query, "preview", default=False),
        )
    if media_type not in ("application/json", ""):
        raise UnsupportedMediaType(
            f"content type {media_type!r} is not accepted: send application/json or an image type "
            f"({', '.join(sorted(IMAGE_CONTENT_TYPES))})"
        )
    parsed = json_body(body, is_base64, expected='{"model": ..., "image": "<base64>"}')
    if not isinstance(parsed, dict):
        raise InvalidJson("the request body must be a JSON object")
    return _image_request_from_json(parsed, query)


def _image_request_from_json(body: dict[str, Any], query: dict[str, str]) -> ImageRequest:
    model = _optional_str(body, "model") or query.get("model") or None
    version = _optional_str(body, "version") or query.get("version") or None
    masks = _json_bool(body, query, "masks", default=True)
    preview = _json_bool(body, query, "preview", default=False)
    has_image, has_ref = "image" in body, "image_s3" in body
    has_dataset_image = "dataset_id" in body or "image_id" in body
    if has_image + has_ref + has_dataset_image != 1:
        raise InvalidRequest(
            'send exactly one of "image" (base64), "image_s3" ({"bucket", "key"}) or "dataset_id" with "image_id"'
        )
    if has_dataset_image:
        dataset_id, image_id = body.get("dataset_id"), body.get("image_id")
        if not isinstance(dataset_id, str) or not dataset_id or not isinstance(image_id, str) or not image_id:
            raise InvalidRequest('"dataset_id" and "image_id" must both be given, as strings')
        return ImageRequest(
            model=model,
            version=version,
            masks=masks,
            preview=preview,
            dataset_image=DatasetImageRef(dataset_id, image_id),
        )
    if has_image:
        encoded = body["image"]
        if not isinstance(encoded, str):
            raise InvalidRequest('"image" must be a base64 string')
        image = _b64decode(encoded, '"image"')
        return ImageRequest(model=model, version=version, image=image, masks=masks, preview=preview)
    ref = body["image_s3"]
    if not isinstance(ref, dict) or not all(isinstance(ref.get(f), str) and ref.get(f) for f in ("bucket", "key")):
        raise InvalidRequest('"image_s3" must be an object with string "bucket" and "key"')
    return ImageRequest(
        model=model, version=version, ref=S3Ref(ref["bucket"], ref["key"]), masks=masks, preview=preview
    )


def _json_bool(body: dict[str, Any], query: dict[str, str], name: str, *, default: bool) -> bool:
    """A true/false option of the JSON body, else of the query string, else ``default``."""
    value = body.get(name)
    if value is None:
        return query_bool(query, name, default=default)
    if not isinstance(value, bool):
        raise InvalidRequest(f'"{name}" must be true or false, got {json.dumps(value)[:40]}')
    return value


def _decode_body(body: str | None, *, is_base64: bool) -> bytes:
    if body is None:
        return b""
    if is_base64:
        return _b64decode(body, "the request body")
    return body.encode("utf-8", errors="surrogateescape")


def _b64decode(value: str, what: str) -> bytes:
    """Strict base64, tolerating line breaks (``base64`` wraps at 76) and a ``data:...;base64,`` prefix."""
    if value.startswith("data:") and "," in value:
        value = value.split(",", 1)[1]
    try:
        return base64.b64decode("".join(value.split()), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidRequest(f"{what} is not valid base64") from exc
