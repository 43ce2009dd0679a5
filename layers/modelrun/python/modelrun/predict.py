"""Single-image prediction: the domain operation behind POST /predictions (and upload triggers).

Decode the bytes, prepare the model's inputs (transforms or the model's own preprocess), run the graph once, decode
the outputs (the task's decoder or the model's own postprocess). The response is the task's result plus the model,
the version, an id and the timings; a classification keeps exactly the keys it always had.

A multi-frame DICOM file follows the model's frame policy: ``first`` and ``middle`` give one result with the frame's
index under ``frame``; ``all`` runs every frame in one batched call and gives ``frames: [{"frame", <result>}, ...]``.
A DICOM input's result carries ``dicom`` (its UIDs and allow-listed technical attributes), which is never logged.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

from modelrun.decoders import Mask
from modelrun.images.decode import Limits, decode_image
from modelrun.images.image import DecodedImage
from modelrun.models.registry import ModelRegistry
from modelrun.transforms.preview import previews


def _ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1000, 3)


@dataclass
class Predictor:
    """Predicts one image at a time with the registry's models (thread-safe)."""

    registry: ModelRegistry
    limits: Limits
    default_model: str

    def predict(
        self,
        image: bytes,
        *,
        model: str | None = None,
        version: str | None = None,
        masks: bool = True,
        preview: bool = False,
    ) -> dict[str, Any]:
        """Predict one image and describe the result.

        Args:
            image: the untrusted image bytes.
            model: the model name; None for the default model.
            version: the version; None for the latest.
            masks: whether a segmentation mask is inlined (base64 PNG under ``"mask"``); False leaves it out.
            preview: whether to add ``"preview"``: each predicted frame as the model sees it before resizing, an
                8-bit base64 PNG at the original size (:mod:`modelrun.transforms.preview`).

        Returns:
            ``{"prediction_id", "model", "version", <the task's result fields>, "timings_ms"}``; timings are
            ``preprocess`` (model lookup, decoding and preparing), ``inference`` (the graph run) and ``total``
            (including decoding the outputs). For a multi-frame file, ``frame`` (the frame's index), or with the
            ``all`` frame policy ``frames`` (one result per frame) in place of the result fields; for DICOM,
            ``dicom``.

        Raises:
            UnknownModel: no such model or version.
            InvalidImage, UnsupportedMediaType, ImageTooLarge: the bytes are not an image the platform takes.
            InvalidDicom, DicomWithoutPixelData, UnsupportedTransferSyntax: a DICOM file that gives no image.
            ModelConfigError: the model folder is broken.
            ModelCodeError: the model's own code failed on this image.
            PreviewTooLarge: with ``preview``, the frames' PNGs would not fit in a response.
        """
        prediction = self.predict_raw(image, model=model, version=version, preview=preview)
        if preview:
            prediction["preview"] = [shown.inline() for shown in prediction["preview"]]
        for result in prediction.get("frames", [prediction]):
            if isinstance(result.get("mask"), Mask):
                if masks:
                    result["mask"] = result["mask"].inline()
                else:
                    del result["mask"]
        return prediction

    def predict_raw(
        self, image: bytes, *, model: str | None = None, version: str | None = None, preview: bool = False
    ) -> dict[str, Any]:
        """As :meth:`predict`, with a segmentation mask left as the :class:`~modelrun.decoders.Mask` object (for
        callers that store the PNG themselves) and the previews as :class:`~modelrun.transforms.preview.Preview`
        objects. Raises as :meth:`predict`."""
        started = time.perf_counter()
        loaded = self.registry.get(model or self.default_model, version)
        decoded = decode_image(image, self.limits, loaded.spec.frames)
        # Before inference: previews too large for a response fail the request without running the model.
        shown = previews(decoded.frames, loaded.pipeline) if preview else None
        prepared = [loaded.prepare(frame) for frame in decoded.frames]
        preprocess_ms = _ms(started)
        inference_started = time.perf_counter()
        outputs = loaded.infer([feeds for feeds, _ in prepared])
        inference_ms = _ms(inference_started)
        results = [loaded.decode(out, geometry) for out, (_, geometry) in zip(outputs, prepared, strict=True)]
        return {
            "prediction_id": str(uuid.uuid4()),
            "model": loaded.spec.name,
            "version": loaded.spec.version,
            **frame_results(decoded, results, every=loaded.spec.frames == "all"),
            **({"preview": shown} if shown is not None else {}),
            "timings_ms": {"preprocess": preprocess_ms, "inference": inference_ms, "total": _ms(started)},
        }


def frame_results(decoded: DecodedImage, results: list[dict[str, Any]], *, every: bool) -> dict[str, Any]:
    """The result fields of a decoded file: ``frames`` (one result per frame, each with its ``frame``) when the model
    predicts every frame, else the one result with ``frame`` for a multi-frame file; ``dicom`` for a DICOM file.

    Args:
        decoded: the decoded file, its frames in the order of ``results``.
        results: one decoded result per frame of ``decoded``.
        every: whether the model's frame policy is ``all``.
    """
    if every:
        shown: dict[str, Any] = {
            "frames": [{"frame": frame.index, **result} for frame, result in zip(decoded.frames, results, strict=True)]
        }
    else:
        shown = dict(results[0])
        if decoded.frame_count > 1:
            shown["frame"] = decoded.frames[0].index
    if decoded.dicom is not None:
        shown["dicom"] = dict(decoded.dicom)
    return shown
