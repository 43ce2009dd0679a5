"""Classification: one score per label, softmax for logits, the best label and the top k."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np

from modelrun.decoders.base import Dim, FailFn
from modelrun.decoders.common import OutputSection, check_one_score_per_label, score, scores_per_label
from modelrun.transforms import Geometry

OUTPUT_TYPES: Final = ("probabilities", "logits")
MAX_DEFAULT_TOP_K: Final = 5


@dataclass(frozen=True, slots=True)
class Prediction:
    """The best label and its score, plus the ``top_k`` best as ``[{"label", "score"}]``, best first."""

    label: str
    score: float
    top_k: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "score": self.score, "top_k": [dict(entry) for entry in self.top_k]}


@dataclass(frozen=True, slots=True)
class ClassificationOutput:
    """Which graph output holds the class scores, whether they are logits, and how many of the best to report."""

    name: str
    type: str
    top_k: int


def softmax(logits: np.ndarray) -> np.ndarray:
    """Softmax over the last axis, computed stably (max subtracted) in float64, returned as float32."""
    values = np.asarray(logits, dtype=np.float64)
    shifted = values - values.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return (exp / exp.sum(axis=-1, keepdims=True)).astype(np.float32)


def rank(probs: np.ndarray, labels: Sequence[str], top_k: int) -> Prediction:
    """The ``top_k`` best of one image's probabilities.

    Args:
        probs: 1-D, one probability per label.
        labels: the label of each index.
        top_k: how many to report, at least 1.

    Returns:
        The prediction; ties go to the lower class index, NaN ranks last, scores are plain floats rounded to 6
        decimals.

    Raises:
        ValueError: ``probs`` is not 1-D with one value per label (a caller bug).
    """
    values = np.asarray(probs, dtype=np.float64)
    if values.ndim != 1 or values.shape[0] != len(labels):
        raise ValueError(f"expected {len(labels)} probabilities, got shape {list(values.shape)}")
    # NaN would sort unpredictably; rank it last.
    ranked = np.where(np.isnan(values), -np.inf, values)
    order = np.argsort(-ranked, kind="stable")[:top_k]
    top = [{"label": labels[index], "score": score(values[index])} for index in order]
    return Prediction(label=top[0]["label"], score=top[0]["score"], top_k=top)


class ClassificationDecoder:
    """``{"name", "type": "probabilities"|"logits"}`` plus the model's ``top_k`` -> ``{"label", "score", "top_k"}``."""

    task = "classification"

    def parse_output(self, section: Any, labels: tuple[str, ...], fail: FailFn) -> ClassificationOutput:
        """Validate ``{"name", "type"}``; ``top_k`` (model.json's top-level field, passed in the same object)
        defaults to the label count capped at 5 and is reported as ``top_k`` when wrong.

        Raises:
            Whatever ``fail`` raises.
        """
        fields = OutputSection(section, ("name", "type", "top_k"), fail)
        name = fields.string("name")
        kind = fields.choice("type", OUTPUT_TYPES)
        top_k = min(MAX_DEFAULT_TOP_K, len(labels))
        if fields.has("top_k"):
            top = OutputSection({"top_k": section["top_k"]}, ("top_k",), fail, prefix="")
            top_k = top.integer("top_k", top_k, low=1, high=len(labels))
        return ClassificationOutput(name=name, type=kind, top_k=top_k)

    def output_names(self, config: ClassificationOutput) -> tuple[str, ...]:
        return (config.name,)

    def check_graph(
        self, config: ClassificationOutput, outputs: Mapping[str, Sequence[Dim]], labels: tuple[str, ...], fail: FailFn
    ) -> None:
        """The output exists and, when its per-image dims are static, holds one score per label.

        Raises:
            Whatever ``fail`` raises: on ``output.name`` or ``labels``.
        """
        check_one_score_per_label(outputs, config.name, labels, fail)

    def decode(
        self,
        outputs: Mapping[str, np.ndarray],
        config: ClassificationOutput,
        labels: tuple[str, ...],
        geometry: Geometry,
    ) -> dict[str, Any]:
        """``{"label", "score", "top_k": [{"label", "score"}]}``, best first, ties to the lower index.

        Raises:
            ModelConfigError: the output does not hold one score per label.
        """
        scores = scores_per_label(outputs, config.name, labels)
        probs = softmax(scores) if config.type == "logits" else scores.astype(np.float32, copy=False)
        return rank(probs, labels, config.top_k).to_dict()

    def describe(self, config: ClassificationOutput) -> dict[str, Any]:
        """``{"name", "type"}`` as model.json writes it (``top_k`` stays a top-level field of the model)."""
        return {"name": config.name, "type": config.type}
