"""Values of interest: real pixel values (Hounsfield units, raw 16-bit counts) to the 0..255 scale of an 8-bit image.

Every VOI here returns finite float32 in 0..255, never quantised, so resizing afterwards keeps the precision of the
source; a NaN value gives 0 (an infinity the end of the range it points to), so nothing after the VOI checks again.
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
        """The values windowed to finite float32 in 0..255 (same shape); NaN gives 0, as below the window."""
        c, w = self.center, self.width
        if self.function == "sigmoid":
            # float64: exp overflows float32 for values 22 widths below the centre.
            x = np.asarray(values, dtype=np.float64)
            return _finite(np.asarray(OUTPUT_MAX / (1.0 + np.exp(-4.0 * (x - c) / w)), dtype=np.float32))
        if self.function == "linear_exact":
            return _ramp(values, c, OUTPUT_MAX / w)
        if w == 1:
            # The linear function's ramp has no inside at width 1: a threshold at c - 0.5, compared in float64.
            threshold = np.float64(c - 0.5)
            return np.where(np.asarray(values) > threshold, np.float32(OUTPUT_MAX), np.float32(0.0))
        # C.11.2.1.2: ((x - (c - 0.5)) / (w - 1) + 0.5) * 255, at or below its lower edge 0, above its upper 255;
        # the ramp itself reaches 0 and 255 at those edges, so clipping it gives both.
        return _ramp(values, c - 0.5, OUTPUT_MAX / (w - 1))


def _ramp(values: np.ndarray, centre: float, slope: float) -> np.ndarray:
    """``(x - centre) * slope + 127.5`` clipped to 0..255, in float32 (a 16-bit frame's values are exact in it).

    The centre is split into its float32 part, subtracted from the values (exactly, for values within the window),
    and the rest, folded into the offset: a centre float32 cannot hold (40.3, or 3000.25) moves no edge.
    """
    head = np.float32(centre)
    rest = centre - float(head)
    out = np.subtract(values, head, dtype=np.float32)
    out *= np.float32(slope)
    out += np.float32(OUTPUT_MAX / 2 - rest * slope)
    return _finite(out)


def _finite(values: np.ndarray) -> np.ndarray:
    """float32 values with NaN replaced by 0 and the infinities clipped to 0..255 (in place when it can)."""
    values = np.clip(values, 0.0, OUTPUT_MAX, out=values if values.flags.writeable else None)
    nan = np.isnan(values)
    if nan.any():
        values[nan] = 0.0
    return values


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
        """The values stretched to finite float32 in 0..255 (same shape)."""
        x = np.asarray(values, dtype=np.float64)
        if self.high <= self.low:
            return np.zeros(x.shape, dtype=np.float32)
        out = (x - self.low) / (self.high - self.low) * OUTPUT_MAX
        return _finite(out.astype(np.float32))


Voi = Window | Lut | Range
