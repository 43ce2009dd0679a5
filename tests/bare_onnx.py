"""A reference pipeline for the demo detection and segmentation models: ``model.json`` read by hand, the
transforms done in numpy and Pillow as ``/work/notes/model-format.md`` (the model.json contract) defines
them, ONNX Runtime run directly, and the outputs decoded and mapped back to the original image.

It shares no code with the platform on purpose: it is the "bare ONNX Runtime" side that the platform's own
pipeline is checked against, and what the training scripts and the unit tests measure the models with.
Only the steps and outputs the demo models use are implemented; anything else raises ``ValueError``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from numpy.typing import NDArray
from PIL import Image

from tests.quality import LabelledBox, box_iou

RESAMPLE = {
    "nearest": Image.Resampling.NEAREST,
    "box": Image.Resampling.BOX,
    "bilinear": Image.Resampling.BILINEAR,
    "hamming": Image.Resampling.HAMMING,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}
ARRAY_STEPS = {"normalize", "dtype", "layout"}


@dataclass(frozen=True)
class Geometry:
    """``x_in = x_orig * sx + dx``, ``y_in = y_orig * sy + dy``; sizes are ``(height, width)``."""

    original_size: tuple[int, int]
    input_size: tuple[int, int]
    scale: tuple[float, float] = (1.0, 1.0)  # (sy, sx)
    offset: tuple[float, float] = (0.0, 0.0)  # (dy, dx)

    @classmethod
    def identity(cls, height: int, width: int) -> Geometry:
        return cls((height, width), (height, width))

    def then(self, scale: tuple[float, float], offset: tuple[float, float], input_size: tuple[int, int]) -> Geometry:
        """This geometry followed by one more axis-aligned step ``v -> v * scale + offset``."""
        return Geometry(
            original_size=self.original_size,
            input_size=input_size,
            scale=(self.scale[0] * scale[0], self.scale[1] * scale[1]),
            offset=(self.offset[0] * scale[0] + offset[0], self.offset[1] * scale[1] + offset[1]),
        )

    def to_original_box(self, box: Sequence[float]) -> tuple[float, float, float, float]:
        """An input-pixel ``[x1, y1, x2, y2]`` box in original pixels, clipped to the original image."""
        (sy, sx), (dy, dx), (height, width) = self.scale, self.offset, self.original_size
        x1, y1, x2, y2 = (float(value) for value in box)
        return (
            float(np.clip((x1 - dx) / sx, 0, width)),
            float(np.clip((y1 - dy) / sy, 0, height)),
            float(np.clip((x2 - dx) / sx, 0, width)),
            float(np.clip((y2 - dy) / sy, 0, height)),
        )

    def to_original_mask(self, mask: NDArray[np.integer]) -> NDArray[np.uint8]:
        """An input-space class mask at the original size: each original pixel takes the input pixel under its
        centre (nearest neighbour); a centre that falls outside the input is background (0)."""
        (sy, sx), (dy, dx), (height, width) = self.scale, self.offset, self.original_size
        rows = np.floor((np.arange(height) + 0.5) * sy + dy).astype(np.int64)
        cols = np.floor((np.arange(width) + 0.5) * sx + dx).astype(np.int64)
        inside_rows = (rows >= 0) & (rows < mask.shape[0])
        inside_cols = (cols >= 0) & (cols < mask.shape[1])
        result = np.zeros((height, width), dtype=np.uint8)
        picked = mask[np.clip(rows, 0, mask.shape[0] - 1)][:, np.clip(cols, 0, mask.shape[1] - 1)]
        inside = inside_rows[:, np.newaxis] & inside_cols[np.newaxis, :]
        result[inside] = picked[inside]
        return result


def resized(
    image: Image.Image, width: int, height: int, resample: str, geometry: Geometry
) -> tuple[Image.Image, Geometry]:
    scale = (height / image.height, width / image.width)
    picture = image.resize((width, height), RESAMPLE[resample])
    return picture, geometry.then(scale, (0.0, 0.0), (height, width))


def resize_step(image: Image.Image, step: Mapping[str, Any], geometry: Geometry) -> tuple[Image.Image, Geometry]:
    """``resize``: exact ``size``, ``shorter`` or ``longer`` side, or ``size`` with ``keep_aspect``."""
    resample = step.get("resample", "bilinear")
    if "shorter" in step or "longer" in step:
        target = step.get("shorter", step.get("longer"))
        side = min(image.size) if "shorter" in step else max(image.size)
        factor = target / side
    elif step.get("keep_aspect"):
        height, width = step["size"]
        factor = min(height / image.height, width / image.width)
    else:
        height, width = step["size"]
        return resized(image, width, height, resample, geometry)
    width, height = max(1, round(image.width * factor)), max(1, round(image.height * factor))
    return resized(image, width, height, resample, geometry)


def padded(image: Image.Image, width: int, height: int, left: int, top: int, fill: Any) -> Image.Image:
    bands = len(image.getbands())
    colour = tuple(fill) if isinstance(fill, list) else (fill,) * bands
    canvas = Image.new(image.mode, (width, height), colour if bands > 1 else colour[0])
    canvas.paste(image, (left, top))
    return canvas


def letterbox_step(image: Image.Image, step: Mapping[str, Any], geometry: Geometry) -> tuple[Image.Image, Geometry]:
    """Fit inside ``size`` keeping aspect, then pad with ``fill``; centred padding splits as Ultralytics does."""
    height, width = step["size"]
    factor = min(height / image.height, width / image.width)
    if not step.get("scale_up", True):
        factor = min(factor, 1.0)
    new_width, new_height = round(image.width * factor), round(image.height * factor)
    picture, geometry = resized(image, new_width, new_height, step.get("resample", "bilinear"), geometry)
    if step.get("align", "center") == "center":
        left, top = round((width - new_width) / 2 - 0.1), round((height - new_height) / 2 - 0.1)
    else:
        left, top = 0, 0
    canvas = padded(picture, width, height, left, top, step.get("fill", 114))
    return canvas, geometry.then((1.0, 1.0), (float(top), float(left)), (height, width))


def pad_to_multiple_step(
    image: Image.Image, step: Mapping[str, Any], geometry: Geometry
) -> tuple[Image.Image, Geometry]:
    """Pad right and bottom so each side is a multiple of ``multiple`` (only ``top_left`` alignment here)."""
    if step.get("align", "top_left") != "top_left":
        raise ValueError("this reference implements pad_to_multiple with align top_left only")
    multiple = step["multiple"]
    width = -(-image.width // multiple) * multiple
    height = -(-image.height // multiple) * multiple
    canvas = padded(image, width, height, 0, 0, step.get("fill", 0))
    return canvas, geometry.then((1.0, 1.0), (0.0, 0.0), (height, width))


IMAGE_STEPS = {"resize": resize_step, "letterbox": letterbox_step, "pad_to_multiple": pad_to_multiple_step}


def apply_transforms(image: Image.Image, steps: Sequence[Mapping[str, Any]]) -> tuple[NDArray[Any], Geometry]:
    """One image's input array (no batch axis) and its geometry, following the transform list in order. A float
    image (Pillow mode ``F``) is taken as one channel of 0..255 values, without the colour step.

    Raises:
        ValueError: for a step this reference does not implement (``center_crop``, ``BGR``, ...).
    """
    mode = next((step["mode"] for step in steps if step["op"] == "color"), "RGB")
    if mode not in ("RGB", "L"):
        raise ValueError(f"colour mode {mode} is not implemented here")
    # A float image (mode "F": a windowed DICOM frame, 0..255) keeps its values: it has one channel already.
    picture = image if image.mode == "F" else image.convert(mode)
    geometry = Geometry.identity(picture.height, picture.width)
    for step in steps:
        if step["op"] in IMAGE_STEPS:
            picture, geometry = IMAGE_STEPS[step["op"]](picture, step, geometry)
        elif step["op"] not in ARRAY_STEPS and step["op"] != "color":
            raise ValueError(f"transform {step['op']!r} is not implemented here")
    array = np.asarray(picture, dtype=np.float32)
    if array.ndim == 2:
        array = array[:, :, np.newaxis]
    layout = "NCHW"
    for step in steps:
        if step["op"] == "normalize":
            mean = np.asarray(step.get("mean", [0.0]), dtype=np.float32)
            std = np.asarray(step.get("std", [1.0]), dtype=np.float32)
            array = (array * np.float32(step.get("scale", 1.0)) - mean) / std
        elif step["op"] == "dtype" and step["dtype"] != "float32":
            raise ValueError(f"dtype {step['dtype']} is not implemented here")
        elif step["op"] == "layout":
            layout = step["layout"]
    if layout == "NCHW":
        array = np.transpose(array, (2, 0, 1))
    return np.ascontiguousarray(array, dtype=np.float32), geometry


def nms(boxes: NDArray[np.float64], scores: NDArray[np.float64], iou_threshold: float) -> list[int]:
    """Greedy non-maximum suppression: the indices kept, best score first."""
    order = np.argsort(-scores, kind="stable")
    kept: list[int] = []
    while len(order):
        best, order = int(order[0]), order[1:]
        kept.append(best)
        order = order[box_iou(boxes[best], boxes[order]) <= iou_threshold]
    return kept


def decode_yolo(
    output: NDArray[np.floating], spec: Mapping[str, Any], labels: Sequence[str], geometry: Geometry
) -> list[LabelledBox]:
    """One image's single-output YOLO tensor (no batch axis) -> detections in original pixels, best first.

    Each anchor keeps its best class; anchors under ``score_threshold`` are dropped; non-maximum suppression
    runs per class (over all classes when ``class_agnostic``); at most ``max_detections`` are kept.

    Raises:
        ValueError: for objectness outputs, which the demo models do not have.
    """
    if spec.get("objectness", False):
        raise ValueError("objectness outputs are not implemented here")
    rows = np.asarray(output, dtype=np.float64)
    if spec.get("layout", "features_first") == "features_first":
        rows = rows.T  # (anchors, 4 + classes)
    if rows.shape[1] != 4 + len(labels):
        raise ValueError(f"output has {rows.shape[1]} features per anchor; expected 4 + {len(labels)}")
    classes = np.argmax(rows[:, 4:], axis=1)
    scores = rows[np.arange(len(rows)), 4 + classes]
    keep = scores >= spec.get("score_threshold", 0.25)
    rows, classes, scores = rows[keep], classes[keep], scores[keep]
    centre_x, centre_y, width, height = rows[:, 0], rows[:, 1], rows[:, 2], rows[:, 3]
    boxes = np.stack([centre_x - width / 2, centre_y - height / 2, centre_x + width / 2, centre_y + height / 2], axis=1)
    iou_threshold = spec.get("iou_threshold", 0.45)
    kept: list[int] = []
    groups = (
        [np.arange(len(rows))]
        if spec.get("class_agnostic", False)
        else [np.flatnonzero(classes == index) for index in np.unique(classes)]
    )
    for members in groups:
        kept.extend(int(members[index]) for index in nms(boxes[members], scores[members], iou_threshold))
    kept.sort(key=lambda index: -scores[index])
    kept = kept[: spec.get("max_detections", 100)]
    return [
        LabelledBox(labels[classes[index]], geometry.to_original_box(boxes[index]), float(scores[index]))
        for index in kept
    ]


class BareModel:
    """A model folder (``model.json`` + ``model.onnx``) run with ONNX Runtime and the reference transforms."""

    def __init__(self, folder: Path, spec_overrides: Mapping[str, Any] | None = None) -> None:
        self.spec: dict[str, Any] = json.loads((folder / "model.json").read_text(encoding="utf-8"))
        if spec_overrides:
            self.spec["output"] = {**self.spec["output"], **spec_overrides}
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(
            str(folder / "model.onnx"), sess_options=options, providers=["CPUExecutionProvider"]
        )
        self.input_name = self.spec["input"]["name"]
        self.output_name = self.spec["output"]["name"]

    def run(self, image: Image.Image) -> tuple[NDArray[np.float32], Geometry]:
        """The model's output for one image, batch axis removed, with the geometry of its transforms."""
        array, geometry = apply_transforms(image, self.spec["transforms"])
        (output,) = self.session.run([self.output_name], {self.input_name: array[np.newaxis]})
        return output[0], geometry

    def detect(self, image: Image.Image) -> list[LabelledBox]:
        """Detections in the original image's pixels (task ``detection``, format ``yolo``)."""
        output, geometry = self.run(image)
        return decode_yolo(output, self.spec["output"], self.spec["labels"], geometry)

    def segment(self, image: Image.Image) -> NDArray[np.uint8]:
        """The class-index mask at the original size (task ``segmentation``, type ``class_scores``)."""
        output, geometry = self.run(image)
        if self.spec["output"].get("layout", "NCHW") == "NHWC":
            output = np.transpose(output, (2, 0, 1))
        return geometry.to_original_mask(np.argmax(output, axis=0))
