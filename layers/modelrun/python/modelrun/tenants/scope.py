"""The tenant scope: a validated tenant name, its S3 space ``tenants/<name>/`` and its table keys."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from modelrun.errors import InvalidRequest

ROOT: Final = "tenants/"
"""Every tenant's objects live under ``tenants/<name>/`` in the images bucket."""

DEFAULT_TENANT: Final = "default"
"""The tenant of the stack's own API key (the one the template creates)."""

TENANT_TAG: Final = "modelrun:tenant"
"""The API key tag that names the key's tenant (set by ``modelrun tenants add``)."""

# Lower-case letters, digits and inner hyphens: safe in an S3 key, a DynamoDB key (no '#'), a tag and a URL.
NAME = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,38}[a-z0-9])?$")


@dataclass(frozen=True)
class Tenant:
    """One tenant: who owns a request and everything created with it.

    Attributes:
        name: 1 to 40 lower-case letters, digits and inner hyphens.
    """

    name: str

    def __post_init__(self) -> None:
        if not NAME.match(self.name):
            raise InvalidRequest(
                f"{self.name!r} is not a tenant name: use 1 to 40 lower-case letters, digits and inner hyphens"
            )

    @property
    def prefix(self) -> str:
        """The tenant's S3 space, ``tenants/<name>/`` (with the slash, so ``tenants/a`` never covers ``tenants/ab``);
        the default tenant's is the rest of the bucket, ``""`` (see :meth:`owns`)."""
        return "" if self.name == DEFAULT_TENANT else f"{ROOT}{self.name}/"

    def key(self, *parts: str) -> str:
        """A key in the tenant's space: ``key("inputs", "u1", "a.png")`` is ``tenants/<tenant>/inputs/u1/a.png``."""
        return self.prefix + "/".join(part.strip("/") for part in parts)

    def owns(self, key: str) -> bool:
        """Whether an S3 key a caller named lies in this tenant's space.

        S3 keys are plain strings (``..`` is not resolved), so a prefix test is the whole check. The default tenant
        (the stack's own key, what a single-tenant stack has always used) owns every key outside ``tenants/``, so its
        uploads, triggers and the CLI keep their keys; it owns nothing under ``tenants/``."""
        if self.name == DEFAULT_TENANT:
            return not key.startswith(ROOT)
        return key.startswith(self.prefix)

    def partition(self, resource_id: str) -> str:
        """A table key for one of the tenant's resources where the partition is per resource: ``<name>#<id>``."""
        return f"{self.name}#{resource_id}"


def tenant_of_key(key: str) -> Tenant | None:
    """The tenant whose space an S3 key lies in (upload triggers take the tenant from the key), or None.

    Args:
        key: an object key of the images bucket.

    Returns:
        The tenant named by ``tenants/<name>/...``, the default tenant for a key outside ``tenants/``; None for a
        bad name.
    """
    if not key.startswith(ROOT):
        return Tenant(DEFAULT_TENANT)
    name, slash, _rest = key[len(ROOT) :].partition("/")
    if not slash or not NAME.match(name):
        return None
    return Tenant(name)
