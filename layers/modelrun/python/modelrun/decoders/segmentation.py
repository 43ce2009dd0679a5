"""Semantic segmentation: a class per pixel, mapped back onto the original image, as stats and an indexed PNG.

The PNG uses one fixed palette, :data:`PALETTE`: index 0 (the first label, normally the background) is black and
every other index gets a distinct colour, built the way the PASCAL VOC colour map is (the bits of the index spread
over the high bits of red, green and blue). The colour is only for viewing: a pixel's value is its class index.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
from PIL import Image

from modelrun.decoders.base import Dim, FailFn, Mask
from modelrun.decoders.common import OutputSection, graph_output, score, show_shape, sigmoid, static
from modelrun.errors import ModelConfigError
from modelrun.transforms import Geometry

OUTPUT_TYPES: Final = ("class_scores", "probabilities", "logits")
LAYOUTS: Final = ("NCHW", "NHWC")
DEFAULT_THRESHOLD: Final = 0.5
MAX_CLASSES: Final = 255
"""Class indices must fit a palette PNG's 8-bit pixels."""
_BIT_TYPES: Final = (np.uint8, np.uint16, np.uint32, np.uint64)
_BITS_PER_PASS: Final = 64
PNG_COMPRESSION: Final = 6
"""zlib's default level: on the demo models' masks 10% larger than the best level (9), at an eighth of its time."""


def _palette() -> bytes:
    colours = bytearray()
    for index in range(256):
        red = green = blue = 0
        bits = index
        for shift in range(7, -1, -1):
            red |= (bits & 1) << shift
            green |= ((bits >> 1) & 1) << shift
            blue |= ((bits >> 2) & 1) << shift
            bits >>= 3
        colours += bytes((red, green, blue))
    return bytes(colours)


PALETTE: Final = _palette()
"""256 RGB triples: 0 black, 1 (128, 0, 0), 2 (0, 128, 0), 3 (128, 128, 0), 4 (0, 0, 128), ... all distinct."""


@dataclass(frozen=True, slots=True)
class SegmentationOutput:
    """``class_scores`` (one channel per label, argmax) or one ``probabilities``/``logits`` channel (threshold)."""

    name: str
    type: str
    layout: str
    threshold: float

    @property
    def channels_axis(self) -> int:
        """The channel axis of the graph output, batch dimension included."""
        return 1 if self.layout == "NCHW" else 3


class SegmentationDecoder:
    """A mask per image -> ``{"classes": [{"label", "index", "pixels", "fraction", "box"}], "mask": Mask}``."""

    task = "segmentation"

    def parse_output(self, section: Any, labels: tuple[str, ...], fail: FailFn) -> SegmentationOutput:
        """Validate the section and the labels it needs: at most 255 for ``class_scores``, exactly two
        (background, foreground) for a single probability or logit channel.

        Raises:
            Whatever ``fail`` raises, on ``output.<key>`` or ``labels``.
        """
        fields = OutputSection(section, ("name", "type", "layout", "threshold"), fail)
        name = fields.string("name")
        kind = fields.choice("type", OUTPUT_TYPES)
        layout = fields.choice("layout", LAYOUTS, default="NCHW")
        if kind == "class_scores":
            if fields.has("threshold"):
                fail("output.threshold", 'does not apply to type "class_scores" (each pixel takes its best class)')
            if len(labels) > MAX_CLASSES:
                fail("labels", f"has {len(labels)} entries; a segmentation mask holds at most {MAX_CLASSES} classes")
        elif len(labels) != 2:
            fail("labels", f'must be exactly [background, foreground] for type "{kind}", got {len(labels)} labels')
        threshold = fields.number("threshold", DEFAULT_THRESHOLD, low=0.0, high=1.0)
        return SegmentationOutput(name=name, type=kind, layout=layout, threshold=threshold)

    def output_names(self, config: SegmentationOutput) -> tuple[str, ...]:
        return (config.name,)

    def check_graph(
        self, config: SegmentationOutput, outputs: Mapping[str, Sequence[Dim]], labels: tuple[str, ...], fail: FailFn
    ) -> None:
        """The output exists, has rank 4 and, when static, the channel count the type needs.

        Raises:
            Whatever ``fail`` raises: on ``output.name``, ``output.layout`` or ``labels``.
        """
        shape = graph_output(outputs, config.name, "output.name", fail)
        where = f'the graph output "{config.name}" shape {show_shape(shape)}'
        if len(shape) != 4:
            fail("output.name", f"{where} is not [N, C, H, W] or [N, H, W, C]")
        channels = static(shape[config.channels_axis])
        expected = _channels(config, labels)
        if channels is None or channels == expected:
            return
        other = "NHWC" if config.layout == "NCHW" else "NCHW"
        if static(shape[4 - config.channels_axis]) == expected:
            fail("output.layout", f'"{config.layout}" does not match {where}; it looks like "{other}"')
        if config.type == "class_scores":
            fail("labels", f"has {len(labels)} entries but {where} has {channels} class channels")
        fail("output.type", f'"{config.type}" needs one channel, but {where} has {channels} (layout {config.layout})')

    def decode(
        self,
        outputs: Mapping[str, np.ndarray],
        config: SegmentationOutput,
        labels: tuple[str, ...],
        geometry: Geometry,
    ) -> dict[str, Any]:
        """The class of every original pixel, its per-class stats and the mask as an indexed PNG.

        An output smaller or larger than the input is taken to cover the whole input (its pixels scaled to the
        input's). Every label is listed, in label order, with its pixel count, its fraction of the image (6
        decimals) and its bounding box ``[x1, y1, x2, y2]`` in pixel edges (``x2`` is the last column + 1), or
        None when absent. Class-score ties go to the lower index; a NaN probability is background.

        Raises:
            ModelConfigError: the output's per-image shape does not fit the config.
        """
        scores = np.asarray(outputs[config.name])
        expected = _channels(config, labels)
        if scores.ndim == 3 and config.layout == "NHWC":
            scores = np.moveaxis(scores, -1, 0)
        if scores.ndim != 3 or scores.shape[0] != expected:
            raise ModelConfigError(
                f'output "{config.name}" returned shape {list(np.asarray(outputs[config.name]).shape)} per image; '
                f"expected {expected} channel(s) ({config.layout})",
                field="output.name",
            )
        if config.type == "class_scores":
            # In the graph's own dtype: a float64 copy of every score first would cost more than the argmax.
            mask = np.argmax(scores, axis=0).astype(np.uint8)
        else:
            # float64, so the threshold is compared as given (0.3 is not float32's 0.3).
            foreground = sigmoid(scores[0]) if config.type == "logits" else np.asarray(scores[0], dtype=np.float64)
            mask = (foreground >= config.threshold).astype(np.uint8)
        out_h, out_w = mask.shape
        in_h, in_w = geometry.input_size
        # The output covers the input at its own resolution: one more scaling step from input to output pixels.
        to_output = geometry.then((out_h / in_h, out_w / in_w), (0.0, 0.0), (out_h, out_w))
        original = to_output.to_original_mask(mask)
        return {"classes": _class_stats(original, labels), "mask": _png(original)}

    def describe(self, config: SegmentationOutput) -> dict[str, Any]:
        shown: dict[str, Any] = {"name": config.name, "type": config.type, "layout": config.layout}
        if config.type != "class_scores":
            shown["threshold"] = config.threshold
        return shown


def _channels(config: SegmentationOutput, labels: tuple[str, ...]) -> int:
    return len(labels) if config.type == "class_scores" else 1


def _class_stats(mask: np.ndarray, labels: tuple[str, ...]) -> list[dict[str, Any]]:
    pixels = np.bincount(mask.ravel(), minlength=len(labels))
    boxes = _boxes(mask, pixels)
    return [
        {
            "label": label,
            "index": index,
            "pixels": int(pixels[index]),
            "fraction": score(pixels[index] / mask.size),
            "box": boxes.get(index),
        }
        for index, label in enumerate(labels)
    ]


def _boxes(mask: np.ndarray, pixels: np.ndarray) -> dict[int, list[int]]:
    """The ``[x1, y1, x2, y2]`` box (pixel edges) of every class of the uint8 mask with ``pixels`` above 0.

    Each pixel becomes its class's bit (64 classes at a time), OR-ed along the rows and along the columns: the
    classes in every row and every column from one shift and two reductions, however many classes there are.
    """
    height, width = mask.shape
    present = np.flatnonzero(pixels)
    codes, code_of = mask, present
    if present.size and present[-1] >= _BITS_PER_PASS:
        # The classes present renumbered 0, 1, 2, ...: 20 classes out of 150 then take one pass, not three.
        renumber = np.zeros(MAX_CLASSES + 1, dtype=np.uint8)
        renumber[present] = np.arange(present.size)
        codes, code_of = renumber.take(mask), np.arange(present.size)
    boxes: dict[int, list[int]] = {}
    for first in range(0, present.size, _BITS_PER_PASS):
        base = int(code_of[first])
        shifts = code_of[first : first + _BITS_PER_PASS] - base
        kind = next(kind for kind in _BIT_TYPES if np.iinfo(kind).bits > shifts[-1])
        # Code base + k sets bit k. numpy's shifts by the type's width or more give 0, so the codes outside this pass
        # (those below it wrap round in the uint8 subtraction) set none.
        bits = np.left_shift(kind(1), codes - np.uint8(base), dtype=kind)
        in_row = (np.bitwise_or.reduce(bits, axis=1)[:, None] >> shifts.astype(kind)) & kind(1)
        in_column = (np.bitwise_or.reduce(bits, axis=0)[:, None] >> shifts.astype(kind)) & kind(1)
        top, bottom = in_row.argmax(axis=0), height - in_row[::-1].argmax(axis=0)
        left, right = in_column.argmax(axis=0), width - in_column[::-1].argmax(axis=0)
        for at, index in enumerate(present[first : first + _BITS_PER_PASS].tolist()):
            boxes[index] = [int(left[at]), int(top[at]), int(right[at]), int(bottom[at])]
    return boxes


def _png(mask: np.ndarray) -> Mask:
    image = Image.fromarray(mask)
    image.putpalette(PALETTE)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=PNG_COMPRESSION)
    height, width = mask.shape
    return Mask(png=buffer.getvalue(), width=width, height=height)
