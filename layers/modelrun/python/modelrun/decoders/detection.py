"""Object detection: YOLO's single output or separate boxes/scores/classes outputs -> boxes on the original image.

Both formats come down to candidate boxes ``[x1, y1, x2, y2]`` in input pixels, a score and a label index each;
then the same selection runs: score threshold, mapping onto the original image (boxes left empty by clipping are
dropped), greedy non-maximum suppression (per class unless class-agnostic) and the ``max_detections`` cap.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np

from modelrun.decoders.base import Dim, FailFn
from modelrun.decoders.common import BOX_DECIMALS, OutputSection, graph_output, score, show_shape, static
from modelrun.errors import ModelConfigError
from modelrun.transforms import Geometry

FORMATS: Final = ("yolo", "boxes")
YOLO_LAYOUTS: Final = ("features_first", "features_last")
BOX_FORMATS: Final = ("xyxy", "xywh", "yxyx")
BOX_UNITS: Final = ("pixels", "normalized")

_SELECTION_KEYS: Final = ("score_threshold", "iou_threshold", "max_detections", "class_agnostic")
_YOLO_KEYS: Final = ("format", "name", "layout", "objectness", *_SELECTION_KEYS)
_BOXES_KEYS: Final = (
    "format",
    *("boxes", "scores", "classes", "count"),
    *("box_format", "box_units", "class_offset", "nms"),
    *_SELECTION_KEYS,
)


@dataclass(frozen=True, slots=True)
class Selection:
    """Which candidates become detections."""

    score_threshold: float = 0.25
    iou_threshold: float = 0.45
    max_detections: int = 100
    class_agnostic: bool = False
    nms: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {
            "score_threshold": self.score_threshold,
            "iou_threshold": self.iou_threshold,
            "max_detections": self.max_detections,
            "class_agnostic": self.class_agnostic,
        }


@dataclass(frozen=True, slots=True)
class YoloOutput:
    """One output of ``[N, 4+C, A]`` (features_first) or ``[N, A, 4+C]`` (features_last) rows per anchor:
    ``cx, cy, w, h`` in input pixels, then objectness when ``objectness`` is set, then one score per class."""

    name: str
    layout: str
    objectness: bool
    selection: Selection

    @property
    def extra(self) -> int:
        """Features per anchor besides the class scores."""
        return 5 if self.objectness else 4


@dataclass(frozen=True, slots=True)
class BoxesOutput:
    """Separate outputs: ``boxes`` ``[N, K, 4]``, ``scores`` ``[N, K]`` with ``classes`` ``[N, K]`` (or ``[N, K, C]``
    without), and optionally ``count`` ``[N]`` (how many of the K rows are real).

    ``box_format`` is ``xyxy``, ``xywh`` (top-left corner, width, height) or ``yxyx``; ``box_units`` are input
    pixels or fractions of the input's width and height. ``class_offset`` is the class id of the first label
    (1 for models whose id 0 is the background), so a class id minus it is the label index.
    """

    boxes: str
    scores: str
    classes: str | None
    count: str | None
    box_format: str
    box_units: str
    class_offset: int
    selection: Selection


DetectionOutput = YoloOutput | BoxesOutput


class DetectionDecoder:
    """Detection outputs -> ``{"detections": [{"label", "score", "box": [x1, y1, x2, y2]}], "count": n}``."""

    task = "detection"

    def parse_output(self, section: Any, labels: tuple[str, ...], fail: FailFn) -> DetectionOutput:
        """Validate a ``yolo`` or ``boxes`` output section (``format`` chooses; required).

        Raises:
            Whatever ``fail`` raises, naming the field (``output.iou_threshold``, ...).
        """
        kind = OutputSection(section, (*_YOLO_KEYS, *_BOXES_KEYS), fail).choice("format", FORMATS)
        if kind == "yolo":
            fields = OutputSection(section, _YOLO_KEYS, fail)
            return YoloOutput(
                name=fields.string("name"),
                layout=fields.choice("layout", YOLO_LAYOUTS),
                objectness=fields.boolean("objectness", False),
                selection=_parse_selection(fields, nms=True),
            )
        fields = OutputSection(section, _BOXES_KEYS, fail)
        return BoxesOutput(
            boxes=fields.string("boxes"),
            scores=fields.string("scores"),
            classes=fields.string("classes") if fields.has("classes") else None,
            count=fields.string("count") if fields.has("count") else None,
            box_format=fields.choice("box_format", BOX_FORMATS),
            box_units=fields.choice("box_units", BOX_UNITS),
            class_offset=fields.integer("class_offset", 0, low=0),
            selection=_parse_selection(fields, nms=fields.boolean("nms", True)),
        )

    def output_names(self, config: DetectionOutput) -> tuple[str, ...]:
        if isinstance(config, YoloOutput):
            return (config.name,)
        optional = tuple(name for name in (config.classes, config.count) if name is not None)
        return (config.boxes, config.scores, *optional)

    def check_graph(
        self, config: DetectionOutput, outputs: Mapping[str, Sequence[Dim]], labels: tuple[str, ...], fail: FailFn
    ) -> None:
        """The named outputs exist, with the ranks the format needs and, where static, the feature, box and class
        counts that fit the labels.

        Raises:
            Whatever ``fail`` raises, naming the field to change.
        """
        if isinstance(config, YoloOutput):
            _check_yolo(config, outputs, labels, fail)
        else:
            _check_boxes(config, outputs, labels, fail)

    def decode(
        self,
        outputs: Mapping[str, np.ndarray],
        config: DetectionOutput,
        labels: tuple[str, ...],
        geometry: Geometry,
    ) -> dict[str, Any]:
        """Detections best score first, boxes in the original image's pixels (clipped, 2 decimals), scores to 6.

        Raises:
            ModelConfigError: an output's dynamic shape does not fit the config, or a class id is not a label.
        """
        if isinstance(config, YoloOutput):
            boxes, scores, classes = _yolo_candidates(outputs, config, labels)
        else:
            boxes, scores, classes = _boxes_candidates(outputs, config, labels, geometry)
        return _select(boxes, scores, classes, config.selection, labels, geometry)

    def describe(self, config: DetectionOutput) -> dict[str, Any]:
        if isinstance(config, YoloOutput):
            head = {"format": "yolo", "name": config.name, "layout": config.layout, "objectness": config.objectness}
            return {**head, **config.selection.to_dict()}
        named = {key: value for key, value in (("classes", config.classes), ("count", config.count)) if value}
        return {
            "format": "boxes",
            "boxes": config.boxes,
            "scores": config.scores,
            **named,
            "box_format": config.box_format,
            "box_units": config.box_units,
            "class_offset": config.class_offset,
            "nms": config.selection.nms,
            **config.selection.to_dict(),
        }


def nms(boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray | None, iou_threshold: float) -> np.ndarray:
    """Greedy non-maximum suppression.

    Args:
        boxes: ``[K, 4]`` as ``x1, y1, x2, y2``.
        scores: ``[K]``.
        classes: ``[K]`` class of each box, so only boxes of one class suppress each other; None for
            class-agnostic suppression.
        iou_threshold: a box whose IoU with a kept, better-scored box is above this is suppressed.

    Returns:
        The indices of the kept boxes, best score first; equal scores keep their input order.
    """
    order = np.argsort(-scores, kind="stable")
    boxes = boxes[order]
    same_group = classes[order] if classes is not None else np.zeros(len(order), dtype=np.int64)
    x1, y1, x2, y2 = boxes.T
    areas = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    suppressed = np.zeros(len(order), dtype=bool)
    kept = []
    for index in range(len(order)):
        if suppressed[index]:
            continue
        kept.append(index)
        rest = slice(index + 1, None)
        width = np.clip(np.minimum(x2[index], x2[rest]) - np.maximum(x1[index], x1[rest]), 0, None)
        height = np.clip(np.minimum(y2[index], y2[rest]) - np.maximum(y1[index], y1[rest]), 0, None)
        overlap = width * height
        union = areas[index] + areas[rest] - overlap
        # Zero-area boxes have no union; they overlap nothing.
        iou = np.divide(overlap, union, out=np.zeros_like(overlap), where=union > 0)
        suppressed[rest] |= (iou > iou_threshold) & (same_group[rest] == same_group[index])
    return order[np.array(kept, dtype=np.int64)]


def _parse_selection(fields: OutputSection, *, nms: bool) -> Selection:
    default = Selection()
    return Selection(
        score_threshold=fields.number("score_threshold", default.score_threshold, low=0.0, high=1.0),
        iou_threshold=fields.number("iou_threshold", default.iou_threshold, low=0.0, high=1.0),
        max_detections=fields.integer("max_detections", default.max_detections, low=1),
        class_agnostic=fields.boolean("class_agnostic", default.class_agnostic),
        nms=nms,
    )


def _check_yolo(
    config: YoloOutput, outputs: Mapping[str, Sequence[Dim]], labels: tuple[str, ...], fail: FailFn
) -> None:
    shape = graph_output(outputs, config.name, "output.name", fail)
    wanted = "[N, 4+C, A]" if config.layout == "features_first" else "[N, A, 4+C]"
    if len(shape) != 3:
        fail("output.name", f'"{config.name}" shape {show_shape(shape)} is not {wanted} (layout {config.layout})')
    features_axis, anchors_axis = (1, 2) if config.layout == "features_first" else (2, 1)
    features, anchors = static(shape[features_axis]), static(shape[anchors_axis])
    expected = config.extra + len(labels)
    if features is None or features == expected:
        return
    where = f'the graph output "{config.name}" shape {show_shape(shape)}'
    if anchors == expected:
        other = "features_last" if config.layout == "features_first" else "features_first"
        fail("output.layout", f'"{config.layout}" does not match {where}; it looks like "{other}"')
    if features - len(labels) in (4, 5):
        fail(
            "output.objectness",
            f"is {str(config.objectness).lower()}, but {where} has {features} features per anchor for "
            f"{len(labels)} labels: {features - len(labels)} before the class scores (or labels has the wrong count)",
        )
    fail(
        "labels",
        f"has {len(labels)} entries but {where} has {features} features per anchor, i.e. "
        f"{features - config.extra} classes after {config.extra} box{' and objectness' if config.objectness else ''} "
        "features",
    )


def _check_boxes(
    config: BoxesOutput, outputs: Mapping[str, Sequence[Dim]], labels: tuple[str, ...], fail: FailFn
) -> None:
    boxes = graph_output(outputs, config.boxes, "output.boxes", fail)
    if len(boxes) != 3 or static(boxes[2]) not in (None, 4):
        fail("output.boxes", f'"{config.boxes}" shape {show_shape(boxes)} is not [N, K, 4]')
    scores = graph_output(outputs, config.scores, "output.scores", fail)
    if config.classes is not None:
        classes = graph_output(outputs, config.classes, "output.classes", fail)
        if len(classes) != 2:
            fail("output.classes", f'"{config.classes}" shape {show_shape(classes)} is not [N, K]')
        if len(scores) != 2:
            fail("output.scores", f'"{config.scores}" shape {show_shape(scores)} is not [N, K] (with output.classes)')
    elif len(scores) != 3:
        fail("output.classes", f'is required: "{config.scores}" shape {show_shape(scores)} is not [N, K, C]')
    else:
        columns = static(scores[2])
        if columns is not None and columns - config.class_offset != len(labels):
            fail(
                "labels",
                f'has {len(labels)} entries but the graph output "{config.scores}" shape {show_shape(scores)} has '
                f"{columns} class columns (class_offset {config.class_offset})",
            )
    box_count, score_count = static(boxes[1]), static(scores[1])
    if box_count is not None and score_count is not None and box_count != score_count:
        fail("output.scores", f'"{config.scores}" has {score_count} rows but "{config.boxes}" has {box_count} boxes')
    if config.count is not None:
        count = graph_output(outputs, config.count, "output.count", fail)
        if any(static(dim) != 1 for dim in count[1:]):
            fail("output.count", f'"{config.count}" shape {show_shape(count)} is not [N]')


Candidates = tuple[np.ndarray, np.ndarray, np.ndarray]
"""Boxes ``[K, 4]`` (x1, y1, x2, y2 in input pixels), scores ``[K]``, label indices ``[K]``."""


def _yolo_candidates(outputs: Mapping[str, np.ndarray], config: YoloOutput, labels: tuple[str, ...]) -> Candidates:
    rows = np.asarray(outputs[config.name], dtype=np.float64)
    if config.layout == "features_first" and rows.ndim == 2:
        rows = rows.T
    expected = config.extra + len(labels)
    if rows.ndim != 2 or rows.shape[1] != expected:
        raise ModelConfigError(
            f'output "{config.name}" returned shape {list(np.asarray(outputs[config.name]).shape)} per image; '
            f"expected {expected} features per anchor ({config.layout}) for {len(labels)} labels",
            field="labels",
        )
    centre_x, centre_y, width, height = rows[:, :4].T
    boxes = np.stack([centre_x - width / 2, centre_y - height / 2, centre_x + width / 2, centre_y + height / 2], 1)
    class_scores = rows[:, config.extra :]
    if config.objectness:
        class_scores = class_scores * rows[:, 4:5]
    classes = np.argmax(class_scores, axis=1)
    return boxes, class_scores[np.arange(len(rows)), classes], classes


def _boxes_candidates(
    outputs: Mapping[str, np.ndarray], config: BoxesOutput, labels: tuple[str, ...], geometry: Geometry
) -> Candidates:
    boxes = np.asarray(outputs[config.boxes], dtype=np.float64)
    scores = np.asarray(outputs[config.scores], dtype=np.float64)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ModelConfigError(f'output "{config.boxes}" returned shape {list(boxes.shape)} per image, not [K, 4]')
    if config.classes is None:
        # Columns before class_offset (a background score) are not labels, so they never win.
        label_scores = scores[..., config.class_offset :]
        classes = np.argmax(label_scores, axis=-1)
        scores = np.take_along_axis(label_scores, classes[..., None], axis=-1)[..., 0]
    else:
        classes = np.rint(np.asarray(outputs[config.classes], dtype=np.float64)).astype(np.int64) - config.class_offset
    if scores.shape != (len(boxes),) or classes.shape != (len(boxes),):
        raise ModelConfigError(
            f'output "{config.scores}" returned shape {list(scores.shape)} per image for {len(boxes)} boxes',
            field="output.scores",
        )
    if config.count is not None:
        real = max(0, int(np.asarray(outputs[config.count]).reshape(-1)[0]))
        boxes, scores, classes = boxes[:real], scores[:real], classes[:real]

    if config.box_format == "yxyx":
        boxes = boxes[:, [1, 0, 3, 2]]
    elif config.box_format == "xywh":
        boxes = np.concatenate([boxes[:, :2], boxes[:, :2] + boxes[:, 2:]], axis=1)
    if config.box_units == "normalized":
        height, width = geometry.input_size
        boxes = boxes * np.array([width, height, width, height], dtype=np.float64)

    # Only boxes that pass the threshold become results, so only their class ids must be labels.
    wild = (scores >= config.selection.score_threshold) & ((classes < 0) | (classes >= len(labels)))
    if wild.any():
        raise ModelConfigError(
            f"class id {int(classes[wild][0]) + config.class_offset} minus class_offset {config.class_offset} is "
            f"not the index of one of the {len(labels)} labels",
            field="output.class_offset",
        )
    return boxes, scores, classes


def _select(
    boxes: np.ndarray,
    scores: np.ndarray,
    classes: np.ndarray,
    selection: Selection,
    labels: tuple[str, ...],
    geometry: Geometry,
) -> dict[str, Any]:
    # NaN compares false, so a broken score never passes.
    passing = np.flatnonzero(scores >= selection.score_threshold)
    # Python's round (correctly rounded, unlike np.round) on every coordinate: a few hundred values at most.
    mapped = np.array(
        [round(value, BOX_DECIMALS) for value in geometry.to_original_boxes(boxes[passing]).ravel().tolist()],
        dtype=np.float64,
    ).reshape(-1, 4)
    # A box entirely in the padding, or cropped away, has nothing left on the image.
    visible = (mapped[:, 2] > mapped[:, 0]) & (mapped[:, 3] > mapped[:, 1])
    passing, mapped = passing[visible], mapped[visible]
    if selection.nms:
        group = None if selection.class_agnostic else classes[passing]
        order = nms(boxes[passing], scores[passing], group, selection.iou_threshold)
    else:
        order = np.argsort(-scores[passing], kind="stable")
    order = order[: selection.max_detections]
    detections = [
        {
            "label": labels[int(classes[passing[index]])],
            "score": score(scores[passing[index]]),
            "box": [float(value) for value in mapped[index]],
        }
        for index in order
    ]
    return {"detections": detections, "count": len(detections)}
