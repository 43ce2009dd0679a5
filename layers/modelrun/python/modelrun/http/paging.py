"""``next_token`` paging: an opaque token for a DynamoDB ``LastEvaluatedKey``, and reading one back."""

from __future__ import annotations

import base64
import binascii
import json
from decimal import Decimal
from typing import Any

from modelrun.errors import InvalidRequest


def encode_token(last_key: dict[str, Any] | None) -> str | None:
    """An opaque paging token for a DynamoDB LastEvaluatedKey (None when there is no next page)."""
    if not last_key:
        return None
    plain = {key: int(value) if isinstance(value, Decimal) else value for key, value in last_key.items()}
    return base64.urlsafe_b64encode(json.dumps(plain, separators=(",", ":")).encode()).decode().rstrip("=")


def decode_token(token: str | None) -> dict[str, Any] | None:
    if not token:
        return None
    try:
        decoded = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except (ValueError, binascii.Error) as exc:
        raise InvalidRequest('"next_token" is not a token this API returned: start again without it') from exc
    if not isinstance(decoded, dict):
        raise InvalidRequest('"next_token" is not a token this API returned: start again without it')
    return decoded
