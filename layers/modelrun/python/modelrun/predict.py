"""Single-image prediction: the domain operation behind POST /predictions (and upload triggers).

Decode the bytes, prepare the model's inputs (transforms or the model's own preprocess), run the graph once, decode
the outputs (the task's decoder or the model's own postprocess). The response is the task's result plus the model,
the version, an id and the timings; a classification keeps exactly the keys it always had.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

from modelrun.decoders import Mask
from modelrun.images.decode import Limits, decode_image
from modelrun.models.registry import ModelRegistry


def _ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1000, 3)


@dataclass
class Predictor:
    """Predicts one image at a time with the registry's models (thread-safe)."""

    registry: ModelRegistry
    limits: Limits
    default_model: str

    def predict(
        self, image: bytes, *, model: str | None = None, version: str | None = None, masks: bool = True
    ) -> dict[str, Any]:
        """Predict one image and describe the result.

        Args:
            image: the untrusted image bytes.
            model: the model name; None for the default model.
            version: the version; None for the latest.
            masks: whether a segmentation mask is inlined (base64 PNG under ``"mask"``); False leaves it out.

        Returns:
            ``{"prediction_id", "model", "version", <the task's result fields>, "timings_ms"}``; timings are
            ``preprocess`` (model lookup, decoding and preparing), ``inference`` (the graph run) and ``total``
            (including decoding the outputs).

        Raises:
            UnknownModel: no such model or version.
            InvalidImage, UnsupportedMediaType, ImageTooLarge: the bytes are not an image the platform takes.
            ModelConfigError: the model folder is broken.
            ModelCodeError: the model's own code failed on this image.
        """
        prediction = self.predict_raw(image, model=model, version=version)
        if isinstance(prediction.get("mask"), Mask):
            if masks:
                prediction["mask"] = prediction["mask"].inline()
            else:
                del prediction["mask"]
        return prediction

    def predict_raw(self, image: bytes, *, model: str | None = None, version: str | None = None) -> dict[str, Any]:
        """As :meth:`predict`, with a segmentation mask left as the :class:`~modelrun.decoders.Mask` object (for
        callers that store the PNG themselves). Raises as :meth:`predict`."""
        started = time.perf_counter()
        loaded = self.registry.get(model or self.default_model, version)
        feeds, geometry = loaded.prepare(decode_image(image, self.limits))
        preprocess_ms = _ms(started)
        inference_started = time.perf_counter()
        (outputs,) = loaded.infer([feeds])
        inference_ms = _ms(inference_started)
        result = loaded.decode(outputs, geometry)
        return {
            "prediction_id": str(uuid.uuid4()),
            "model": loaded.spec.name,
            "version": loaded.spec.version,
            **result,
            "timings_ms": {"preprocess": preprocess_ms, "inference": inference_ms, "total": _ms(started)},
        }
