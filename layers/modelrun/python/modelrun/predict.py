"""Single-image prediction: the domain operation behind POST /predictions (and upload triggers)."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

from modelrun.images.decode import Limits
from modelrun.inference import predict_arrays
from modelrun.models.registry import ModelRegistry
from modelrun.transforms.pipeline import preprocess


def _ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1000, 3)


@dataclass
class Predictor:
    registry: ModelRegistry
    limits: Limits
    default_model: str

    def predict(self, image: bytes, *, model: str | None = None, version: str | None = None) -> dict[str, Any]:
        """Preprocess one image, run the model once, and describe the result."""
        started = time.perf_counter()
        loaded = self.registry.get(model or self.default_model, version)
        tensor = preprocess(image, loaded.spec, self.limits)
        preprocess_ms = _ms(started)
        inference_started = time.perf_counter()
        (prediction,) = predict_arrays(loaded, [tensor])
        inference_ms = _ms(inference_started)
        return {
            "prediction_id": str(uuid.uuid4()),
            "model": loaded.spec.name,
            "version": loaded.spec.version,
            **prediction.to_dict(),
            "timings_ms": {"preprocess": preprocess_ms, "inference": inference_ms, "total": _ms(started)},
        }
