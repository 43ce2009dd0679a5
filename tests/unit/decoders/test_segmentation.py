"""Segmentation decoder: argmax and thresholds, layouts, the mask mapped back, stats, the PNG, checks."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pytest
from PIL import Image

from modelrun.decoders import Mask, decoder_for
from modelrun.decoders.segmentation import PALETTE
from modelrun.errors import ModelConfigError
from modelrun.transforms import Geometry

LABELS = ("background", "cat", "dog")
BINARY = ("background", "person")
decoder = decoder_for("segmentation")


def letterboxed() -> Geometry:
    # A 100x200 (h x w) image letterboxed into 8x8: scale 0.04, 2 rows of padding above and below.
    return Geometry.identity(100, 200).then((0.04, 0.04), (2.0, 0.0), (8, 8))


def class_scores() -> np.ndarray:
    """``[1, 3, 8, 8]``: cat on input rows 2-3, columns 0-3; dog on rows 4-5, columns 6-7; background elsewhere."""
    scores = np.zeros((1, 3, 8, 8))
    scores[0, 0] = 0.5
    scores[0, 1, 2:4, 0:4] = 1.0
    scores[0, 2, 4:6, 6:8] = 1.0
    return scores


def expected_original() -> np.ndarray:
    mask = np.zeros((100, 200), dtype=np.uint8)
    mask[0:50, 0:100] = 1
    mask[50:100, 150:200] = 2
    return mask


def decoded_indices(mask: Mask) -> np.ndarray:
    image = Image.open(io.BytesIO(mask.png))
    assert image.mode == "P"
    return np.asarray(image)


def test_class_scores_are_argmaxed_and_mapped_back_through_the_letterbox(run_graph: Any, fail: Any) -> None:
    # given NCHW class scores for a letterboxed non-square image
    graph = run_graph({"masks": class_scores()})
    config = decoder.parse_output({"name": "masks", "type": "class_scores"}, LABELS, fail)
    decoder.check_graph(config, graph.shapes, LABELS, fail)

    # when decoded
    result = decoder.decode(graph.outputs, config, LABELS, letterboxed())

    # then every label is counted on the original 100x200 image, with pixel-edge boxes
    assert result["classes"] == [
        {"label": "background", "index": 0, "pixels": 12500, "fraction": 0.625, "box": [0, 0, 200, 100]},
        {"label": "cat", "index": 1, "pixels": 5000, "fraction": 0.25, "box": [0, 0, 100, 50]},
        {"label": "dog", "index": 2, "pixels": 2500, "fraction": 0.125, "box": [150, 50, 200, 100]},
    ]
    # and the PNG decodes back to the same class indices at the original size
    mask = result["mask"]
    assert (mask.width, mask.height) == (200, 100)
    np.testing.assert_array_equal(decoded_indices(mask), expected_original())


def test_nhwc_class_scores_give_the_same_mask(run_graph: Any, fail: Any) -> None:
    # given the same scores emitted channels-last through a Transpose node
    graph = run_graph({"masks": class_scores()}, transpose={"masks": (0, 2, 3, 1)})
    config = decoder.parse_output({"name": "masks", "type": "class_scores", "layout": "NHWC"}, LABELS, fail)
    decoder.check_graph(config, graph.shapes, LABELS, fail)

    # when decoded
    result = decoder.decode(graph.outputs, config, LABELS, letterboxed())

    # then the mask is the NCHW one
    np.testing.assert_array_equal(decoded_indices(result["mask"]), expected_original())


def test_an_absent_class_has_no_pixels_and_no_box(run_graph: Any, fail: Any) -> None:
    scores = np.zeros((1, 3, 2, 3))
    scores[0, 1] = 1.0
    graph = run_graph({"masks": scores})
    config = decoder.parse_output({"name": "masks", "type": "class_scores"}, LABELS, fail)
    result = decoder.decode(graph.outputs, config, LABELS, Geometry.identity(2, 3))
    assert result["classes"][2] == {"label": "dog", "index": 2, "pixels": 0, "fraction": 0.0, "box": None}
    assert result["classes"][1]["box"] == [0, 0, 3, 2]


def test_probabilities_at_or_above_the_threshold_are_foreground(run_graph: Any, fail: Any) -> None:
    # given one probability channel over a 2x3 image
    graph = run_graph({"probs": np.array([[[[0.3, 0.5, 0.6], [0.1, 0.49, 0.9]]]])})
    config = decoder.parse_output({"name": "probs", "type": "probabilities"}, BINARY, fail)

    # when decoded with the default threshold 0.5
    result = decoder.decode(graph.outputs, config, BINARY, Geometry.identity(2, 3))

    # then 0.5 counts as foreground
    np.testing.assert_array_equal(decoded_indices(result["mask"]), [[0, 1, 1], [0, 0, 1]])
    assert result["classes"][1] == {"label": "person", "index": 1, "pixels": 3, "fraction": 0.5, "box": [1, 0, 3, 2]}


def test_logits_go_through_a_sigmoid_before_the_threshold(run_graph: Any, fail: Any) -> None:
    # given logits 0 (sigmoid 0.5) and 2 (sigmoid 0.88) and a threshold of 0.6
    graph = run_graph({"logits": np.array([[[[0.0, 2.0, -3.0]]]])})
    config = decoder.parse_output({"name": "logits", "type": "logits", "threshold": 0.6}, BINARY, fail)

    # when decoded
    result = decoder.decode(graph.outputs, config, BINARY, Geometry.identity(1, 3))

    # then only the logit 2 is foreground
    np.testing.assert_array_equal(decoded_indices(result["mask"]), [[0, 1, 0]])


def test_an_output_smaller_than_the_input_covers_the_whole_input(run_graph: Any, fail: Any) -> None:
    # given a 2x2 output for a 4x4 input (a stride-2 model) on an unchanged 4x4 image
    graph = run_graph({"probs": np.array([[[[1.0, 0.0], [0.0, 0.0]]]])})
    config = decoder.parse_output({"name": "probs", "type": "probabilities"}, BINARY, fail)

    # when decoded
    result = decoder.decode(graph.outputs, config, BINARY, Geometry.identity(4, 4))

    # then the top-left output pixel covers the top-left 2x2 pixels
    assert result["classes"][1]["pixels"] == 4
    assert result["classes"][1]["box"] == [0, 0, 2, 2]


def test_every_box_is_right_with_more_classes_present_than_one_pass_of_bits_holds(fail: Any) -> None:
    # given 200 classes, class k in column k of a 3x200 image, and class 7 also at the far right of the middle row
    labels = tuple(f"class {index}" for index in range(200))
    scores = np.zeros((200, 3, 200), dtype=np.float32)
    scores[np.arange(200), :, np.arange(200)] = 1.0
    scores[:, 1, 199] = 0.0
    scores[7, 1, 199] = 1.0
    config = decoder.parse_output({"name": "masks", "type": "class_scores"}, labels, fail)

    # when decoded
    result = decoder.decode({"masks": scores}, config, labels, Geometry.identity(3, 200))

    # then each class's box is its column, class 7's reaches the last column, class 199 keeps its two other pixels
    boxes = [entry["box"] for entry in result["classes"]]
    assert boxes[7] == [7, 0, 200, 3]
    assert boxes[199] == [199, 0, 200, 3]
    assert result["classes"][199]["pixels"] == 2
    assert [box for index, box in enumerate(boxes) if index not in (7, 199)] == [
        [index, 0, index + 1, 3] for index in range(200) if index not in (7, 199)
    ]


def test_the_palette_is_black_then_distinct_colours() -> None:
    colours = [PALETTE[index * 3 : index * 3 + 3] for index in range(256)]
    assert colours[:3] == [b"\x00\x00\x00", b"\x80\x00\x00", b"\x00\x80\x00"]
    assert len(set(colours)) == 256


@pytest.mark.parametrize(
    ("section", "labels", "field"),
    [
        ({"name": "m", "type": "class_scores", "threshold": 0.5}, LABELS, "output.threshold"),
        ({"name": "m", "type": "probabilities"}, LABELS, "labels"),
        ({"name": "m", "type": "class_scores"}, tuple(f"c{index}" for index in range(256)), "labels"),
        ({"name": "m", "type": "class_scores", "layout": "CHW"}, LABELS, "output.layout"),
        ({"name": "m", "type": "logits", "threshold": 1.5}, BINARY, "output.threshold"),
        ({"name": "m", "type": "mask"}, LABELS, "output.type"),
        ({"type": "logits"}, BINARY, "output.name"),
    ],
)
def test_a_wrong_output_section_fails_naming_the_field(
    section: dict[str, Any], labels: tuple[str, ...], field: str, fail: Any
) -> None:
    with pytest.raises(ModelConfigError) as caught:
        decoder.parse_output(section, labels, fail)
    assert caught.value.details["field"] == field


@pytest.mark.parametrize(
    ("section", "labels", "shape", "field"),
    [
        ({"name": "m", "type": "class_scores"}, LABELS, [1, 4, 64, 64], "labels"),
        ({"name": "m", "type": "class_scores"}, LABELS, [1, 64, 64, 3], "output.layout"),
        ({"name": "m", "type": "probabilities"}, BINARY, [1, 2, 64, 64], "output.type"),
        ({"name": "m", "type": "class_scores"}, LABELS, [1, 3, 64], "output.name"),
    ],
)
def test_the_graph_check_names_the_field_to_change(
    section: dict[str, Any], labels: tuple[str, ...], shape: list[Any], field: str, fail: Any
) -> None:
    config = decoder.parse_output(section, labels, fail)
    with pytest.raises(ModelConfigError) as caught:
        decoder.check_graph(config, {"m": shape}, labels, fail)
    assert caught.value.details["field"] == field


def test_the_graph_check_names_a_missing_output(fail: Any) -> None:
    config = decoder.parse_output({"name": "m", "type": "class_scores"}, LABELS, fail)
    with pytest.raises(ModelConfigError, match='"m" is not an output of the graph') as caught:
        decoder.check_graph(config, {"out": [1, 3, 8, 8]}, LABELS, fail)
    assert caught.value.details["field"] == "output.name"


def test_describe_shows_the_threshold_only_where_it_applies(fail: Any) -> None:
    scores = decoder.parse_output({"name": "m", "type": "class_scores"}, LABELS, fail)
    probs = decoder.parse_output({"name": "m", "type": "probabilities"}, BINARY, fail)
    assert decoder.describe(scores) == {"name": "m", "type": "class_scores", "layout": "NCHW"}
    assert decoder.describe(probs) == {"name": "m", "type": "probabilities", "layout": "NCHW", "threshold": 0.5}
