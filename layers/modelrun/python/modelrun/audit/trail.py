"""Audit records in DynamoDB: partition ``tenant``, sort ``at`` (time, then request id), newest read first.

The sparse ``by_resource`` index (``tenant_resource`` = ``<tenant>#<resource id>``, sort ``at``) answers "who did
what to this batch" in one query, for the caller's tenant only: the partition key starts with it. A request can name
a dataset and something in it (a batch over the dataset, a prediction of one of its images, an upload into it): its
record is under that other resource in ``by_resource`` and under the dataset in the sparse ``by_dataset`` index
(``tenant_dataset``), so a filter by a dataset id finds every request that touched the dataset.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from aws_lambda_powertools import Logger

from modelrun.config import int_env, require_env
from modelrun.datasets.ids import is_dataset_id
from modelrun.errors import InvalidRequest
from modelrun.http.paging import decode_token, encode_token
from modelrun.tenants import Tenant

logger = Logger(child=True)

BY_RESOURCE: Final = "by_resource"
BY_DATASET: Final = "by_dataset"
DEFAULT_RETENTION_DAYS: Final = 365
RESOURCE_FIELDS: Final = ("batch_id", "upload_id", "image_id", "dataset_id")
"""The ids a record keeps, from the path and the response; the first one present is the record's resource (in
``by_resource``); a dataset id is also the record's dataset (in ``by_dataset``)."""
# An id from the path is what the caller typed (maybe another tenant's, maybe not an id at all): kept, cut short.
MAX_ID_CHARS: Final = 128
TABLE_KEY: Final = {"tenant", "at"}
INDEX_KEYS: Final = {BY_RESOURCE: "tenant_resource", BY_DATASET: "tenant_dataset"}


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass
class AuditTrail:
    """Writes and reads the audit records of every tenant; each read is for one tenant only.

    Attributes:
        table: the AuditTable (a boto3 ``Table`` resource).
        retention_days: how long a record is kept (its ``expires_at``, the table's TTL attribute).
    """

    table: Any
    retention_days: int = DEFAULT_RETENTION_DAYS

    @classmethod
    def from_env(cls, dynamodb: Any) -> AuditTrail:
        """The trail of a function whose template gives it ``AUDIT_TABLE`` (and ``AUDIT_RETENTION_DAYS``)."""
        table = dynamodb.Table(require_env("AUDIT_TABLE"))
        return cls(table, int_env("AUDIT_RETENTION_DAYS", default=DEFAULT_RETENTION_DAYS))

    def record(
        self,
        tenant: Tenant,
        *,
        action: str,
        request_id: str,
        status: int,
        outcome: str,
        resources: dict[str, str] | None = None,
        model: str | None = None,
        version: str | None = None,
    ) -> dict[str, Any]:
        """Write one record and log it; a failed write is logged as an error with the whole record, never raised
        (the work is done by then, and the log line is the record's second copy).

        Args:
            tenant: who.
            action: what, as a route template (``GET /batches/{batch_id}``) or a trigger (``s3 uploads``).
            request_id: API Gateway's request id (or the event's id), which makes the record unique.
            status: the HTTP status answered.
            outcome: ``ok``, or the error code answered.
            resources: ids from :data:`RESOURCE_FIELDS` the request named or created.
            model: the model it ran or read, when it says.
            version: that model's version.

        Returns:
            The record as stored.
        """
        now = _now()
        ids = {name: str(value)[:MAX_ID_CHARS] for name, value in (resources or {}).items() if value}
        record: dict[str, Any] = {
            "tenant": tenant.name,
            "at": f"{now.isoformat(timespec='milliseconds').replace('+00:00', 'Z')}#{request_id}",
            "time": now.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "request_id": request_id,
            "action": action,
            "status": status,
            "outcome": outcome,
            "resources": ids,
            "expires_at": int(time.time()) + self.retention_days * 86400,
        }
        primary = next((ids[name] for name in RESOURCE_FIELDS if name in ids), None)
        if primary is not None:
            record["tenant_resource"] = tenant.partition(primary)
        if "dataset_id" in ids:
            record["tenant_dataset"] = tenant.partition(ids["dataset_id"])
        if model:
            record["model"] = model
        if version:
            record["version"] = version
        log_fields = {key: value for key, value in record.items() if key not in ("at", "expires_at")}
        logger.info("audit", **log_fields)
        try:
            self.table.put_item(Item=record)
        except Exception:
            logger.exception("audit record not written", **log_fields)
        return record

    def record_request(self, tenant: Tenant, event: dict[str, Any], response: dict[str, Any]) -> dict[str, Any]:
        """Record a REST request from its proxy event and response: route, path ids, the ids and model in a JSON
        response body, the status, and the error code of an error response."""
        context = event.get("requestContext") or {}
        status = int(response.get("statusCode", 500))
        body = _json_object(response.get("body"), base64=bool(response.get("isBase64Encoded")))
        resources = {
            name: value for name, value in (event.get("pathParameters") or {}).items() if name in RESOURCE_FIELDS
        }
        for name in RESOURCE_FIELDS:
            if isinstance(body.get(name), str) and name not in resources:
                resources[name] = body[name]
        error = body.get("error")
        outcome = (
            str(error.get("code")) if status >= 400 and isinstance(error, dict) else ("ok" if status < 400 else "error")
        )
        model = body.get("model") if isinstance(body.get("model"), str) else None
        version = body.get("version") if isinstance(body.get("version"), str) else None
        if model is None and (event.get("pathParameters") or {}).get("name") and status < 400:
            model = str(event["pathParameters"]["name"])  # GET /models/{name} read that model
        return self.record(
            tenant,
            action=f"{event.get('httpMethod', '')} {event.get('resource') or context.get('resourcePath') or ''}",
            request_id=str(context.get("requestId") or ""),
            status=status,
            outcome=outcome,
            resources=resources,
            model=model,
            version=version,
        )

    def page(
        self, tenant: Tenant, *, resource: str | None, limit: int, token: str | None
    ) -> tuple[list[dict[str, Any]], str | None]:
        """One page of the tenant's records, newest first, optionally of one resource id (a dataset id: every record
        naming the dataset).

        Raises:
            InvalidRequest: a ``next_token`` this listing did not return (another tenant's included).
        """
        query: dict[str, Any] = {"Limit": limit, "ScanIndexForward": False}
        index_key: str | None = None
        if resource is None:
            query["KeyConditionExpression"] = "tenant = :t"
            query["ExpressionAttributeValues"] = {":t": tenant.name}
        else:
            index = BY_DATASET if is_dataset_id(resource) else BY_RESOURCE
            index_key = INDEX_KEYS[index]
            query["IndexName"] = index
            query["KeyConditionExpression"] = f"{index_key} = :r"
            query["ExpressionAttributeValues"] = {":r": tenant.partition(resource)}
        start = decode_token(token)
        if start is not None:
            expected = TABLE_KEY if index_key is None else {*TABLE_KEY, index_key}
            if (
                set(start) != expected
                or start.get("tenant") != tenant.name
                or not all(isinstance(value, str) for value in start.values())
                or (index_key is not None and start.get(index_key) != tenant.partition(str(resource)))
            ):
                raise InvalidRequest('"next_token" is not a token this listing returned: start again without it')
            query["ExclusiveStartKey"] = start
        found = self.table.query(**query)
        return [public_record(item) for item in found.get("Items", [])], encode_token(found.get("LastEvaluatedKey"))


def public_record(item: dict[str, Any]) -> dict[str, Any]:
    """A stored record as GET /audit shows it."""
    shown = {
        "time": item.get("time"),
        "request_id": item.get("request_id"),
        "action": item.get("action"),
        "resources": dict(item.get("resources") or {}),
        "status": int(item.get("status", 0)),
        "outcome": item.get("outcome"),
    }
    for name in ("model", "version"):
        if item.get(name):
            shown[name] = item[name]
    return shown


def _json_object(body: Any, *, base64: bool) -> dict[str, Any]:
    if not isinstance(body, str) or base64:
        return {}
    try:
        parsed = json.loads(body)
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}
