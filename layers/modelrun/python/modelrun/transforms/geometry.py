"""Where the input tensor's pixels came from in the original image, so outputs can be put back onto it.

Every transform that moves pixels (resize, crop, letterbox, pad) is axis-aligned, so the whole pipeline composes to
one map per axis: ``x_input = x_original * sx + dx`` and ``y_input = y_original * sy + dy`` (coordinates in pixel
units, the top-left corner of the top-left pixel at 0). A decoder inverts it to report boxes and masks in the
original image's pixels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True, slots=True)
class Geometry:
    """The composed map from the original image to the model input.

    Attributes:
        original_size: ``(height, width)`` of the decoded image, before any transform.
        input_size: ``(height, width)`` of the tensor the model was given.
        scale: ``(sy, sx)``, input pixels per original pixel along each axis.
        offset: ``(dy, dx)``, where the original's top-left corner lands in the input (negative when cropped).
    """

    original_size: tuple[int, int]
    input_size: tuple[int, int]
    scale: tuple[float, float] = (1.0, 1.0)
    offset: tuple[float, float] = (0.0, 0.0)

    @classmethod
    def identity(cls, height: int, width: int) -> Geometry:
        """The geometry of an image given to the model as it is."""
        return cls(original_size=(height, width), input_size=(height, width))

    def then(self, scale: tuple[float, float], offset: tuple[float, float], size: tuple[int, int]) -> Geometry:
        """This geometry followed by one more step mapping ``p -> p * scale + offset`` onto a ``size`` image."""
        (sy, sx), (dy, dx) = self.scale, self.offset
        return Geometry(
            original_size=self.original_size,
            input_size=size,
            scale=(sy * scale[0], sx * scale[1]),
            offset=(dy * scale[0] + offset[0], dx * scale[1] + offset[1]),
        )

    def to_original_box(self, box: Sequence[float]) -> list[float]:
        """An ``[x1, y1, x2, y2]`` box in input pixels as original pixels, clipped to the original image."""
        (sy, sx), (dy, dx) = self.scale, self.offset
        height, width = self.original_size
        x1, y1, x2, y2 = (float(value) for value in box)
        xs = np.clip([(x1 - dx) / sx, (x2 - dx) / sx], 0.0, float(width))
        ys = np.clip([(y1 - dy) / sy, (y2 - dy) / sy], 0.0, float(height))
        return [float(xs[0]), float(ys[0]), float(xs[1]), float(ys[1])]

    def to_original_boxes(self, boxes: np.ndarray) -> np.ndarray:
        """Many boxes at once: ``[K, 4]`` rows of ``x1, y1, x2, y2`` in input pixels as float64 original pixels,
        clipped; each value is what :meth:`to_original_box` gives for its row."""
        (sy, sx), (dy, dx) = self.scale, self.offset
        height, width = self.original_size
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        mapped = np.empty_like(boxes)
        mapped[:, 0::2] = np.clip((boxes[:, 0::2] - dx) / sx, 0.0, float(width))
        mapped[:, 1::2] = np.clip((boxes[:, 1::2] - dy) / sy, 0.0, float(height))
        return mapped

    def to_original_mask(self, mask: np.ndarray) -> np.ndarray:
        """A mask over the input (``[input_h, input_w]`` of class indices) resampled onto the original image.

        Each original pixel takes the input pixel its centre maps into (nearest neighbour, so class indices stay
        class indices); original pixels that map outside the input, such as those a centre crop cut away, are 0
        (background).

        Raises:
            ValueError: the mask is not 2-D.
        """
        if mask.ndim != 2:
            raise ValueError(f"expected a 2-D mask, got shape {list(mask.shape)}")
        (sy, sx), (dy, dx) = self.scale, self.offset
        height, width = self.original_size
        in_h, in_w = mask.shape
        rows = np.floor((np.arange(height) + 0.5) * sy + dy).astype(np.int64)
        cols = np.floor((np.arange(width) + 0.5) * sx + dx).astype(np.int64)
        # Whole rows first, then columns: two gathers along one axis each, a quarter of one 2-D fancy index's time.
        out = mask.take(np.clip(rows, 0, in_h - 1), axis=0).take(np.clip(cols, 0, in_w - 1), axis=1)
        out[(rows < 0) | (rows >= in_h)] = 0
        out[:, (cols < 0) | (cols >= in_w)] = 0
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, in the order ``[y, x]`` / ``[height, width]`` throughout."""
        return {
            "original_size": list(self.original_size),
            "input_size": list(self.input_size),
            "scale": [round(value, 6) for value in self.scale],
            "offset": [round(value, 6) for value in self.offset],
        }
