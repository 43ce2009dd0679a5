"""Multi-label classification: an independent score per label, every label at or above its threshold."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np

from modelrun.decoders.base import Dim, FailFn
from modelrun.decoders.common import OutputSection, check_one_score_per_label, score, scores_per_label, show, sigmoid
from modelrun.transforms import Geometry

OUTPUT_TYPES: Final = ("probabilities", "logits")
DEFAULT_THRESHOLD: Final = 0.5


@dataclass(frozen=True, slots=True)
class MultilabelOutput:
    """The scores output, whether it holds logits, and the threshold of each label (in label order)."""

    name: str
    type: str
    threshold: float
    thresholds: tuple[tuple[str, float], ...]
    """The per-label overrides as model.json gave them (the rest use ``threshold``)."""

    def threshold_of(self, labels: tuple[str, ...]) -> np.ndarray:
        overrides = dict(self.thresholds)
        return np.array([overrides.get(label, self.threshold) for label in labels], dtype=np.float64)


class MultilabelDecoder:
    """``{"name", "type", "threshold", "thresholds"}`` -> ``{"labels": [{"label", "score"}], "scores": {...}}``."""

    task = "multilabel"

    def parse_output(self, section: Any, labels: tuple[str, ...], fail: FailFn) -> MultilabelOutput:
        """Validate the section; thresholds are in ``[0, 1]`` and ``thresholds`` keys must be labels.

        Raises:
            Whatever ``fail`` raises: e.g. on ``output.thresholds.<key>`` for a key that is not a label.
        """
        fields = OutputSection(section, ("name", "type", "threshold", "thresholds"), fail)
        name = fields.string("name")
        kind = fields.choice("type", OUTPUT_TYPES)
        threshold = fields.number("threshold", DEFAULT_THRESHOLD, low=0.0, high=1.0)
        raw = section.get("thresholds", {})
        if not isinstance(raw, dict):
            fail("output.thresholds", f"must be a JSON object of label -> threshold, got {show(raw)}")
        overrides = []
        for label, value in raw.items():
            path = f"output.thresholds.{label}"
            if label not in labels:
                fail(path, f"is not one of the labels (labels: {', '.join(labels)})")
            overrides.append((label, fields.number_value(value, path, low=0.0, high=1.0)))
        return MultilabelOutput(name=name, type=kind, threshold=threshold, thresholds=tuple(overrides))

    def output_names(self, config: MultilabelOutput) -> tuple[str, ...]:
        return (config.name,)

    def check_graph(
        self, config: MultilabelOutput, outputs: Mapping[str, Sequence[Dim]], labels: tuple[str, ...], fail: FailFn
    ) -> None:
        """The output exists and, when its per-image dims are static, holds one score per label.

        Raises:
            Whatever ``fail`` raises: on ``output.name`` or ``labels``.
        """
        check_one_score_per_label(outputs, config.name, labels, fail)

    def decode(
        self,
        outputs: Mapping[str, np.ndarray],
        config: MultilabelOutput,
        labels: tuple[str, ...],
        geometry: Geometry,
    ) -> dict[str, Any]:
        """``{"labels": [...], "scores": {label: score}}``.

        ``labels`` lists every label whose rounded score (the one reported) is at or above its threshold, best
        first, ties to the lower index; ``scores`` holds every label's score, in label order. Scores are rounded
        to 6 decimals; NaN scores are never selected.

        Raises:
            ModelConfigError: the output does not hold one score per label.
        """
        values = scores_per_label(outputs, config.name, labels)
        if config.type == "logits":
            values = sigmoid(values)
        rounded = np.array([score(value) for value in values], dtype=np.float64)
        # NaN compares false, so a broken score is never selected.
        selected = np.flatnonzero(rounded >= config.threshold_of(labels))
        best_first = selected[np.argsort(-rounded[selected], kind="stable")]
        return {
            "labels": [{"label": labels[index], "score": float(rounded[index])} for index in best_first],
            "scores": {label: float(value) for label, value in zip(labels, rounded, strict=True)},
        }

    def describe(self, config: MultilabelOutput) -> dict[str, Any]:
        return {
            "name": config.name,
            "type": config.type,
            "threshold": config.threshold,
            "thresholds": dict(config.thresholds),
        }
