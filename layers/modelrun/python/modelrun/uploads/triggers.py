"""Upload triggers: "drop a file in the images bucket and get its result".

Every key is read in the space of the tenant it lies in (``modelrun.tenants``): a key under ``tenants/<tenant>/`` is
that tenant's (its *path* is the rest of the key), any other key is the default tenant's (its path is the whole key).
Whoever may write into a tenant's space acts as that tenant, so the bucket's IAM policies decide who may drop what
where (README, "Who may write where"). Which paths mean what (``route``):

- ``uploads/{model}/{path}`` is an image to predict with the latest version of ``model``;
  ``uploads/{model}/v{version}/{path}`` pins a version (a folder right after the model named ``v`` and a digit,
  then anything, always names a version: ``v2024/`` too); a file directly under ``uploads/`` uses the stack's
  default model. Its result is ``results/{path}.json`` in the same space, i.e. ``results/uploads/{model}/{...}.json``
  for the default tenant and ``tenants/acme/results/uploads/{model}/{...}.json`` for ``acme``: the task's result
  fields (``label, score, top_k`` for a classification), and for a segmentation ``mask: {"format", "width",
  "height", "s3_key"}`` naming the mask PNG, written first to ``results/{path}.mask.png``. A model that predicts every
  frame of a DICOM file gives ``frames`` (one result each), with masks at ``results/{path}.f{frame}.mask.png``.
- ``batches/{model}/{path}.jsonl`` or ``.csv`` is a list of image keys in the bucket (the formats of POST /batches'
  ``manifest``) and starts a batch of the tenant's exactly as POST /batches ``{"manifest": key}`` with its key would
  (so the list may name only the tenant's images); the model and version come from the path as for images, and
  ``batches/{name}.jsonl|.csv`` uses the default model. ``results/{path}.submitted.json`` names the batch and the
  API paths to follow it.
- Anything else is ignored, with the reason logged: ``results/`` (this function's own outputs, and batch outputs:
  writing them must never trigger it again), folder placeholders, ``uploads/batches/`` and ``uploads/manifests/``
  (where the modelrun CLI stages a batch's images and lists: the batch predicts them), other suffixes under
  ``batches/``, other paths, and keys under ``tenants/`` that name no tenant: not a tenant name
  (``tenants//uploads/a.png``, ``tenants/Acme/...``), or a name no API key has
  (``modelrun.tenants.resolve.KnownTenants``). S3 does not resolve ``..``: ``tenants/acme/../beta/uploads/a.png`` is
  acme's path ``../beta/uploads/a.png``, ignored.

A bad upload is an outcome, not a crash: a user error (``invalid_image``, ``unknown_model``, ``image_too_large``, a bad
list, ...) and the model's own code failing on the image (``model_code_error``, which would fail again) are written as
``{"key", "model", "etag", "error": {"code", "message"}, "failed_at"}`` where the result would have gone. Platform
errors (other 5xx: a broken model, throttling) are raised, so that Lambda retries the event.

Each processed upload is audited for its tenant (``s3:upload`` for an image, ``s3:batch-list`` for a list): the
outcome, the model and version, the prediction or batch id, S3's request id of the write, and the SHA-256 of the key
(never the key itself, whose file name can name a patient).

Keys arrive URL-encoded in S3 events (``+`` for a space, ``%XX`` for other bytes of UTF-8): ``decode_key``.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Container
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import unquote_plus

from aws_lambda_powertools import Logger

from modelrun.aws.s3 import ImageStore
from modelrun.batches.manifest import MAX_KEY_LENGTH
from modelrun.batches.requests import BatchRequest, resolve_version
from modelrun.batches.store import now_iso
from modelrun.batches.submit import BatchSubmitter
from modelrun.decoders import Mask
from modelrun.errors import ModelCodeError, ModelrunError
from modelrun.predict import Predictor
from modelrun.tenants import Tenant, tenant_of_key
from modelrun.tenants.scope import ROOT

if TYPE_CHECKING:
    from modelrun.audit import AuditTrail

logger = Logger(child=True)

UPLOADS_PREFIX: Final = "uploads/"
BATCHES_PREFIX: Final = "batches/"
RESULTS: Final = "results"
RESULTS_PREFIX: Final = f"{RESULTS}/"
LIST_SUFFIXES: Final = (".jsonl", ".csv")
RESULT_SUFFIX: Final = ".json"
MASK_SUFFIX: Final = ".mask.png"
SUBMITTED_SUFFIX: Final = ".submitted.json"
# Where the modelrun CLI stages a batch's images and key lists (cli/modelrun_cli/uploads.py): not single uploads.
CLI_STAGING: Final = ("uploads/batches/", "uploads/manifests/")
# A path segment right after the model that pins a version: "v" and a version starting with a digit.
VERSION_SEGMENT: Final = re.compile(r"v([0-9][A-Za-z0-9._-]{0,62})")
IMAGE_ACTION: Final = "s3:upload"
LIST_ACTION: Final = "s3:batch-list"


def decode_key(raw: str) -> str:
    """The object key from an S3 event record, where it is URL-encoded (``a+b%C3%A9.png`` -> ``a bé.png``)."""
    return unquote_plus(raw, encoding="utf-8")


def result_key(tenant: Tenant, path: str, suffix: str) -> str:
    """``results/{path}{suffix}`` in the tenant's space; a path too long for that (S3 allows 1,024 UTF-8 bytes) gets a
    name from its hash under ``results/{top folder}/_long-keys/`` there (the document inside still names the key)."""
    candidate = tenant.key(RESULTS, f"{path}{suffix}")
    if len(candidate.encode("utf-8")) <= MAX_KEY_LENGTH:
        return candidate
    top = path.split("/", 1)[0]
    return tenant.key(RESULTS, top, "_long-keys", f"{hashlib.sha256(path.encode('utf-8')).hexdigest()}{suffix}")


@dataclass(frozen=True)
class UploadedObject:
    """The object an S3 event names. ``sequencer`` orders the writes of one key; a re-delivered event repeats it.
    ``request_id`` is S3's id of the request that wrote it (``x-amz-request-id``), which the audit record keeps."""

    bucket: str
    key: str
    etag: str = ""
    sequencer: str | None = None
    version_id: str | None = None
    size: int | None = None
    request_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> UploadedObject:
        return cls(**data)


@dataclass(frozen=True)
class ImageUpload:
    """An image to predict: ``key`` is the object's, ``path`` the same key within ``tenant``'s space."""

    key: str
    model: str | None
    version: str | None
    tenant: Tenant
    path: str

    action = IMAGE_ACTION

    @property
    def result_key(self) -> str:
        return result_key(self.tenant, self.path, RESULT_SUFFIX)

    @property
    def mask_key(self) -> str:
        return result_key(self.tenant, self.path, MASK_SUFFIX)

    def frame_mask_key(self, frame: int) -> str:
        """One frame's mask, for a model that predicts every frame: ``results/{path}.f{frame}.mask.png``."""
        return result_key(self.tenant, self.path, f".f{frame}{MASK_SUFFIX}")


@dataclass(frozen=True)
class ListUpload:
    """A list of image keys under a space's ``batches/``: a batch of the tenant's to start."""

    key: str
    model: str | None
    version: str | None
    tenant: Tenant
    path: str

    action = LIST_ACTION

    @property
    def result_key(self) -> str:
        return result_key(self.tenant, self.path, SUBMITTED_SUFFIX)

    def batch_body(self) -> dict[str, Any]:
        """The POST /batches body this upload stands for."""
        body: dict[str, Any] = {"manifest": self.key}
        if self.model is not None:
            body["model"] = self.model
        if self.version is not None:
            body["version"] = self.version
        return body


@dataclass(frozen=True)
class Ignored:
    key: str
    reason: str


Target = ImageUpload | ListUpload | Ignored


def _model_and_version(path: str) -> tuple[str | None, str | None]:
    """``{model}/v{version}/{rest}``, ``{model}/{rest}`` or just ``{name}`` (the default model)."""
    segments = path.split("/")
    if len(segments) == 1:
        return None, None
    version = VERSION_SEGMENT.fullmatch(segments[1]) if len(segments) > 2 else None
    return segments[0], version.group(1) if version else None


def route(key: str) -> Target:
    """What an uploaded key asks for (see the module docstring); whether its tenant exists is not asked here."""
    if not key or key.endswith("/"):
        return Ignored(key, "a folder placeholder (a key ending in /), not a file")
    tenant = tenant_of_key(key)
    if tenant is None:
        return Ignored(key, f"{ROOT}<tenant>/ must name a tenant: 1 to 40 lower-case letters, digits, inner hyphens")
    path = key.removeprefix(tenant.prefix)
    if path.startswith(RESULTS_PREFIX):
        return Ignored(key, "results/ holds this function's own outputs: writing them must not trigger it again")
    if path.startswith(CLI_STAGING):
        return Ignored(key, "the modelrun CLI stages a batch's images and lists here: the batch predicts them")
    if path.startswith(UPLOADS_PREFIX):
        return ImageUpload(key, *_model_and_version(path.removeprefix(UPLOADS_PREFIX)), tenant, path)
    if path.startswith(BATCHES_PREFIX):
        if not path.lower().endswith(LIST_SUFFIXES):
            return Ignored(key, "only .jsonl and .csv lists of image keys under batches/ start a batch")
        return ListUpload(key, *_model_and_version(path.removeprefix(BATCHES_PREFIX)), tenant, path)
    return Ignored(key, "only uploads/ (images) and batches/ (.jsonl or .csv lists) of a space trigger anything")


def batch_paths(batch_id: str) -> dict[str, str]:
    """Where to follow a batch: paths relative to the stack's ``ApiUrl`` output (which ends with ``/``)."""
    base = f"batches/{batch_id}"
    return {"self": base, "results": f"{base}/results", "errors": f"{base}/errors"}


# The document's own fields: a result field of the same name (a model's own postprocess may return any) is left out.
_DOCUMENT_FIELDS: Final = frozenset({"key", "model", "version", "etag", "prediction_id", "predicted_at", "timings_ms"})


def prediction_document(upload: UploadedObject, prediction: dict[str, Any], *, at: str) -> dict[str, Any]:
    """The result document of a predicted image: which image and model, the task's result fields, when."""
    result = {name: value for name, value in prediction.items() if name not in _DOCUMENT_FIELDS}
    return {
        "key": upload.key,
        "model": prediction["model"],
        "version": prediction["version"],
        **result,
        "etag": upload.etag,
        "prediction_id": prediction["prediction_id"],
        "predicted_at": at,
    }


def submitted_document(
    upload: UploadedObject, submitted: dict[str, Any], *, model: str, version: str, at: str
) -> dict[str, Any]:
    return {
        "key": upload.key,
        "model": model,
        "version": version,
        "batch_id": submitted["batch_id"],
        "status": submitted["status"],
        "total": submitted["total"],
        "etag": upload.etag,
        "submitted_at": at,
        "links": batch_paths(submitted["batch_id"]),
    }


def error_document(upload: UploadedObject, error: ModelrunError, *, model: str, at: str) -> dict[str, Any]:
    return {
        "key": upload.key,
        "model": model,
        "etag": upload.etag,
        "error": {"code": error.code, "message": error.message},
        "failed_at": at,
    }


@dataclass
class UploadProcessor:
    """Predicts an uploaded image or submits an uploaded list for the tenant whose space it lies in, writes the
    result document in that space, and audits it for that tenant.

    Attributes:
        known: the tenants that exist (``modelrun.tenants.resolve.KnownTenants``): a drop under a name that is
            no tenant is ignored.
        audit: where each processed upload is recorded (None: not recorded, as in tests of the rest).
    """

    predictor: Predictor
    images: ImageStore
    submitter: BatchSubmitter
    s3: Any
    bucket: str
    known: Container[Tenant]
    audit: AuditTrail | None = None

    def target(self, upload: UploadedObject) -> Target:
        if upload.bucket != self.bucket:
            return Ignored(upload.key, f"bucket {upload.bucket!r} is not the stack's images bucket {self.bucket!r}")
        target = route(upload.key)
        if not isinstance(target, Ignored) and target.tenant not in self.known:
            return Ignored(upload.key, f"no tenant {target.tenant.name!r}: no API key is tagged with that tenant")
        return target

    def process(self, upload: UploadedObject, target: ImageUpload | ListUpload) -> dict[str, Any]:
        """The result document, also written to ``target.result_key``. Raises only for platform errors (5xx)."""
        model = target.model or self.predictor.default_model
        try:
            if isinstance(target, ImageUpload):
                document = self._predict(upload, target, model)
            else:
                document = self._submit(upload, target, model)
            status, outcome = (200 if isinstance(target, ImageUpload) else 202), "ok"
        except ModelrunError as exc:
            if exc.status >= 500 and not isinstance(exc, ModelCodeError):
                raise
            logger.info("upload not processed", key=upload.key, code=exc.code, reason=exc.message)
            document = error_document(upload, exc, model=model, at=now_iso())
            status, outcome = exc.status, exc.code
        self.s3.put_object(
            Bucket=self.bucket,
            Key=target.result_key,
            Body=json.dumps(document, ensure_ascii=False).encode("utf-8"),
            ContentType="application/json",
        )
        logger.info(
            "upload processed",
            tenant=target.tenant.name,
            key=upload.key,
            result_key=target.result_key,
            code=_code(document),
        )
        if self.audit is not None:
            record(self.audit, upload, target, document, status=status, outcome=outcome)
        return {"result_key": target.result_key, "result": document}

    def _predict(self, upload: UploadedObject, target: ImageUpload, model: str) -> dict[str, Any]:
        self.predictor.registry.get(model, target.version)  # an unknown model fails before the image is read
        images = self.images.for_tenant(target.tenant)
        image = images.read(upload.bucket, upload.key, max_bytes=self.predictor.limits.max_bytes)
        prediction = self.predictor.predict_raw(image, model=model, version=target.version)
        frames = prediction.get("frames")
        results = [(entry, target.frame_mask_key(entry["frame"])) for entry in frames] if frames else []
        for result, key in [(prediction, target.mask_key), *results]:
            mask = result.get("mask")
            if isinstance(mask, Mask):
                # Before the document, so a document never names a mask that is not there.
                self.s3.put_object(Bucket=self.bucket, Key=key, Body=mask.png, ContentType="image/png")
                result["mask"] = mask.stored(key)
        return prediction_document(upload, prediction, at=now_iso())

    def _submit(self, upload: UploadedObject, target: ListUpload, model: str) -> dict[str, Any]:
        version = resolve_version(self.submitter.registry, model, target.version)
        # The tenant is the list's own key's: whoever may write there owns the batch, its list may name only that
        # tenant's images, and the batch's files go to that tenant's space.
        submitter = self.submitter.for_tenant(target.tenant)
        submitted = submitter.submit(BatchRequest.parse(target.batch_body(), submitter.limits))
        return submitted_document(upload, submitted, model=model, version=version, at=now_iso())


def record(
    audit: AuditTrail,
    upload: UploadedObject,
    target: ImageUpload | ListUpload,
    document: dict[str, Any],
    *,
    status: int,
    outcome: str,
) -> None:
    """The audit record of a processed upload, for its tenant: ids this stack made and the SHA-256 of the key (an
    auditor who knows a key finds its record), never the key itself."""
    resources = {"key_sha256": hashlib.sha256(upload.key.encode("utf-8")).hexdigest()}
    for name in ("batch_id", "prediction_id"):
        if isinstance(document.get(name), str):
            resources[name] = document[name]
    audit.record(
        target.tenant,
        action=target.action,
        request_id=upload.request_id or upload.sequencer or upload.etag,
        status=status,
        outcome=outcome,
        resources=resources,
        model=document.get("model"),
        version=document.get("version"),
    )


def _code(document: dict[str, Any]) -> str:
    error = document.get("error")
    return str(error["code"]) if error else ("submitted" if "batch_id" in document else "predicted")
