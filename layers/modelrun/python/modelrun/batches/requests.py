"""POST /batches bodies: the limits on a batch and the validated request (which model, which images, how to split)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from modelrun.errors import InvalidRequest, UnknownModel
from modelrun.models.registry import ModelRegistry


@dataclass(frozen=True)
class BatchLimits:
    default_chunk_size: int = 100
    max_chunk_size: int = 500
    default_concurrency: int = 10
    max_concurrency: int = 1000
    max_images: int = 5_000_000
    max_image_ids: int = 1000


def _bounded_int(body: dict[str, Any], field_name: str, default: int, maximum: int) -> int:
    value = body.get(field_name, default)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= maximum:
        raise InvalidRequest(f'"{field_name}" must be an integer from 1 to {maximum}, got {value!r}')
    return value


@dataclass(frozen=True)
class BatchRequest:
    """A validated POST /batches body: which model, which images (one source), and how to split the work.

    The source is a list of keys (``images``), a prefix, a list file (``manifest``), or a dataset (``dataset_id``:
    all its images, or those of ``image_ids``).
    """

    model: str | None
    version: str | None
    source: str
    value: Any
    chunk_size: int
    max_concurrency: int
    faults: dict[str, Any] | None = None
    image_ids: list[str] | None = None

    SOURCES = ("images", "s3_prefix", "manifest", "dataset_id")

    @classmethod
    def parse(cls, body: Any, limits: BatchLimits) -> BatchRequest:
        if not isinstance(body, dict):
            raise InvalidRequest("the request body must be a JSON object")
        known = {"model", "version", "chunk_size", "max_concurrency", "faults", "image_ids", *cls.SOURCES}
        unknown = sorted(set(body) - known)
        if unknown:
            raise InvalidRequest(f"unknown field(s): {', '.join(unknown)}")
        given = [name for name in cls.SOURCES if name in body]
        if len(given) != 1:
            raise InvalidRequest(
                'send exactly one of "images" (a list of keys), "s3_prefix", "manifest" or "dataset_id"'
            )
        source = given[0]
        value = body[source]
        if source != "images" and (not isinstance(value, str) or not value.strip()):
            raise InvalidRequest(f'"{source}" must be a non-empty string')
        image_ids = _image_ids(body, source, limits.max_image_ids)
        for name in ("model", "version"):
            if name in body and (not isinstance(body[name], str) or not body[name].strip()):
                raise InvalidRequest(f'"{name}" must be a non-empty string')
        return cls(
            model=body.get("model"),
            version=body.get("version"),
            source=source,
            value=value,
            chunk_size=_bounded_int(body, "chunk_size", limits.default_chunk_size, limits.max_chunk_size),
            max_concurrency=_bounded_int(body, "max_concurrency", limits.default_concurrency, limits.max_concurrency),
            faults=body.get("faults"),
            image_ids=image_ids,
        )


def _image_ids(body: dict[str, Any], source: str, maximum: int) -> list[str] | None:
    """A dataset batch's ``image_ids``: 1 to ``maximum`` strings (whether each names an image is the dataset's to
    say); only with ``dataset_id``."""
    value = body.get("image_ids")
    if value is None:
        return None
    if source != "dataset_id":
        raise InvalidRequest('"image_ids" names images of a dataset: send it with "dataset_id"')
    if not isinstance(value, list) or not 1 <= len(value) <= maximum or not all(isinstance(v, str) for v in value):
        raise InvalidRequest(
            f'"image_ids" must be a list of 1 to {maximum:,} image ids: for more, submit the whole dataset or '
            "several batches"
        )
    return value


def resolve_version(registry: ModelRegistry, name: str, version: str | None) -> str:
    """The version a batch will use, fixed at submit time so every chunk runs the same model."""
    versions = registry.versions(name)  # raises UnknownModel naming what exists
    if version is None:
        return versions[-1]
    if version not in versions:
        raise UnknownModel(f"model {name!r} has no version {version!r}; available: {', '.join(versions)}")
    return version
