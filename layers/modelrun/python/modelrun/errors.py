"""Domain errors: every error a user can cause has a stable code, an HTTP status and an actionable message.

Handlers map these to HTTP responses in one place (``modelrun.http.resolver``) and the state machine matches them by
name (``ErrorEquals``), never by message text.
"""

from __future__ import annotations

from typing import Any


class ModelrunError(Exception):
    """Base class. ``code`` is stable and machine-readable; ``status`` is the HTTP status it maps to."""

    code = "internal_error"
    status = 500

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details:
            body["details"] = self.details
        return body


class InvalidRequest(ModelrunError):
    code = "invalid_request"
    status = 400


class InvalidJson(InvalidRequest):
    code = "invalid_json"


class InvalidImage(ModelrunError):
    """The bytes are not an image we can decode (corrupt, truncated, empty, not an image at all)."""

    code = "invalid_image"
    status = 400


class UnsupportedMediaType(ModelrunError):
    code = "unsupported_media_type"
    status = 415


class ImageTooLarge(ModelrunError):
    """Too many bytes, or too many pixels once decoded (decompression-bomb guard)."""

    code = "image_too_large"
    status = 413


class InvalidDicom(ModelrunError):
    """A DICOM file that cannot be read: a damaged header, truncated or short pixel data, pixel data the decoder
    refuses. The message is ours, never the decoder's (its text can quote attribute values, i.e. patient data)."""

    code = "invalid_dicom"
    status = 400


class DicomWithoutPixelData(ModelrunError):
    """A readable DICOM object that holds no image (a structured report, an RT plan, a presentation state)."""

    code = "dicom_without_pixel_data"
    status = 422


class UnsupportedTransferSyntax(ModelrunError):
    """A DICOM file whose pixel data is encoded in a transfer syntax no installed decoder handles."""

    code = "unsupported_transfer_syntax"
    status = 415


class PreviewTooLarge(ModelrunError):
    """A prediction asked for its preview whose frames' PNGs would not fit in a response (many large frames)."""

    code = "preview_too_large"
    status = 413


class TooManyToList(ModelrunError):
    """A batch source (a prefix or a list file) that cannot be read within the request's time: the message says
    how many keys were read and what to send instead."""

    code = "too_many_to_list"
    status = 413


class UnknownModel(ModelrunError):
    code = "unknown_model"
    status = 404


class ImageNotFound(ModelrunError):
    """An S3 reference that points at no object."""

    code = "image_not_found"
    status = 404


class NotFound(ModelrunError):
    code = "not_found"
    status = 404


class DatasetNotFound(ModelrunError):
    """No such dataset for this API key: never registered, deleted, or another tenant's (the same answer)."""

    code = "dataset_not_found"
    status = 404


class ModelConfigError(ModelrunError):
    """A model folder whose model.json or ONNX graph is wrong. Raised at load, names the offending field."""

    code = "invalid_model_config"
    status = 500


class ModelCodeError(ModelrunError):
    """A model's own code (its folder's ``preprocess`` or ``postprocess``) raised or returned something unusable for
    one image. The message names the function, the exception type and its message; the traceback is only logged."""

    code = "model_code_error"
    status = 500


class TransientFailure(ModelrunError):
    """Work that failed for a reason that may pass (throttling, a timeout, a service error): retry it.

    The state machine retries it by this class name (``ErrorEquals: ["TransientFailure"]``).
    """

    code = "transient_failure"
    status = 503


class Conflict(ModelrunError):
    """The request is valid but the resource is not in a state that allows it (say why and what to do)."""

    code = "conflict"
    status = 409


class DatasetNotReady(Conflict):
    """A dataset that is still being registered (or whose registration failed) for what needs all of its images."""

    code = "dataset_not_ready"


class FaultsNotAllowed(InvalidRequest):
    code = "faults_not_allowed"
