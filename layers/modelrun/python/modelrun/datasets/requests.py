"""POST /datasets bodies: a name and where the images are (a prefix, a list file, inline keys, or nothing yet)."""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from typing import Any, Final

from modelrun.batches.manifest import check_key
from modelrun.errors import InvalidRequest

MAX_NAME_CHARS: Final = 128
MAX_INLINE_IMAGES: Final = 1000
"""Inline keys are added while the request waits; more go in a list file (``manifest``) or under a prefix."""
SOURCES: Final = ("s3_prefix", "manifest", "images")
ASYNC_SOURCES: Final = frozenset({"s3_prefix", "manifest"})


@dataclass(frozen=True)
class DatasetRequest:
    """A validated POST /datasets body.

    Attributes:
        name: 1 to 128 characters, no control characters, spaces at either end dropped.
        source: ``s3_prefix``, ``manifest``, ``images``, or None (an empty dataset, filled by uploads).
        value: the prefix, the list file's key, or the list of keys.
    """

    name: str
    source: str | None
    value: Any

    @property
    def runs_async(self) -> bool:
        """Whether the images are registered after the answer (a prefix or a list file can be any size)."""
        return self.source in ASYNC_SOURCES

    def source_record(self) -> dict[str, Any]:
        """How the dataset's header records where its latest registration came from."""
        if self.source is None:
            return {}
        return {self.source: "inline" if self.source == "images" else self.value}

    @classmethod
    def parse(cls, body: Any) -> DatasetRequest:
        """Read a POST /datasets body.

        Raises:
            InvalidRequest: not an object, unknown fields, a bad name, more than one source, a bad key.
        """
        if not isinstance(body, dict):
            raise InvalidRequest('the request body must be a JSON object {"name", "s3_prefix" | "manifest" | "images"}')
        unknown = sorted(set(body) - {"name", *SOURCES})
        if unknown:
            raise InvalidRequest(f"unknown field(s): {', '.join(unknown)}")
        name = parse_name(body.get("name"))
        given = [source for source in SOURCES if body.get(source) is not None]
        if len(given) > 1:
            raise InvalidRequest('send at most one of "s3_prefix", "manifest" and "images"')
        if not given:
            return cls(name=name, source=None, value=None)
        source = given[0]
        value = body[source]
        if source == "images":
            if not isinstance(value, list) or not 1 <= len(value) <= MAX_INLINE_IMAGES:
                raise InvalidRequest(
                    f'"images" must be a list of 1 to {MAX_INLINE_IMAGES:,} S3 keys: register more with "s3_prefix" '
                    'or a list file ("manifest")'
                )
            return cls(name=name, source=source, value=[check_key(key, f"images[{n}]") for n, key in enumerate(value)])
        if not isinstance(value, str) or not value.strip():
            raise InvalidRequest(f'"{source}" must be a non-empty string')
        return cls(name=name, source=source, value=check_key(value, f'"{source}"'))


def parse_name(value: Any) -> str:
    """A dataset name: 1 to 128 characters once trimmed, no control characters.

    Raises:
        InvalidRequest: anything else.
    """
    if not isinstance(value, str) or not value.strip() or len(value.strip()) > MAX_NAME_CHARS:
        raise InvalidRequest(f'"name" must be a string of 1 to {MAX_NAME_CHARS} characters')
    name = value.strip()
    if any(unicodedata.category(char) in ("Cc", "Cs") for char in name):
        raise InvalidRequest('"name" must not contain control characters')
    return name
