"""What every decoder shares: output-section field checks, graph shape checks, sigmoid and rounding."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any, Final

import numpy as np

from modelrun.decoders.base import Dim, FailFn
from modelrun.errors import ModelConfigError
from modelrun.models.fields import one_of, show

SCORE_DECIMALS: Final = 6
BOX_DECIMALS: Final = 2


def score(value: Any) -> float:
    """A score as a plain float rounded to 6 decimals."""
    return round(float(value), SCORE_DECIMALS)


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """The logistic function in float64, without overflow for logits of any size."""
    values = np.asarray(logits, dtype=np.float64)
    # exp(-|x|) never overflows; the two branches are the same function rearranged for each sign.
    small = np.exp(-np.abs(values))
    return np.where(values >= 0, 1.0 / (1.0 + small), small / (1.0 + small))


class OutputSection:
    """Reads one model.json ``output`` object, failing with the field path (``output.<key>``) on a wrong value."""

    def __init__(self, section: Any, allowed: Sequence[str], fail: FailFn, *, prefix: str = "output") -> None:
        """Check that ``section`` is an object whose keys are all in ``allowed``.

        Raises:
            Whatever ``fail`` raises.
        """
        self.fail = fail
        self.prefix = prefix
        if not isinstance(section, dict):
            fail(prefix, f"must be a JSON object, got {show(section)}")
        unknown = sorted(set(section) - set(allowed))
        if unknown:
            fail(self.path(unknown[0]), f"is not a known key (known keys: {', '.join(sorted(allowed))})")
        self.section: dict[str, Any] = section

    def path(self, key: str) -> str:
        """The field path of ``key``: ``output.key``, or ``key`` alone for a top-level field (empty prefix)."""
        return f"{self.prefix}.{key}" if self.prefix else key

    def has(self, key: str) -> bool:
        return key in self.section

    def string(self, key: str) -> str:
        """A required non-empty string."""
        if key not in self.section:
            self.fail(self.path(key), "is required")
        value = self.section[key]
        if not isinstance(value, str) or not value:
            self.fail(self.path(key), f"must be a non-empty string, got {show(value)}")
        return value

    def choice(self, key: str, options: Sequence[str], default: str | None = None) -> str:
        """One of ``options``; required when ``default`` is None."""
        if key not in self.section:
            if default is not None:
                return default
            self.fail(self.path(key), "is required")
        value = self.section[key]
        if value not in options:
            self.fail(self.path(key), f"must be {one_of(options)}, got {show(value)}")
        return str(value)

    def boolean(self, key: str, default: bool) -> bool:
        value = self.section.get(key, default)
        if not isinstance(value, bool):
            self.fail(self.path(key), f"must be true or false, got {show(value)}")
        return value

    def number(self, key: str, default: float, *, low: float, high: float) -> float:
        """A finite number in ``[low, high]``."""
        return self.number_value(self.section.get(key, default), self.path(key), low=low, high=high)

    def number_value(self, value: Any, path: str, *, low: float, high: float) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            self.fail(path, f"must be a finite number, got {show(value)}")
        if not low <= value <= high:
            self.fail(path, f"must be between {low:g} and {high:g}, got {show(value)}")
        return float(value)

    def integer(self, key: str, default: int, *, low: int, high: int | None = None) -> int:
        """An integer in ``[low, high]`` (no upper bound when ``high`` is None)."""
        value = self.section.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(self.path(key), f"must be an integer, got {show(value)}")
        if value < low or (high is not None and value > high):
            bounds = f"at least {low}" if high is None else f"between {low} and {high}"
            self.fail(self.path(key), f"must be {bounds}, got {value}")
        return value


def graph_output(outputs: Mapping[str, Sequence[Dim]], name: str, field: str, fail: FailFn) -> list[Dim]:
    """The shape of the graph output ``name``, failing on ``field`` when the graph has no such output."""
    if name not in outputs:
        listing = ", ".join(f'"{known}"' for known in outputs) or "none"
        fail(field, f'"{name}" is not an output of the graph; graph outputs: {listing}')
    return list(outputs[name])


def check_one_score_per_label(
    outputs: Mapping[str, Sequence[Dim]], name: str, labels: tuple[str, ...], fail: FailFn
) -> None:
    """The output ``name`` exists and, when its per-image dims are all static, holds one score per label.

    Raises:
        Whatever ``fail`` raises: on ``output.name`` or ``labels``.
    """
    shape = graph_output(outputs, name, "output.name", fail)
    per_image = [static(dim) for dim in shape[1:]]
    if per_image and None not in per_image:
        classes = math.prod(dim for dim in per_image if dim is not None)
        if classes != len(labels):
            fail(
                "labels",
                f'has {len(labels)} entries but the graph output "{name}" shape {show_shape(shape)} has {classes} '
                "classes",
            )


def scores_per_label(outputs: Mapping[str, np.ndarray], name: str, labels: tuple[str, ...]) -> np.ndarray:
    """One image's output ``name`` flattened to one float64 score per label.

    Raises:
        ModelConfigError: the output holds another number of values (a dynamic dim the load could not check).
    """
    scores = np.asarray(outputs[name], dtype=np.float64).reshape(-1)
    if scores.shape[0] != len(labels):
        raise ModelConfigError(
            f'labels has {len(labels)} entries but output "{name}" returned {scores.shape[0]} scores per image',
            field="labels",
        )
    return scores


def static(dim: Dim) -> int | None:
    """A dimension's size when the graph fixes it, else None."""
    return dim if isinstance(dim, int) and dim > 0 else None


def show_shape(shape: Sequence[Dim]) -> str:
    return "[" + ", ".join(str(dim) if isinstance(dim, int) else json.dumps(dim) for dim in shape) + "]"
