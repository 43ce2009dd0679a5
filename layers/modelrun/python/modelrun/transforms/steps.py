"""The declarative transform steps of model.json: validation at load, and what each step does to one image.

The ``window`` step maps a greyscale image's real values (Hounsfield units, raw 16-bit counts) to 0..255 before any
other image step (:mod:`modelrun.images.voi`). Image steps (``color``, ``resize``, ``center_crop``, ``letterbox``,
``pad_to_multiple``) act on a Pillow image and record how they moved its pixels in a
:class:`~modelrun.transforms.geometry.Geometry`; array steps (``normalize``, ``dtype``, ``layout``) act on the array
made from it. Sizes are ``[height, width]`` throughout, as in model.json.

The rounding follows the reference code models are trained and exported with, so the same image gives the same
tensor: resized sides are ``round(side * scale)`` (Python's round, at least 1); a centre crop's offset is
torchvision's ``int(round((H - h) / 2))`` and a crop larger than the image pads ``(h - H) // 2`` before; a letterbox
scales by ``min(h / H, w / W)`` and splits centred padding as Ultralytics does, ``round(d / 2 - 0.1)`` before.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final, NoReturn

import numpy as np
from PIL import Image

from modelrun.images.voi import WINDOW_FUNCTIONS, Lut
from modelrun.images.voi import Window as WindowVoi
from modelrun.models.fields import one_of, show
from modelrun.transforms.geometry import Geometry

FailFn = Callable[[str, str], NoReturn]

COLOR_MODES: Final = {"L": 1, "RGB": 3, "BGR": 3}
DTYPES: Final = ("float32", "float16", "uint8")
LAYOUTS: Final = ("NCHW", "NHWC")
ALIGNS: Final = ("center", "top_left")
RESAMPLES: Final = ("nearest", "box", "bilinear", "hamming", "bicubic", "lanczos")
DEFAULT_RESAMPLE: Final = "bilinear"
DEFAULT_SCALE: Final = 1 / 255
DEFAULT_COLOR_MODE: Final = "RGB"
DEFAULT_DTYPE: Final = "float32"
DEFAULT_LAYOUT: Final = "NCHW"

RESAMPLING: Final = {
    "nearest": Image.Resampling.NEAREST,
    "box": Image.Resampling.BOX,
    "bilinear": Image.Resampling.BILINEAR,
    "hamming": Image.Resampling.HAMMING,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}


@dataclass(frozen=True, slots=True)
class Origin:
    """Where a step was written in model.json, so errors name its fields (``transforms[2].size``, ``input.size``).

    Attributes:
        prefix: ``transforms[i]``, or ``input`` for a step expanded from the flat shorthand.
        renames: step field -> the key that spelt it (the shorthand's ``color_mode`` is the color step's ``mode``).
    """

    prefix: str
    renames: tuple[tuple[str, str], ...] = ()

    def field(self, name: str) -> str:
        """The field path of one of the step's fields."""
        return f"{self.prefix}.{dict(self.renames).get(name, name)}"


_NOWHERE: Final = Origin("transforms")


# --- image steps --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Color:
    """Convert to ``L``, ``RGB`` or ``BGR`` (BGR is converted as RGB; the channels are reversed in the array)."""

    mode: str
    origin: Origin = field(default=_NOWHERE, compare=False)

    @property
    def channels(self) -> int:
        return COLOR_MODES[self.mode]

    def to_dict(self) -> dict[str, Any]:
        return {"op": "color", "mode": self.mode}


@dataclass(frozen=True, slots=True)
class Window:
    """The model's own VOI: a window (centre, width, function) or a LUT, applied to a greyscale image's real values
    before it is resized; it replaces the file's window for DICOM and the 0..255 scaling of 16-bit images."""

    voi: WindowVoi | Lut
    origin: Origin = field(default=_NOWHERE, compare=False)

    def to_dict(self) -> dict[str, Any]:
        if isinstance(self.voi, Lut):
            return {"op": "window", "lut": {"first": self.voi.first, "values": list(self.voi.values)}}
        return {"op": "window", "center": self.voi.center, "width": self.voi.width, "function": self.voi.function}


@dataclass(frozen=True, slots=True)
class Resize:
    """Resize to an exact ``size``, the ``shorter`` or ``longer`` side to N, or to fit in ``size`` (keep_aspect)."""

    size: tuple[int, int] | None = None
    shorter: int | None = None
    longer: int | None = None
    keep_aspect: bool = False
    resample: str = DEFAULT_RESAMPLE
    origin: Origin = field(default=_NOWHERE, compare=False)

    def target(self, height: int, width: int) -> tuple[int, int]:
        """The ``(height, width)`` an image of this size is resized to."""
        if self.size is not None and not self.keep_aspect:
            return self.size
        if self.shorter is not None:
            ratio = self.shorter / min(height, width)
        elif self.longer is not None:
            ratio = self.longer / max(height, width)
        else:
            assert self.size is not None  # validated: keep_aspect comes with a size
            ratio = min(self.size[0] / height, self.size[1] / width)
        return _scaled(height, ratio), _scaled(width, ratio)

    def apply(self, image: Image.Image, geometry: Geometry, color_mode: str) -> tuple[Image.Image, Geometry]:
        width, height = image.size
        new_h, new_w = self.target(height, width)
        if (new_h, new_w) != (height, width):
            image = image.resize((new_w, new_h), RESAMPLING[self.resample])
        return image, geometry.then((new_h / height, new_w / width), (0.0, 0.0), (new_h, new_w))

    def to_dict(self) -> dict[str, Any]:
        shown: dict[str, Any] = {"op": "resize"}
        if self.size is not None:
            shown["size"] = list(self.size)
        if self.keep_aspect:
            shown["keep_aspect"] = True
        if self.shorter is not None:
            shown["shorter"] = self.shorter
        if self.longer is not None:
            shown["longer"] = self.longer
        shown["resample"] = self.resample
        return shown


@dataclass(frozen=True, slots=True)
class CenterCrop:
    """Cut ``size`` from the centre; sides shorter than the crop are padded with ``fill`` (torchvision's rule)."""

    size: tuple[int, int]
    fill: tuple[float, ...]
    origin: Origin = field(default=_NOWHERE, compare=False)

    def apply(self, image: Image.Image, geometry: Geometry, color_mode: str) -> tuple[Image.Image, Geometry]:
        width, height = image.size
        crop_h, crop_w = self.size
        top = _crop_offset(height, crop_h)
        left = _crop_offset(width, crop_w)
        canvas = _canvas(image, color_mode, self.fill, (crop_h, crop_w))
        canvas.paste(image, (left, top))
        return canvas, geometry.then((1.0, 1.0), (float(top), float(left)), (crop_h, crop_w))

    def to_dict(self) -> dict[str, Any]:
        return {"op": "center_crop", "size": list(self.size), "fill": _show_fill(self.fill)}


@dataclass(frozen=True, slots=True)
class Letterbox:
    """Scale to fit inside ``size`` keeping the aspect ratio, then pad to ``size`` with ``fill`` (Ultralytics)."""

    size: tuple[int, int]
    fill: tuple[float, ...]
    align: str = "center"
    resample: str = DEFAULT_RESAMPLE
    scale_up: bool = True
    origin: Origin = field(default=_NOWHERE, compare=False)

    def apply(self, image: Image.Image, geometry: Geometry, color_mode: str) -> tuple[Image.Image, Geometry]:
        width, height = image.size
        box_h, box_w = self.size
        ratio = min(box_h / height, box_w / width)
        if not self.scale_up:
            ratio = min(ratio, 1.0)
        new_h, new_w = _scaled(height, ratio), _scaled(width, ratio)
        if (new_h, new_w) != (height, width):
            image = image.resize((new_w, new_h), RESAMPLING[self.resample])
        top, left = 0, 0
        if self.align == "center":
            # Ultralytics halves the padding and rounds 0.1 towards the top/left, so an odd pixel goes bottom/right.
            top = round((box_h - new_h) / 2 - 0.1)
            left = round((box_w - new_w) / 2 - 0.1)
        canvas = _canvas(image, color_mode, self.fill, self.size)
        canvas.paste(image, (left, top))
        scaled = geometry.then((new_h / height, new_w / width), (0.0, 0.0), (new_h, new_w))
        return canvas, scaled.then((1.0, 1.0), (float(top), float(left)), self.size)

    def to_dict(self) -> dict[str, Any]:
        return {
            "op": "letterbox",
            "size": list(self.size),
            "fill": _show_fill(self.fill),
            "align": self.align,
            "resample": self.resample,
            "scale_up": self.scale_up,
        }


@dataclass(frozen=True, slots=True)
class PadToMultiple:
    """Pad each side up to a multiple of ``multiple`` (right/bottom, or split with the odd pixel after)."""

    multiple: int
    fill: tuple[float, ...]
    align: str = "top_left"
    origin: Origin = field(default=_NOWHERE, compare=False)

    def apply(self, image: Image.Image, geometry: Geometry, color_mode: str) -> tuple[Image.Image, Geometry]:
        width, height = image.size
        new_h, new_w = _round_up(height, self.multiple), _round_up(width, self.multiple)
        if (new_h, new_w) == (height, width):
            return image, geometry
        top, left = 0, 0
        if self.align == "center":
            top, left = (new_h - height) // 2, (new_w - width) // 2
        canvas = _canvas(image, color_mode, self.fill, (new_h, new_w))
        canvas.paste(image, (left, top))
        return canvas, geometry.then((1.0, 1.0), (float(top), float(left)), (new_h, new_w))

    def to_dict(self) -> dict[str, Any]:
        return {"op": "pad_to_multiple", "multiple": self.multiple, "fill": _show_fill(self.fill), "align": self.align}


# --- array steps --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Normalize:
    """``(pixel * scale - mean) / std`` per channel, in float32."""

    scale: float
    mean: tuple[float, ...]
    std: tuple[float, ...]
    origin: Origin = field(default=_NOWHERE, compare=False)

    def apply(self, pixels: np.ndarray) -> np.ndarray:
        """``[H, W, C]`` pixels normalised; the result is a ``[H, W, C]`` view of a channels-first array.

        The arithmetic runs on channel planes: broadcasting a per-channel vector over a last axis of length 3 makes
        numpy loop three elements at a time, about 30 times slower for the same float32 values.
        """
        # dtype float32: any input is cast to float32 first (uint8 exactly), then multiplied in float32.
        planes = np.multiply(pixels.transpose(2, 0, 1), np.float32(self.scale), dtype=np.float32, order="C")
        planes -= np.asarray(self.mean, dtype=np.float32).reshape(-1, 1, 1)
        planes /= np.asarray(self.std, dtype=np.float32).reshape(-1, 1, 1)
        return planes.transpose(1, 2, 0)

    def to_dict(self) -> dict[str, Any]:
        return {"op": "normalize", "scale": self.scale, "mean": list(self.mean), "std": list(self.std)}


@dataclass(frozen=True, slots=True)
class Dtype:
    """The tensor's element type; ``uint8`` holds raw pixels rounded and clipped to 0..255."""

    dtype: str
    origin: Origin = field(default=_NOWHERE, compare=False)

    def apply(self, pixels: np.ndarray) -> np.ndarray:
        if self.dtype == "uint8":
            return np.clip(np.rint(pixels), 0, 255).astype(np.uint8)
        return pixels.astype(self.dtype, copy=False)

    def to_dict(self) -> dict[str, Any]:
        return {"op": "dtype", "dtype": self.dtype}


@dataclass(frozen=True, slots=True)
class Layout:
    """Channels first (``NCHW``) or last (``NHWC``)."""

    layout: str
    origin: Origin = field(default=_NOWHERE, compare=False)

    def apply(self, pixels: np.ndarray) -> np.ndarray:
        return pixels.transpose(2, 0, 1) if self.layout == "NCHW" else pixels

    def to_dict(self) -> dict[str, Any]:
        return {"op": "layout", "layout": self.layout}


ImageStep = Resize | CenterCrop | Letterbox | PadToMultiple
ArrayStep = Normalize | Dtype | Layout
Step = Color | Window | ImageStep | ArrayStep

_ARRAY_ORDER: Final = {Normalize: 0, Dtype: 1, Layout: 2}


# --- parsing ------------------------------------------------------------------------------------------------

_KEYS: Final = {
    "color": ("op", "mode"),
    "window": ("op", "center", "width", "function", "lut"),
    "resize": ("op", "size", "shorter", "longer", "keep_aspect", "resample"),
    "center_crop": ("op", "size", "fill"),
    "letterbox": ("op", "size", "fill", "align", "resample", "scale_up"),
    "pad_to_multiple": ("op", "multiple", "fill", "align"),
    "normalize": ("op", "scale", "mean", "std"),
    "dtype": ("op", "dtype"),
    "layout": ("op", "layout"),
}


def parse_steps(raw: Any, fail: FailFn) -> tuple[Step, ...]:
    """Validate model.json's ``transforms`` list.

    Rules beyond each step's own fields: ``color`` at most once and before any step that resizes or pads; image
    steps before array steps; ``normalize``, ``dtype`` and ``layout`` at most once each and in that order;
    ``normalize`` does not go with ``dtype`` ``uint8``; ``fill``, ``mean`` and ``std`` have one value per channel.

    Raises:
        Whatever ``fail`` raises, called with the field path (``transforms[2].size``) and the problem.
    """
    if not isinstance(raw, list):
        fail("transforms", f"must be a list of steps, got {show(raw)}")
    color_mode = DEFAULT_COLOR_MODE
    for item in raw:
        if isinstance(item, dict) and item.get("op") == "color":
            mode = item.get("mode")
            color_mode = mode if isinstance(mode, str) and mode in COLOR_MODES else color_mode
    channels = COLOR_MODES[color_mode]

    steps: list[Step] = []
    for index, item in enumerate(raw):
        where = f"transforms[{index}]"
        fields = _Fields(item, where, fail)
        step = _parse_step(fields, Origin(where), channels)
        _check_order(steps, step, where, fail)
        steps.append(step)
    return tuple(steps)


def _parse_step(fields: _Fields, origin: Origin, channels: int) -> Step:
    op = fields.op()
    fields.only(_KEYS[op])
    if op == "color":
        return Color(mode=fields.choice("mode", tuple(COLOR_MODES)), origin=origin)
    if op == "window":
        return _parse_window(fields, origin)
    if op == "resize":
        return _parse_resize(fields, origin)
    if op == "center_crop":
        return CenterCrop(size=fields.size("size"), fill=fields.fill(channels), origin=origin)
    if op == "letterbox":
        return Letterbox(
            size=fields.size("size"),
            fill=fields.fill(channels, default=114.0),
            align=fields.choice("align", ALIGNS, "center"),
            resample=fields.choice("resample", RESAMPLES, DEFAULT_RESAMPLE),
            scale_up=fields.boolean("scale_up", True),
            origin=origin,
        )
    if op == "pad_to_multiple":
        return PadToMultiple(
            multiple=fields.integer("multiple", minimum=1),
            fill=fields.fill(channels),
            align=fields.choice("align", ALIGNS, "top_left"),
            origin=origin,
        )
    if op == "normalize":
        scale = fields.number("scale", DEFAULT_SCALE)
        if scale <= 0:
            fields.fail("scale", f"must be greater than 0, got {show(fields.section['scale'])}")
        mean = fields.numbers("mean", channels, 0.0)
        std = fields.numbers("std", channels, 1.0)
        for index, value in enumerate(std):
            if value <= 0:
                fields.fail(f"std[{index}]", f"must be greater than 0, got {show(value)}")
        return Normalize(scale=scale, mean=mean, std=std, origin=origin)
    if op == "dtype":
        return Dtype(dtype=fields.choice("dtype", DTYPES), origin=origin)
    return Layout(layout=fields.choice("layout", LAYOUTS), origin=origin)


def _parse_window(fields: _Fields, origin: Origin) -> Window:
    if fields.has("lut"):
        for key in ("center", "width", "function"):
            if fields.has(key):
                fields.fail(key, 'does not go with "lut": a window is either center and width, or a LUT')
        return Window(_parse_lut(fields), origin=origin)
    center = fields.number_value(fields.section.get("center"), "center") if fields.has("center") else None
    if center is None:
        fields.fail("center", 'is required (or give a "lut" instead of center and width)')
    if not fields.has("width"):
        fields.fail("width", "is required")
    width = fields.number_value(fields.section["width"], "width")
    function = fields.choice("function", WINDOW_FUNCTIONS, "linear")
    if function == "linear" and width < 1:
        fields.fail("width", f'must be at least 1 for the "linear" function, got {show(fields.section["width"])}')
    if width <= 0:
        fields.fail("width", f"must be greater than 0, got {show(fields.section['width'])}")
    return Window(WindowVoi(center, width, function), origin=origin)


def _parse_lut(fields: _Fields) -> Lut:
    lut = fields.section["lut"]
    if not isinstance(lut, dict) or set(lut) != {"first", "values"}:
        fields.fail("lut", f'must be {{"first": <first input value>, "values": [...]}}, got {show(lut)}')
    first = lut["first"]
    if isinstance(first, bool) or not isinstance(first, int):
        fields.fail("lut.first", f"must be an integer, got {show(first)}")
    values = lut["values"]
    if not isinstance(values, list) or not values:
        fields.fail("lut.values", f"must be a non-empty list of numbers from 0 to 255, got {show(values)}")
    table = [fields.number_value(value, f"lut.values[{index}]") for index, value in enumerate(values)]
    for index, value in enumerate(table):
        if not 0 <= value <= 255:
            fields.fail(f"lut.values[{index}]", f"must be between 0 and 255, got {show(values[index])}")
    return Lut(first, tuple(table))


def _parse_resize(fields: _Fields, origin: Origin) -> Resize:
    given = [key for key in ("size", "shorter", "longer") if fields.has(key)]
    if len(given) != 1:
        fields.fail("size", 'needs exactly one of "size", "shorter" and "longer"')
    resample = fields.choice("resample", RESAMPLES, DEFAULT_RESAMPLE)
    keep_aspect = fields.boolean("keep_aspect", False)
    if keep_aspect and given != ["size"]:
        fields.fail("keep_aspect", 'goes with "size" (fit inside it); "shorter" and "longer" keep the aspect anyway')
    if given == ["size"]:
        return Resize(size=fields.size("size"), keep_aspect=keep_aspect, resample=resample, origin=origin)
    if given == ["shorter"]:
        return Resize(shorter=fields.integer("shorter", minimum=1), resample=resample, origin=origin)
    return Resize(longer=fields.integer("longer", minimum=1), resample=resample, origin=origin)


def _check_order(before: list[Step], step: Step, where: str, fail: FailFn) -> None:
    if isinstance(step, Color):
        if any(isinstance(earlier, Color) for earlier in before):
            fail(f"{where}.op", '"color" may appear only once')
        if before:
            fail(f"{where}.op", '"color" must come before every other step')
    elif isinstance(step, Window):
        if any(isinstance(earlier, Window) for earlier in before):
            fail(f"{where}.op", '"window" may appear only once')
        if any(not isinstance(earlier, Color) for earlier in before):
            # The window maps real values; after a resize or a normalize they are no longer the file's values.
            fail(f"{where}.op", '"window" must come before every step but "color" (resize, crop, pad, normalize ...)')
    elif isinstance(step, ImageStep):
        if any(isinstance(earlier, ArrayStep) for earlier in before):
            fail(f"{where}.op", f'"{step.to_dict()["op"]}" must come before normalize, dtype and layout')
    else:
        for earlier in before:
            if isinstance(earlier, ArrayStep) and _ARRAY_ORDER[type(earlier)] >= _ARRAY_ORDER[type(step)]:
                fail(f"{where}.op", "normalize, dtype and layout appear at most once each, in that order")
        if isinstance(step, Dtype) and step.dtype == "uint8" and any(isinstance(e, Normalize) for e in before):
            fail(f"{where}.dtype", '"uint8" holds raw 0..255 pixels and does not go with normalize')


class _Fields:
    """One step object; reads its fields and fails naming ``transforms[i].<key>``."""

    def __init__(self, section: Any, where: str, fail: FailFn) -> None:
        self.where = where
        self._fail = fail
        if not isinstance(section, dict):
            fail(where, f'must be a JSON object with an "op", got {show(section)}')
        self.section: dict[str, Any] = section

    def fail(self, key: str, problem: str) -> NoReturn:
        self._fail(f"{self.where}.{key}", problem)

    def has(self, key: str) -> bool:
        return key in self.section

    def op(self) -> str:
        op = self.section.get("op")
        if op not in _KEYS:
            self.fail("op", f"must be {one_of(tuple(_KEYS))}, got {show(op)}")
        return str(op)

    def only(self, allowed: tuple[str, ...]) -> None:
        unknown = sorted(set(self.section) - set(allowed))
        if unknown:
            self.fail(unknown[0], f"is not a known key of this step (known keys: {', '.join(sorted(allowed))})")

    def choice(self, key: str, options: tuple[str, ...], default: str | None = None) -> str:
        if key not in self.section:
            if default is not None:
                return default
            self.fail(key, "is required")
        value = self.section[key]
        if value not in options:
            self.fail(key, f"must be {one_of(options)}, got {show(value)}")
        return str(value)

    def boolean(self, key: str, default: bool) -> bool:
        value = self.section.get(key, default)
        if not isinstance(value, bool):
            self.fail(key, f"must be true or false, got {show(value)}")
        return value

    def integer(self, key: str, *, minimum: int) -> int:
        if key not in self.section:
            self.fail(key, "is required")
        return self.integer_value(self.section[key], key, minimum=minimum)

    def integer_value(self, value: Any, key: str, *, minimum: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(key, f"must be an integer, got {show(value)}")
        if value < minimum:
            self.fail(key, f"must be at least {minimum}, got {value}")
        return value

    def size(self, key: str) -> tuple[int, int]:
        if key not in self.section:
            self.fail(key, "is required")
        value = self.section[key]
        if not isinstance(value, list) or len(value) != 2:
            self.fail(key, f"must be [height, width], got {show(value)}")
        return (
            self.integer_value(value[0], f"{key}[0]", minimum=1),
            self.integer_value(value[1], f"{key}[1]", minimum=1),
        )

    def number(self, key: str, default: float) -> float:
        return self.number_value(self.section.get(key, default), key)

    def number_value(self, value: Any, key: str) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            self.fail(key, f"must be a finite number, got {show(value)}")
        return float(value)

    def numbers(self, key: str, channels: int, default: float) -> tuple[float, ...]:
        if key not in self.section:
            return (default,) * channels
        value = self.section[key]
        if not isinstance(value, list) or len(value) != channels:
            self.fail(key, f"must be a list of {channels} number(s), one per channel, got {show(value)}")
        return tuple(self.number_value(item, f"{key}[{index}]") for index, item in enumerate(value))

    def fill(self, channels: int, default: float = 0.0) -> tuple[float, ...]:
        """``fill``: one number for every channel, or a list of one per channel (tensor channel order), 0..255."""
        value = self.section.get("fill", default)
        values = value if isinstance(value, list) else [value]
        if isinstance(value, list) and len(value) != channels:
            self.fail("fill", f"must be a number or a list of {channels} number(s), got {show(value)}")
        fills = tuple(self.number_value(item, "fill") for item in values)
        if any(not 0 <= item <= 255 for item in fills):
            self.fail("fill", f"must be between 0 and 255, got {show(value)}")
        return fills * channels if len(fills) == 1 else fills


# --- helpers ------------------------------------------------------------------------------------------------


def _scaled(side: int, ratio: float) -> int:
    return max(1, round(side * ratio))


def _round_up(side: int, multiple: int) -> int:
    return -(-side // multiple) * multiple


def _crop_offset(side: int, crop: int) -> int:
    """Where the original's first pixel lands in the crop: padded before (positive) or cut away (negative)."""
    if crop > side:
        return (crop - side) // 2
    return -round((side - crop) / 2.0)


def _canvas(image: Image.Image, color_mode: str, fill: tuple[float, ...], size: tuple[int, int]) -> Image.Image:
    """A ``size`` image in ``image``'s mode filled with ``fill`` (given in tensor channel order).

    A grey plane stands for all three channels of a colour model (it is repeated after the image steps); it can only
    take a fill that is the same on every channel (see :func:`needs_rgb`).
    """
    height, width = size
    if image.mode == "RGB":
        rgb = fill[::-1] if color_mode == "BGR" else fill
        color: float | tuple[int, ...] = tuple(round(value) for value in rgb)
    elif image.mode == "F":
        color = float(fill[0])
    else:
        color = round(fill[0])
    return Image.new(image.mode, (width, height), color)


def needs_rgb(fill: tuple[float, ...]) -> bool:
    """Whether a grey plane must become RGB before padding with ``fill`` (the channels' fills differ)."""
    return len(set(fill)) > 1


def _show_fill(fill: tuple[float, ...]) -> float | list[float]:
    return fill[0] if len(set(fill)) == 1 else list(fill)
