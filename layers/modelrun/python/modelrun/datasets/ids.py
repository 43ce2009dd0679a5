"""Dataset and image ids: a dataset id is minted once, sortable by creation time; an image id is derived from its
dataset and its S3 key, so registering the same key in the same dataset again gives the same image."""

from __future__ import annotations

import hashlib
import re
import uuid
from datetime import UTC, datetime
from typing import Any, Final

DATASET_ID: Final = re.compile(r"^d-\d{8}T\d{6}-[0-9a-f]{12}$")
IMAGE_ID: Final = re.compile(r"^i-[0-9a-f]{24}$")


def new_dataset_id() -> str:
    """A new dataset id, ``d-<UTC time>-<12 hex digits>``: unique, and sorted by creation time."""
    return f"d-{datetime.now(UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:12]}"


def image_id_of(dataset_id: str, key: str) -> str:
    """The id of the image with S3 key ``key`` in dataset ``dataset_id``: ``i-`` and 24 hex digits of a SHA-256 of
    both (96 bits: no two keys of one dataset share an id in practice, and ids of different datasets differ)."""
    digest = hashlib.sha256(f"{dataset_id}\n{key}".encode()).hexdigest()
    return f"i-{digest[:24]}"


def is_dataset_id(value: Any) -> bool:
    """Whether ``value`` could be a dataset id this stack minted (anything else names no dataset)."""
    return isinstance(value, str) and DATASET_ID.match(value) is not None


def is_image_id(value: Any) -> bool:
    """Whether ``value`` could be an image id (anything else names no image)."""
    return isinstance(value, str) and IMAGE_ID.match(value) is not None
