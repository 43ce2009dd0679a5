"""A decoded image to the model's input tensor (resize, colour mode, normalisation, layout)."""

from __future__ import annotations

from typing import Final

import numpy as np
from PIL import Image

from modelrun.errors import UnsupportedMediaType
from modelrun.images.decode import Limits, decode_image
from modelrun.models.spec import InputSpec, ModelSpec

_RESAMPLING: Final = {
    "nearest": Image.Resampling.NEAREST,
    "box": Image.Resampling.BOX,
    "bilinear": Image.Resampling.BILINEAR,
    "hamming": Image.Resampling.HAMMING,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}

_SIXTEEN_BIT_MODES: Final = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I"})
_WHITE: Final = 255


def to_tensor(img: Image.Image, spec: InputSpec) -> np.ndarray:
    """Resize, normalise and lay out one image as the model's input, without the batch dimension.

    Steps: convert to the model's colour mode (transparency composited onto white, 16-bit scaled to 0..255),
    resize to ``spec.size`` with ``spec.resample``, then ``(pixel * scale - mean) / std`` per channel (skipped
    for ``uint8``, which gets raw rounded pixels), then CHW or HWC, then the dtype.

    Returns:
        Array of shape ``spec.image_shape`` and dtype ``spec.dtype``.
    """
    plane = _to_color_mode(img, spec.color_mode)
    target = (spec.width, spec.height)
    if plane.size != target:
        plane = plane.resize(target, _RESAMPLING[spec.resample])
    pixels = np.asarray(plane, dtype=np.float32)
    if pixels.ndim == 2:
        pixels = pixels[:, :, np.newaxis]
    if spec.channels == 3 and pixels.shape[2] == 1:
        pixels = np.repeat(pixels, 3, axis=2)
    if spec.color_mode == "BGR":
        pixels = pixels[:, :, ::-1]

    if spec.dtype == "uint8":
        tensor = np.clip(np.rint(pixels), 0, 255).astype(np.uint8)
    else:
        mean = np.asarray(spec.mean, dtype=np.float32)
        std = np.asarray(spec.std, dtype=np.float32)
        tensor = ((pixels * np.float32(spec.scale) - mean) / std).astype(spec.dtype)
    if spec.layout == "NCHW":
        tensor = tensor.transpose(2, 0, 1)
    return np.ascontiguousarray(tensor)


def preprocess(data: bytes, spec: ModelSpec, limits: Limits) -> np.ndarray:
    """Decode untrusted image bytes and turn them into the model's input tensor (see :func:`to_tensor`)."""
    return to_tensor(decode_image(data, limits), spec.input)


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
