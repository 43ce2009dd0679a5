"""The decoded image every decoder returns and the transforms consume: frames of pixels and what they mean."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from modelrun.images.voi import Voi


@dataclass(frozen=True, slots=True)
class Frame:
    """One frame ready for the transforms.

    Attributes:
        pixels: a raster image as decoded (Pillow; ``RGB`` for DICOM colour), or for DICOM greyscale the real values
            (after the Modality LUT: Hounsfield units for CT) as a float32 ``[rows, columns]`` array, which the VOI
            reads as it is.
        index: the frame's index in its file (0 for a single-frame image).
        voi: for DICOM greyscale, the VOI used when the model declares no window (the file's first window or VOI
            LUT, else the range of the decoded frames); None for raster images, whose values are used as they are.
        invert: MONOCHROME1, where the lowest value is white: inverted after the VOI.
    """

    pixels: Image.Image | np.ndarray
    index: int = 0
    voi: Voi | None = None
    invert: bool = False

    @property
    def image(self) -> Image.Image:
        """The frame as a Pillow image: real values as an ``F`` image (a new one on each call)."""
        if isinstance(self.pixels, Image.Image):
            return self.pixels
        return Image.fromarray(self.pixels, mode="F")


@dataclass(frozen=True, slots=True)
class DecodedImage:
    """An untrusted file decoded: the frames the model's frame policy selected, in file order.

    Attributes:
        frames: at least one frame.
        frame_count: how many frames the file has (a raster image has one).
        dicom: for DICOM, the UIDs and allow-listed technical attributes a result carries (never logged); else None.
    """

    frames: tuple[Frame, ...]
    frame_count: int = 1
    dicom: dict[str, Any] | None = field(default=None)

    @classmethod
    def single(cls, image: Image.Image) -> DecodedImage:
        """A one-frame image."""
        return cls(frames=(Frame(image),))
