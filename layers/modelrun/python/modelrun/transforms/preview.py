"""The model's view of an image as an 8-bit PNG: what a browser shows under a result when it cannot decode the file.

A DICOM frame holds real values (Hounsfield units, 16-bit counts) that no browser can draw. The preview is the frame
after the VOI (the model's window, else the file's) and MONOCHROME1's inversion, exactly as the transforms take it
(:meth:`~modelrun.transforms.pipeline.Pipeline.intensities`), rounded to 8 bits at the frame's original size, so a
result's boxes and masks, which are in the original pixels, line up with it. Colour stays RGB; other raster images
are shown as the pipeline brings them to 8 bits.

The previews of one response are bounded (:data:`MAX_PREVIEW_BYTES`): a response must fit Lambda's 6 MB.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
from PIL import Image

from modelrun.errors import PreviewTooLarge
from modelrun.images.image import Frame
from modelrun.transforms.pipeline import Pipeline

MAX_PREVIEW_BYTES: Final = 3 * 1024 * 1024
"""The most PNG bytes the previews of one prediction may take: base64 makes them 4 MB of the 6 MB a synchronous
Lambda response may carry, leaving the rest for the result (a segmentation mask is about as large as a preview)."""

# Fast, lossless, and small enough for the flat backgrounds of medical images; the best level costs 3-5x the time.
_PNG_COMPRESSION: Final = 3


@dataclass(frozen=True, slots=True)
class Preview:
    """One frame's picture: its index in the file and its PNG bytes (8-bit grey ``L`` or ``RGB``)."""

    frame: int
    width: int
    height: int
    png: bytes

    def inline(self) -> dict[str, Any]:
        """As a response field: ``{"frame", "format", "width", "height", "encoding", "data"}`` (base64 PNG)."""
        return {
            "frame": self.frame,
            "format": "png",
            "width": self.width,
            "height": self.height,
            "encoding": "base64",
            "data": base64.b64encode(self.png).decode("ascii"),
        }


def preview(frame: Frame, pipeline: Pipeline) -> Preview:
    """The frame as the model's transforms see it before any resize, as an 8-bit PNG at its original size."""
    image = eight_bit(pipeline.intensities(frame))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=_PNG_COMPRESSION)
    return Preview(frame=frame.index, width=image.width, height=image.height, png=buffer.getvalue())


def previews(frames: tuple[Frame, ...], pipeline: Pipeline) -> list[Preview]:
    """Every frame's preview, in order.

    Raises:
        PreviewTooLarge: the PNGs together pass :data:`MAX_PREVIEW_BYTES` (the message says how to ask for less).
    """
    made: list[Preview] = []
    total = 0
    for frame in frames:
        made.append(preview(frame, pipeline))
        total += len(made[-1].png)
        if total > MAX_PREVIEW_BYTES:
            raise PreviewTooLarge(
                f"the preview of {len(frames)} frame(s) passes {MAX_PREVIEW_BYTES // (1024 * 1024)} MB after "
                f"{len(made)} frame(s), more than a response can carry: ask without preview, or use a model that "
                'predicts one frame ("frames": "first" or "middle")',
                frames=len(frames),
            )
    return made


def eight_bit(image: Image.Image) -> Image.Image:
    """``L`` or ``RGB``: an ``F`` image (already on the 0..255 scale) rounded and clipped, 16-bit grey scaled from
    0..65535, palettes and alpha resolved; ``L`` and ``RGB`` as they are."""
    if image.mode in ("L", "RGB"):
        return image
    if image.mode == "F":
        values = np.rint(np.asarray(image, dtype=np.float32))
        return Image.fromarray(np.clip(values, 0, 255).astype(np.uint8), mode="L")
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        values = np.asarray(image, dtype=np.float64) / 65535 * 255
        return Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8), mode="L")
    return image.convert("RGB")
