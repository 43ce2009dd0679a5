"""Values of interest: real pixel values (Hounsfield units, raw 16-bit counts) to the 0..255 scale of an 8-bit image.

Every VOI here returns float32 in 0..255, never quantised, so resizing afterwards keeps the precision of the source.
The window functions are DICOM PS3.3 C.11.2.1.2 (``LINEAR``), C.11.2.1.3.2 (``LINEAR_EXACT``) and C.11.2.1.3.1
(``SIGMOID``) with an output range of 0..255; a LUT maps ``first + i`` to its i-th value, inputs below the first
entry to the first value and above the last to the last (C.11.2.1.1).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np

WINDOW_FUNCTIONS: Final = ("linear", "linear_exact", "sigmoid")
OUTPUT_MAX: Final = 255.0


@dataclass(frozen=True, slots=True)
class Window:
    """A window of ``width`` around ``center``; ``width`` is at least 1 for ``linear``, above 0 for the others."""

    center: float
    width: float
    function: str = "linear"

    def apply(self, values: np.ndarray) -> np.ndarray:
        """The values windowed to float32 in 0..255 (same shape)."""
        x = np.asarray(values, dtype=np.float64)
        c, w = self.center, self.width
        if self.function == "sigmoid":
            out = OUTPUT_MAX / (1.0 + np.exp(-4.0 * (x - c) / w))
        elif self.function == "linear_exact":
            out = np.clip(((x - c) / w + 0.5) * OUTPUT_MAX, 0.0, OUTPUT_MAX)
            out = np.where(x <= c - w / 2, 0.0, np.where(x > c + w / 2, OUTPUT_MAX, out))
        elif w == 1:
            # The linear function's ramp has no inside at width 1: a threshold at c - 0.5.
            out = np.where(x <= c - 0.5, 0.0, OUTPUT_MAX)
        else:
            ramp = ((x - (c - 0.5)) / (w - 1) + 0.5) * OUTPUT_MAX
            low, high = c - 0.5 - (w - 1) / 2, c - 0.5 + (w - 1) / 2
            out = np.where(x <= low, 0.0, np.where(x > high, OUTPUT_MAX, ramp))
        return np.asarray(out, dtype=np.float32)


@dataclass(frozen=True, slots=True)
class Lut:
    """A VOI LUT: input ``first + i`` maps to ``values[i]`` (already on the 0..255 scale)."""

    first: int
    values: tuple[float, ...]

    def apply(self, values: np.ndarray) -> np.ndarray:
        """The values looked up, float32 in 0..255 (same shape)."""
        table = np.asarray(self.values, dtype=np.float32)
        index = np.clip(np.floor(np.asarray(values, dtype=np.float64)) - self.first, 0, len(table) - 1)
        return table[index.astype(np.intp)]


@dataclass(frozen=True, slots=True)
class Range:
    """The image's own range: ``low`` to 0 and ``high`` to 255, linearly (a flat image is all 0)."""

    low: float
    high: float

    @classmethod
    def of(cls, values: np.ndarray) -> Range:
        """The range of the finite values (0..0 when there are none)."""
        finite = np.asarray(values, dtype=np.float64)
        finite = finite[np.isfinite(finite)]
        if finite.size == 0:
            return cls(0.0, 0.0)
        return cls(float(finite.min()), float(finite.max()))

    def apply(self, values: np.ndarray) -> np.ndarray:
        """The values stretched to float32 in 0..255 (same shape)."""
        x = np.asarray(values, dtype=np.float64)
        if self.high <= self.low:
            return np.zeros(x.shape, dtype=np.float32)
        out = (x - self.low) / (self.high - self.low) * OUTPUT_MAX
        return np.asarray(np.clip(out, 0.0, OUTPUT_MAX), dtype=np.float32)


Voi = Window | Lut | Range
