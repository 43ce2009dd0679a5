"""The audit trail: who (tenant) did what (route, resource ids, model and version), when, and with what outcome.

One record per REST request and per drop an upload trigger processed (``modelrun.uploads.triggers``), in the
AuditTable (kept ``AUDIT_RETENTION_DAYS``, then removed by DynamoDB TTL) and as a structured log line. Records hold ids
this stack made up, route templates, model names and HTTP outcomes only: never a body, a query string, an S3 key (file
names can name patients; a drop is named by its key's SHA-256) or anything from an image.
"""

from modelrun.audit.trail import RESOURCE_FIELDS, AuditTrail

__all__ = ["RESOURCE_FIELDS", "AuditTrail"]
