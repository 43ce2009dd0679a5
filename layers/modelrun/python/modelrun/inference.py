"""From class probabilities to predictions: softmax, top-k and the batched predict call."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from modelrun.models.onnx import LoadedModel
    from modelrun.models.spec import ModelSpec

SCORE_DECIMALS = 6


@dataclass(frozen=True, slots=True)
class Prediction:
    """The best label and its score, plus the ``top_k`` best as ``[{"label", "score"}]``, best first."""

    label: str
    score: float
    top_k: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "score": self.score, "top_k": [dict(entry) for entry in self.top_k]}


def softmax(logits: np.ndarray) -> np.ndarray:
    """Softmax over the last axis, computed stably (max subtracted) in float64, returned as float32."""
    values = np.asarray(logits, dtype=np.float64)
    shifted = values - values.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return (exp / exp.sum(axis=-1, keepdims=True)).astype(np.float32)


def postprocess(probs: np.ndarray, spec: ModelSpec) -> Prediction:
    """Top-k of one image's probabilities.

    Args:
        probs: 1-D, one probability per label.
        spec: gives the labels and ``top_k``.

    Returns:
        The prediction; ties go to the lower class index, scores are plain floats rounded to 6 decimals.

    Raises:
        ValueError: ``probs`` is not 1-D with one value per label (a caller bug).
    """
    values = np.asarray(probs, dtype=np.float64)
    if values.ndim != 1 or values.shape[0] != len(spec.labels):
        raise ValueError(f"expected {len(spec.labels)} probabilities, got shape {list(values.shape)}")
    # NaN would sort unpredictably; rank it last.
    ranked = np.where(np.isnan(values), -np.inf, values)
    order = np.argsort(-ranked, kind="stable")[: spec.top_k]
    top = [{"label": spec.labels[index], "score": round(float(values[index]), SCORE_DECIMALS)} for index in order]
    return Prediction(label=top[0]["label"], score=top[0]["score"], top_k=top)


def predict_arrays(model: LoadedModel, arrays: list[np.ndarray]) -> list[Prediction]:
    """Predict preprocessed images (each shaped like ``model.spec.input.image_shape``), in input order.

    The arrays are stacked into one batch; :meth:`LoadedModel.run` runs it in one call for a dynamic batch
    dimension, or image by image (or in chunks) for a fixed one.
    """
    if not arrays:
        return []
    probs = model.run(np.stack(arrays))
    return [postprocess(row, model.spec) for row in probs]
