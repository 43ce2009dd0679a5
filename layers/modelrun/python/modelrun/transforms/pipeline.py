"""A decoded image through model.json's transforms to the model's input array, with the geometry of the way there.

The pipeline first maps a greyscale image's real values to 0..255 in the standard's order (DICOM PS3.3 C.11): the VOI,
which is the model's ``window`` when it declares one, else a DICOM file's own window, VOI LUT or range (16-bit raster
images without a model window are scaled to 0..255 as before), then MONOCHROME1 inverted. The result is float32 on the
scale of an 8-bit image, never quantised, so the steps after it work unchanged. It then brings any Pillow mode to the
model's colour mode (transparency composited onto white, 16-bit scaled to 0..255), runs the image steps in order,
makes a float32 array (a grey plane is repeated to three channels for a colour model, BGR reverses the channels),
then normalises, casts and lays it out. A flat ``input`` section
expands to the same steps (:meth:`~modelrun.models.spec.InputSpec.steps`), so it gives the tensor it always gave.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
from PIL import Image

from modelrun.errors import UnsupportedMediaType
from modelrun.images.decode import Limits, decode_image
from modelrun.images.image import Frame
from modelrun.images.voi import OUTPUT_MAX
from modelrun.models.spec import InputSpec, ModelSpec
from modelrun.transforms.geometry import Geometry
from modelrun.transforms.steps import (
    COLOR_MODES,
    DEFAULT_COLOR_MODE,
    DEFAULT_DTYPE,
    DEFAULT_LAYOUT,
    CenterCrop,
    Color,
    Dtype,
    ImageStep,
    Layout,
    Letterbox,
    Normalize,
    PadToMultiple,
    Resize,
    Step,
    Window,
    needs_rgb,
)

_SIXTEEN_BIT_MODES: Final = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I"})
_GREY_VALUE_MODES: Final = frozenset({"L", "F", *_SIXTEEN_BIT_MODES})
_WHITE: Final = 255


@dataclass(frozen=True, slots=True)
class Extent:
    """What the transforms guarantee about one side of the input, whatever the image.

    Attributes:
        fixed: the side's length when every image gets the same one, else None.
        bound: the most it can be when it varies but is limited, else None (``fixed`` implies ``bound``).
        by: the field that decides ``fixed`` (``transforms[2].size``, ``input.size``), for error messages.
    """

    fixed: int | None = None
    bound: int | None = None
    by: str = "transforms"


UNBOUNDED: Final = Extent()


class Pipeline:
    """One model's transform steps, ready to run on images (stateless, shared across threads)."""

    def __init__(self, steps: Sequence[Step]) -> None:
        self.steps = tuple(steps)
        self.color = next((step for step in self.steps if isinstance(step, Color)), None)
        self.color_mode = self.color.mode if self.color is not None else DEFAULT_COLOR_MODE
        self.window = next((step for step in self.steps if isinstance(step, Window)), None)
        self.image_steps = [step for step in self.steps if isinstance(step, ImageStep)]
        self.normalize = next((step for step in self.steps if isinstance(step, Normalize)), None)
        self.dtype_step = next((step for step in self.steps if isinstance(step, Dtype)), None)
        self.layout_step = next((step for step in self.steps if isinstance(step, Layout)), None)
        self.dtype = self.dtype_step.dtype if self.dtype_step is not None else DEFAULT_DTYPE
        self.layout = self.layout_step.layout if self.layout_step is not None else DEFAULT_LAYOUT
        self._final = (
            self.dtype_step or Dtype(DEFAULT_DTYPE),
            self.layout_step or Layout(DEFAULT_LAYOUT),
        )
        self._pads_unevenly = any(
            isinstance(step, CenterCrop | Letterbox | PadToMultiple) and needs_rgb(step.fill)
            for step in self.image_steps
        )

    @property
    def channels(self) -> int:
        return COLOR_MODES[self.color_mode]

    def run(self, image: Image.Image | Frame) -> tuple[np.ndarray, Geometry]:
        """One image (or one frame of a decoded file) to its input array (no batch dimension) and where its pixels
        came from.

        Raises:
            UnsupportedMediaType: a Pillow mode that cannot be converted to RGB.
        """
        frame = image if isinstance(image, Frame) else Frame(image)
        windowed = self._voi_image(frame)
        # The VOI's values are finite and in 0..255 already: what _to_color_mode would make of them, without a copy.
        image = windowed if windowed is not None else frame.image
        plane = windowed if windowed is not None else _to_color_mode(image, self.color_mode)
        if self.channels == 3 and plane.mode != "RGB" and self._pads_unevenly:
            # A grey plane stands for three equal channels; a fill that differs per channel needs real ones.
            plane = _grey_to_rgb(plane)
        width, height = image.size
        geometry = Geometry.identity(height, width)
        for step in self.image_steps:
            plane, geometry = step.apply(plane, geometry, self.color_mode)

        # With a normalize step the pixels stay as decoded (uint8 or float32) until it converts them while scaling.
        pixels = np.asarray(plane) if self.normalize is not None else np.asarray(plane, dtype=np.float32)
        if pixels.ndim == 2:
            pixels = pixels[:, :, np.newaxis]
        if self.channels == 3 and pixels.shape[2] == 1:
            pixels = np.repeat(pixels, 3, axis=2)
        if self.color_mode == "BGR":
            pixels = pixels[:, :, ::-1]
        if self.normalize is not None:
            pixels = self.normalize.apply(pixels)
        for step in self._final:
            pixels = step.apply(pixels)
        return np.ascontiguousarray(pixels), geometry

    def intensities(self, frame: Frame) -> Image.Image:
        """The frame's grey values through the VOI (the model's window, else the frame's own) and MONOCHROME1's
        inversion, as a new ``F`` image of finite values in 0..255; a colour image, or a raster one when the model has
        no window, as is.
        """
        windowed = self._voi_image(frame)
        return windowed if windowed is not None else frame.image

    def _voi_image(self, frame: Frame) -> Image.Image | None:
        """:meth:`intensities` when a VOI applies, else None."""
        voi = self.window.voi if self.window is not None else frame.voi
        if voi is None:
            return None
        if isinstance(frame.pixels, np.ndarray):
            values = voi.apply(frame.pixels)
        elif frame.pixels.mode in _GREY_VALUE_MODES:
            values = voi.apply(np.asarray(frame.pixels))
        else:
            return None
        if frame.invert:
            values = np.subtract(np.float32(OUTPUT_MAX), values, out=values)
        return Image.fromarray(np.ascontiguousarray(values, dtype=np.float32), mode="F")

    def extents(self) -> tuple[Extent, Extent]:
        """``(height, width)``: what the steps guarantee about the input's size, read from the steps alone."""
        height, width = UNBOUNDED, UNBOUNDED
        for step in self.image_steps:
            if isinstance(step, Resize):
                if step.size is not None and not step.keep_aspect:
                    by = step.origin.field("size")
                    height, width = Extent(step.size[0], step.size[0], by), Extent(step.size[1], step.size[1], by)
                elif step.size is not None:
                    height, width = Extent(bound=step.size[0]), Extent(bound=step.size[1])
                elif step.longer is not None:
                    height, width = Extent(bound=step.longer), Extent(bound=step.longer)
                else:
                    # The shorter side is N, but which side that is depends on the image: both can be anything.
                    height, width = UNBOUNDED, UNBOUNDED
            elif isinstance(step, CenterCrop | Letterbox):
                by = step.origin.field("size")
                height, width = Extent(step.size[0], step.size[0], by), Extent(step.size[1], step.size[1], by)
            else:
                height = _padded(height, step)
                width = _padded(width, step)
        return height, width

    def image_shape(self) -> tuple[int | None, int | None, int | None]:
        """One image's array shape in the pipeline's layout, None where it depends on the image."""
        height, width = (extent.fixed for extent in self.extents())
        if self.layout == "NCHW":
            return (self.channels, height, width)
        return (height, width, self.channels)


def to_tensor(img: Image.Image, spec: InputSpec) -> np.ndarray:
    """The input array the flat ``input`` shorthand makes of one image (no batch dimension).

    Returns:
        Array of shape ``spec.image_shape`` and dtype ``spec.dtype``.
    """
    tensor, _ = Pipeline(spec.steps()).run(img)
    return tensor


def preprocess(data: bytes, spec: ModelSpec, limits: Limits) -> np.ndarray:
    """Decode untrusted image bytes and run the model's transforms: its one input array (the first frame the model's
    frame policy selects), without geometry.

    Raises:
        InvalidImage, UnsupportedMediaType, ImageTooLarge: as :func:`~modelrun.images.decode.decode_image`.
    """
    decoded = decode_image(data, limits, spec.frames)
    tensor, _ = Pipeline(spec.transforms).run(decoded.frames[0])
    return tensor


def _padded(extent: Extent, step: PadToMultiple) -> Extent:
    multiple = step.multiple
    if extent.fixed is not None:
        fixed = -(-extent.fixed // multiple) * multiple
        by = extent.by if fixed == extent.fixed else step.origin.field("multiple")
        return Extent(fixed, fixed, by)
    if extent.bound is not None:
        return Extent(bound=-(-extent.bound // multiple) * multiple)
    return extent


def _grey_to_rgb(plane: Image.Image) -> Image.Image:
    if plane.mode == "F":
        plane = Image.fromarray(np.clip(np.rint(np.asarray(plane)), 0, 255).astype(np.uint8))
    return plane.convert("RGB")


def _to_color_mode(img: Image.Image, color_mode: str) -> Image.Image:
    """The image as ``L`` (or ``F`` for high bit depths) for a grey model, ``RGB`` (or grey) for a colour one.

    A grey image is kept single-channel for a colour model and repeated to 3 channels after resizing (cheaper).
    """
    plane = _flatten(img)
    if color_mode == "L" and plane.mode == "RGB":
        return plane.convert("L")
    return plane


def _flatten(img: Image.Image) -> Image.Image:
    """Any Pillow mode to ``L``, ``F`` (grey, 0..255 as floats) or ``RGB``, transparency on white."""
    mode = img.mode
    if mode in ("L", "RGB"):
        return img
    if mode == "1":
        return img.convert("L")
    if mode in _SIXTEEN_BIT_MODES:
        # 0..65535 -> 0..255: 65535 / 255 == 257 exactly, so full white stays full white.
        values = np.asarray(img).astype(np.float32) / np.float32(257.0)
        return Image.fromarray(np.clip(values, 0.0, 255.0).astype(np.float32))
    if mode == "F":
        values = np.nan_to_num(np.asarray(img, dtype=np.float32), nan=0.0, posinf=255.0, neginf=0.0)
        return Image.fromarray(np.clip(values, 0.0, 255.0).astype(np.float32))
    if mode in ("LA", "La"):
        grey = img.convert("LA") if mode == "La" else img
        background = Image.new("L", grey.size, _WHITE)
        background.paste(grey.getchannel("L"), mask=grey.getchannel("A"))
        return background
    if (mode == "P" and "transparency" in img.info) or mode in ("RGBA", "RGBa", "PA"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (_WHITE, _WHITE, _WHITE, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    try:
        return img.convert("RGB")
    except ValueError as exc:
        raise UnsupportedMediaType(
            f"images in colour mode {mode} are not supported; send an RGB or greyscale image", mode=mode
        ) from exc
