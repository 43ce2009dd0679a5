"""Detection decoder: YOLO and multi-output formats, box formats and units, NMS, the letterbox undo, checks."""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pytest

from modelrun.decoders import decoder_for
from modelrun.decoders.detection import nms
from modelrun.errors import ModelConfigError
from modelrun.transforms import Geometry

LABELS = ("circle", "square")
decoder = decoder_for("detection")


def letterboxed() -> Geometry:
    # A 200x100 (h x w) image letterboxed into 64x64: scale 0.32, 16 px of padding left and right.
    return Geometry.identity(200, 100).then((0.32, 0.32), (0.0, 16.0), (64, 64))


def yolo_rows() -> np.ndarray:
    """Anchors as rows ``cx, cy, w, h, circle, square`` in input pixels of the letterboxed 64x64 input."""
    return np.array(
        [
            [24, 16, 16, 32, 0.9, 0.0],  # circle, [16, 0, 32, 32] -> original [0, 0, 50, 100]
            [24, 18, 16, 32, 0.8, 0.1],  # circle overlapping the first (IoU 0.88): suppressed
            [24, 18, 16, 32, 0.0, 0.7],  # square on the same spot: kept unless class-agnostic
            [40, 40, 8, 8, 0.0, 0.1],  # below the score threshold
        ]
    )


def yolo(run_graph: Any, fail: Any, **section: Any) -> dict[str, Any]:
    """Decode :func:`yolo_rows` from a features_first graph output ``[1, 6, 4]``."""
    graph = run_graph({"output0": yolo_rows().T[None]})
    config = decoder.parse_output(
        {"format": "yolo", "name": "output0", "layout": "features_first", **section}, LABELS, fail
    )
    decoder.check_graph(config, graph.shapes, LABELS, fail)
    return decoder.decode(graph.outputs, config, LABELS, letterboxed())


def test_yolo_boxes_are_suppressed_per_class_and_mapped_back_through_the_letterbox(run_graph: Any, fail: Any) -> None:
    # when the YOLO output is decoded with class-aware NMS
    result = yolo(run_graph, fail)

    # then the overlapping lower circle is gone, the square stays, and boxes are in the original's pixels
    assert result == {
        "detections": [
            {"label": "circle", "score": 0.9, "box": [0.0, 0.0, 50.0, 100.0]},
            {"label": "square", "score": 0.7, "box": [0.0, 6.25, 50.0, 106.25]},
        ],
        "count": 2,
    }


def test_class_agnostic_nms_suppresses_overlaps_of_another_class(run_graph: Any, fail: Any) -> None:
    result = yolo(run_graph, fail, class_agnostic=True)
    assert [(entry["label"], entry["score"]) for entry in result["detections"]] == [("circle", 0.9)]


def test_max_detections_keeps_the_best_scores(run_graph: Any, fail: Any) -> None:
    result = yolo(run_graph, fail, max_detections=1)
    assert result["count"] == 1
    assert result["detections"][0]["label"] == "circle"


def test_the_score_threshold_decides_which_candidates_count(run_graph: Any, fail: Any) -> None:
    # given a threshold low enough for the fourth anchor (square 0.1 at [36, 36, 44, 44])
    result = yolo(run_graph, fail, score_threshold=0.05)

    # then it is reported too, after the others
    assert result["detections"][-1] == {"label": "square", "score": 0.1, "box": [62.5, 112.5, 87.5, 137.5]}


def test_a_box_left_empty_by_clipping_is_dropped(run_graph: Any, fail: Any) -> None:
    # given a confident box entirely in the letterbox's left padding (input x 4..12)
    rows = np.array([[8, 16, 8, 8, 0.95, 0.0], [24, 16, 16, 32, 0.0, 0.9]])
    graph = run_graph({"output0": rows.T[None]})
    config = decoder.parse_output({"format": "yolo", "name": "output0", "layout": "features_first"}, LABELS, fail)

    # when decoded
    result = decoder.decode(graph.outputs, config, LABELS, letterboxed())

    # then only the box on the image remains
    assert result["detections"] == [{"label": "square", "score": 0.9, "box": [0.0, 0.0, 50.0, 100.0]}]


def test_yolo_features_last_with_objectness_multiplies_the_scores(run_graph: Any, fail: Any) -> None:
    # given a [1, A, 5 + C] output (a Transpose of the features) with objectness before the class scores
    features = np.array(
        [
            [10, 10, 4, 4, 0.5, 0.9, 0.1],  # 0.5 * 0.9 = 0.45
            [40, 40, 4, 4, 1.0, 0.1, 0.3],  # 1.0 * 0.3 = 0.3: below 0.4
        ]
    )
    graph = run_graph({"output0": features.T[None]}, transpose={"output0": (0, 2, 1)})
    section = {
        "format": "yolo",
        "name": "output0",
        "layout": "features_last",
        "objectness": True,
        "score_threshold": 0.4,
    }
    config = decoder.parse_output(section, LABELS, fail)
    decoder.check_graph(config, graph.shapes, LABELS, fail)

    # when decoded on an unchanged 64x64 image
    result = decoder.decode(graph.outputs, config, LABELS, Geometry.identity(64, 64))

    # then the score is objectness times class score
    assert result["detections"] == [{"label": "circle", "score": 0.45, "box": [8.0, 8.0, 12.0, 12.0]}]


def boxes_section(**changes: Any) -> dict[str, Any]:
    section = {
        "format": "boxes",
        "boxes": "boxes",
        "scores": "scores",
        "classes": "classes",
        "box_format": "xyxy",
        "box_units": "pixels",
    }
    return {**section, **changes}


def test_normalized_yxyx_boxes_scale_to_the_input_and_count_limits_the_rows(run_graph: Any, fail: Any) -> None:
    # given a 50x100 (h x w) input, normalized yxyx boxes, 1-based class ids and a count of 2 rows out of 3
    graph = run_graph(
        {
            "boxes": np.array([[[0.1, 0.2, 0.5, 0.6], [0.5, 0.5, 1.0, 1.0], [0.0, 0.0, 1.0, 1.0]]]),
            "scores": np.array([[0.9, 0.8, 0.99]]),
            "classes": np.array([[2.0, 1.0, 1.0]]),
            "count": np.array([2.0]),
        }
    )
    config = decoder.parse_output(
        boxes_section(box_format="yxyx", box_units="normalized", class_offset=1, count="count"), LABELS, fail
    )
    decoder.check_graph(config, graph.shapes, LABELS, fail)

    # when decoded
    result = decoder.decode(graph.outputs, config, LABELS, Geometry.identity(50, 100))

    # then x scales by the width, y by the height, and the row beyond the count is ignored
    assert result["detections"] == [
        {"label": "square", "score": 0.9, "box": [20.0, 5.0, 60.0, 25.0]},
        {"label": "circle", "score": 0.8, "box": [50.0, 25.0, 100.0, 50.0]},
    ]


def test_xywh_boxes_are_top_left_corner_width_and_height(run_graph: Any, fail: Any) -> None:
    graph = run_graph(
        {"boxes": np.array([[[10, 10, 20, 30]]]), "scores": np.array([[0.5]]), "classes": np.array([[0.0]])}
    )
    config = decoder.parse_output(boxes_section(box_format="xywh"), LABELS, fail)
    result = decoder.decode(graph.outputs, config, LABELS, Geometry.identity(64, 64))
    assert result["detections"] == [{"label": "circle", "score": 0.5, "box": [10.0, 10.0, 30.0, 40.0]}]


def test_per_class_scores_without_classes_skip_the_background_column(run_graph: Any, fail: Any) -> None:
    # given scores [1, K, 1 + C] whose column 0 is the background, and class_offset 1
    graph = run_graph(
        {
            "boxes": np.array([[[0, 0, 10, 10], [20, 20, 30, 30]]]),
            "scores": np.array([[[0.9, 0.05, 0.05], [0.1, 0.3, 0.6]]]),
        }
    )
    section = boxes_section(class_offset=1)
    del section["classes"]
    config = decoder.parse_output(section, LABELS, fail)
    decoder.check_graph(config, graph.shapes, LABELS, fail)

    # when decoded with a threshold of 0.25
    result = decoder.decode(graph.outputs, config, LABELS, Geometry.identity(64, 64))

    # then each box takes its best label column; the background's 0.9 is no detection
    assert result["detections"] == [{"label": "square", "score": 0.6, "box": [20.0, 20.0, 30.0, 30.0]}]


def test_without_nms_overlapping_boxes_all_stay(run_graph: Any, fail: Any) -> None:
    graph = run_graph(
        {
            "boxes": np.array([[[0, 0, 10, 10], [0, 0, 10, 11]]]),
            "scores": np.array([[0.6, 0.9]]),
            "classes": np.array([[0.0, 0.0]]),
        }
    )
    config = decoder.parse_output(boxes_section(nms=False), LABELS, fail)
    result = decoder.decode(graph.outputs, config, LABELS, Geometry.identity(64, 64))
    assert [entry["score"] for entry in result["detections"]] == [0.9, 0.6]


def test_a_class_id_beyond_the_labels_fails_naming_class_offset(run_graph: Any, fail: Any) -> None:
    graph = run_graph(
        {"boxes": np.array([[[0, 0, 10, 10]]]), "scores": np.array([[0.9]]), "classes": np.array([[2.0]])}
    )
    config = decoder.parse_output(boxes_section(), LABELS, fail)
    with pytest.raises(ModelConfigError, match="class id 2") as caught:
        decoder.decode(graph.outputs, config, LABELS, Geometry.identity(64, 64))
    assert caught.value.details["field"] == "output.class_offset"


def test_nms_keeps_equal_scores_in_input_order_and_ignores_zero_area_boxes() -> None:
    # given two disjoint boxes with equal scores and a zero-area box on top of the first
    boxes = np.array([[0, 0, 10, 10], [20, 20, 30, 30], [5, 5, 5, 5]], dtype=np.float64)
    kept = nms(boxes, np.array([0.5, 0.5, 0.9]), None, 0.1)
    # then nothing is suppressed and ties keep their order
    assert kept.tolist() == [2, 0, 1]


@pytest.mark.parametrize(
    ("section", "field"),
    [
        ({"name": "output0", "layout": "features_first"}, "output.format"),
        ({"format": "ssd", "name": "output0"}, "output.format"),
        ({"format": "yolo", "name": "output0"}, "output.layout"),
        ({"format": "yolo", "name": "output0", "layout": "features_first", "iou_threshold": 2}, "output.iou_threshold"),
        (
            {"format": "yolo", "name": "output0", "layout": "features_first", "max_detections": 0},
            "output.max_detections",
        ),
        ({"format": "yolo", "name": "output0", "layout": "features_first", "nms": False}, "output.nms"),
        ({"format": "yolo", "name": "output0", "layout": "features_first", "objectness": "yes"}, "output.objectness"),
        (boxes_section(box_format="cxcywh"), "output.box_format"),
        (boxes_section(box_units="percent"), "output.box_units"),
        (boxes_section(class_offset=-1), "output.class_offset"),
        ({"format": "boxes", "scores": "s", "box_format": "xyxy", "box_units": "pixels"}, "output.boxes"),
    ],
)
def test_a_wrong_output_section_fails_naming_the_field(section: dict[str, Any], field: str, fail: Any) -> None:
    with pytest.raises(ModelConfigError) as caught:
        decoder.parse_output(section, LABELS, fail)
    assert caught.value.details["field"] == field


@pytest.mark.parametrize(
    ("layout", "objectness", "shape", "field", "message"),
    [
        ("features_first", False, [1, 9, 8400], "labels", "has 2 entries but the graph output"),
        ("features_first", False, [1, 8400, 6], "output.layout", 'it looks like "features_last"'),
        ("features_last", False, [1, 8400, 7], "output.objectness", "is false, but"),
        ("features_last", True, [1, 8400, 6], "output.objectness", "is true, but"),
        ("features_first", False, [1, 6], "output.name", "is not [N, 4+C, A]"),
    ],
)
def test_the_yolo_graph_check_names_the_field_to_change(
    layout: str, objectness: bool, shape: list[Any], field: str, message: str, fail: Any
) -> None:
    section = {"format": "yolo", "name": "output0", "layout": layout, "objectness": objectness}
    config = decoder.parse_output(section, LABELS, fail)
    with pytest.raises(ModelConfigError, match=re.escape(message)) as caught:
        decoder.check_graph(config, {"output0": shape}, LABELS, fail)
    assert caught.value.details["field"] == field


def test_the_yolo_graph_check_accepts_symbolic_dims(fail: Any) -> None:
    config = decoder.parse_output({"format": "yolo", "name": "output0", "layout": "features_first"}, LABELS, fail)
    decoder.check_graph(config, {"output0": ["batch", "features", "anchors"]}, LABELS, fail)


def test_the_graph_check_names_a_missing_output(run_graph: Any, fail: Any) -> None:
    graph = run_graph({"output0": yolo_rows().T[None]})
    config = decoder.parse_output({"format": "yolo", "name": "output1", "layout": "features_first"}, LABELS, fail)
    with pytest.raises(ModelConfigError, match='"output1" is not an output of the graph') as caught:
        decoder.check_graph(config, graph.shapes, LABELS, fail)
    assert caught.value.details["field"] == "output.name"


@pytest.mark.parametrize(
    ("changes", "shapes", "field"),
    [
        ({}, {"boxes": ["N", 10, 4], "scores": ["N", 10]}, "output.classes"),
        ({"classes": None}, {"boxes": ["N", 10, 4], "scores": ["N", 10]}, "output.classes"),
        ({"classes": None}, {"boxes": ["N", 10, 4], "scores": ["N", 10, 3]}, "labels"),
        ({}, {"boxes": ["N", 10, 5], "scores": ["N", 10], "classes": ["N", 10]}, "output.boxes"),
        ({}, {"boxes": ["N", 10, 4], "scores": ["N", 12], "classes": ["N", 10]}, "output.scores"),
        ({"count": "num"}, {"boxes": ["N", 10, 4], "scores": ["N", 10], "classes": ["N", 10]}, "output.count"),
    ],
)
def test_the_boxes_graph_check_names_the_field_to_change(
    changes: dict[str, Any], shapes: dict[str, list[Any]], field: str, fail: Any
) -> None:
    section = {key: value for key, value in boxes_section(**changes).items() if value is not None}
    config = decoder.parse_output(section, LABELS, fail)
    with pytest.raises(ModelConfigError) as caught:
        decoder.check_graph(config, shapes, LABELS, fail)
    assert caught.value.details["field"] == field


def test_describe_shows_the_defaults_it_applies(fail: Any) -> None:
    config = decoder.parse_output({"format": "yolo", "name": "output0", "layout": "features_first"}, LABELS, fail)
    assert decoder.describe(config) == {
        "format": "yolo",
        "name": "output0",
        "layout": "features_first",
        "objectness": False,
        "score_threshold": 0.25,
        "iou_threshold": 0.45,
        "max_detections": 100,
        "class_agnostic": False,
    }
    assert decoder.output_names(decoder.parse_output(boxes_section(count="n"), LABELS, fail)) == (
        "boxes",
        "scores",
        "classes",
        "n",
    )
