"""The committed detection and segmentation demo models (models/shapes/1, models/cells/1), run with bare ONNX
Runtime and the reference preprocessing of tests/bare_onnx.py over their committed held-out samples, and the
measures and geometry that reference relies on."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from PIL import Image

from tests.bare_onnx import BareModel, Geometry, apply_transforms, decode_yolo
from tests.quality import (
    LabelledBox,
    average_precision,
    class_ious,
    confusion_matrix,
    detection_counts,
    mean_average_precision,
    mean_iou,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
SHAPES_DIR = REPO_ROOT / "models" / "shapes" / "1"
CELLS_DIR = REPO_ROOT / "models" / "cells" / "1"
SHAPES_SAMPLES = REPO_ROOT / "samples" / "shapes"
CELLS_SAMPLES = REPO_ROOT / "samples" / "cells"
SHAPES_LABELS = ["circle", "square", "triangle"]
CELLS_LABELS = ["background", "cell", "nucleus", "debris"]
MIN_SHAPES_MAP = 0.9
MIN_CELLS_MEAN_IOU = 0.9
MAX_MODEL_BYTES = 2_500_000


def read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def graph_dims(value: onnx.ValueInfoProto) -> list[int | str]:
    return [dim.dim_param or dim.dim_value for dim in value.type.tensor_type.shape.dim]


# --- the reference measures --------------------------------------------------------------------------------------


def test_average_precision_integrates_the_monotone_precision_envelope() -> None:
    # ranked hits: yes, no, yes out of 2 ground-truth boxes -> precision 1 up to recall 0.5, then 2/3 up to 1
    recall = np.array([0.5, 0.5, 1.0])
    precision = np.array([1.0, 0.5, 2 / 3])

    assert average_precision(recall, precision) == pytest.approx(0.5 * 1.0 + 0.5 * 2 / 3)


def test_mean_average_precision_counts_a_duplicate_as_a_false_positive_and_a_miss_as_lost_recall() -> None:
    truths = {
        "a": [LabelledBox("circle", (0, 0, 10, 10)), LabelledBox("square", (20, 20, 40, 40))],
        "b": [LabelledBox("circle", (0, 0, 10, 10))],
    }
    predictions = {
        "a": [
            LabelledBox("circle", (0, 0, 10, 10), 0.9),
            LabelledBox("circle", (1, 1, 10, 10), 0.8),  # duplicate of the first: a false positive
            LabelledBox("square", (20, 20, 40, 40), 0.7),
        ],
        "b": [LabelledBox("circle", (30, 30, 40, 40), 0.95)],  # misses the circle of b
    }

    mean, per_class = mean_average_precision(predictions, truths, ["circle", "square", "triangle"])

    # circle: ranked FP (0.95), TP (0.9), FP (0.8) of 2 -> only recall 0.5 reached, at precision 1/2
    assert per_class == pytest.approx({"circle": 0.25, "square": 1.0})
    assert mean == pytest.approx(0.625)


def test_detection_counts_match_by_class_and_overlap() -> None:
    truths = {"a": [LabelledBox("circle", (0, 0, 10, 10)), LabelledBox("square", (20, 20, 30, 30))]}
    predictions = {"a": [LabelledBox("square", (0, 0, 10, 10), 0.9), LabelledBox("square", (21, 21, 30, 30), 0.5)]}

    assert detection_counts(predictions, truths) == (1, 1, 1)


def test_mean_iou_is_taken_per_class_over_all_pixels_and_skips_absent_classes() -> None:
    truth = np.array([[0, 0, 1, 1], [0, 0, 1, 1]])
    predicted = np.array([[0, 0, 0, 1], [0, 0, 1, 1]])

    matrix = confusion_matrix(truth, predicted, 3)

    np.testing.assert_allclose(class_ious(matrix), [4 / 5, 3 / 4, np.nan])
    assert mean_iou(matrix) == pytest.approx((4 / 5 + 3 / 4) / 2)
    assert mean_iou(matrix, [1]) == pytest.approx(3 / 4)


def test_confusion_matrix_rejects_masks_of_different_shapes() -> None:
    with pytest.raises(ValueError, match="shapes differ"):
        confusion_matrix(np.zeros((2, 2), dtype=np.uint8), np.zeros((2, 3), dtype=np.uint8), 2)


# --- the reference geometry --------------------------------------------------------------------------------------


def test_letterbox_scales_to_fit_and_centres_the_padding_as_ultralytics_rounds_it() -> None:
    # 300 x 200 into 256 x 256: r = 256/300, new size 256 x 171, 85 rows of padding, top = round(42.5 - 0.1) = 42
    image = Image.new("RGB", (300, 200), (255, 255, 255))
    steps = [{"op": "letterbox", "size": [256, 256], "fill": 114}, {"op": "normalize", "scale": 1 / 255}]

    array, geometry = apply_transforms(image, steps)

    assert array.shape == (3, 256, 256)
    assert geometry.offset == (42.0, 0.0)
    assert geometry.scale == pytest.approx((171 / 200, 256 / 300))
    column = array[0, :, 128]
    assert np.flatnonzero(column == np.float32(1.0)).tolist() == list(range(42, 42 + 171))
    assert column[41] == pytest.approx(114 / 255)


def test_geometry_maps_an_input_box_back_to_the_original_and_clips_it() -> None:
    geometry = Geometry((200, 300), (256, 256), scale=(0.5, 0.5), offset=(28.0, 0.0))

    assert geometry.to_original_box([10, 38, 60, 78]) == (20.0, 20.0, 120.0, 100.0)
    assert geometry.to_original_box([-10, 0, 400, 300]) == (0.0, 0.0, 300.0, 200.0)


def test_geometry_maps_a_mask_back_by_pixel_centres_and_drops_the_padding() -> None:
    # original 4 x 6 resized by 1/2 to 2 x 3 and padded to 2 x 4 at the right
    geometry = Geometry((4, 6), (2, 4), scale=(0.5, 0.5))
    mask = np.array([[1, 2, 3, 9], [4, 5, 6, 9]])

    restored = geometry.to_original_mask(mask)

    assert restored.tolist() == [[1, 1, 2, 2, 3, 3], [1, 1, 2, 2, 3, 3], [4, 4, 5, 5, 6, 6], [4, 4, 5, 5, 6, 6]]


def test_pad_to_multiple_pads_right_and_bottom_only() -> None:
    image = Image.new("L", (70, 33), 200)
    steps = [{"op": "color", "mode": "L"}, {"op": "pad_to_multiple", "multiple": 32, "fill": 0}]

    array, geometry = apply_transforms(image, steps)

    assert array.shape == (1, 64, 96)
    assert (geometry.scale, geometry.offset) == ((1.0, 1.0), (0.0, 0.0))
    assert array[0, :33, :70].min() == 200
    assert array[0, 33:, :].max() == 0
    assert array[0, :, 70:].max() == 0


def test_decode_yolo_suppresses_overlaps_per_class_and_keeps_the_best_first() -> None:
    # anchors (columns): a circle, a weaker overlapping circle, a square at the same place, a low score
    output = np.array(
        [
            [50, 52, 50, 200],  # cx
            [50, 50, 50, 200],  # cy
            [20, 20, 20, 10],  # w
            [20, 20, 20, 10],  # h
            [0.9, 0.8, 0.1, 0.1],  # circle
            [0.1, 0.1, 0.7, 0.2],  # square
        ],
        dtype=np.float32,
    )
    spec = {"layout": "features_first", "score_threshold": 0.25, "iou_threshold": 0.45}

    found = decode_yolo(output, spec, ["circle", "square"], Geometry.identity(300, 300))

    assert [item.label for item in found] == ["circle", "square"]
    assert [item.score for item in found] == pytest.approx([0.9, 0.7])
    assert found[0].box == (40.0, 40.0, 60.0, 60.0)


# --- shapes: the detection demo ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shapes_truth() -> dict[str, Any]:
    return read_json(SHAPES_SAMPLES / "ground_truth.json")


def test_shapes_model_json_follows_the_detection_contract() -> None:
    spec = read_json(SHAPES_DIR / "model.json")

    assert (spec["name"], spec["version"], spec["task"]) == ("shapes", "1", "detection")
    assert spec["input"] == {"name": "images"}
    assert [step["op"] for step in spec["transforms"]] == ["color", "letterbox", "normalize", "layout"]
    assert spec["transforms"][1] == {
        "op": "letterbox",
        "size": [256, 256],
        "fill": 114,
        "align": "center",
        "resample": "bilinear",
    }
    output = spec["output"]
    assert {key: output[key] for key in ("format", "name", "layout", "objectness")} == {
        "format": "yolo",
        "name": "output0",
        "layout": "features_first",
        "objectness": False,
    }
    assert 0 < output["score_threshold"] < 1
    assert 0 < output["iou_threshold"] < 1
    assert spec["labels"] == SHAPES_LABELS


def test_shapes_graph_takes_a_symbolic_batch_of_letterboxed_images_and_gives_features_first_rows() -> None:
    model = onnx.load(SHAPES_DIR / "model.onnx")

    (graph_input,) = model.graph.input
    (graph_output,) = model.graph.output
    assert (graph_input.name, graph_output.name) == ("images", "output0")
    assert graph_dims(graph_input) == ["N", 3, 256, 256]
    assert graph_dims(graph_output) == ["N", 4 + len(SHAPES_LABELS), 1024]
    assert (SHAPES_DIR / "model.onnx").stat().st_size < MAX_MODEL_BYTES


def test_shapes_ground_truth_lists_exactly_the_sample_images_with_boxes_inside_them(
    shapes_truth: dict[str, Any],
) -> None:
    names = sorted(path.name for path in SHAPES_SAMPLES.glob("*.png"))

    assert sorted(shapes_truth["images"]) == names
    assert len(names) >= 40
    for name, entry in shapes_truth["images"].items():
        with Image.open(SHAPES_SAMPLES / name) as image:
            assert (image.width, image.height, image.mode) == (entry["width"], entry["height"], "RGB")
        assert 1 <= len(entry["objects"]) <= 5
        for item in entry["objects"]:
            x1, y1, x2, y2 = item["box"]
            assert item["label"] in SHAPES_LABELS
            assert 0 <= x1 < x2 <= entry["width"], name
            assert 0 <= y1 < y2 <= entry["height"], name


def test_shapes_model_finds_the_held_out_shapes(shapes_truth: dict[str, Any]) -> None:
    model = BareModel(SHAPES_DIR)
    truths = {
        name: [LabelledBox(item["label"], tuple(item["box"])) for item in entry["objects"]]
        for name, entry in shapes_truth["images"].items()
    }
    predictions = {}
    for name in truths:
        with Image.open(SHAPES_SAMPLES / name) as image:
            predictions[name] = model.detect(image)

    mean, per_class = mean_average_precision(predictions, truths, SHAPES_LABELS)

    assert mean >= MIN_SHAPES_MAP, f"mAP@0.5 {mean:.4f}, per class {per_class}"


# --- cells: the segmentation demo --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cells_truth() -> dict[str, Any]:
    return read_json(CELLS_SAMPLES / "ground_truth.json")


def test_cells_model_json_follows_the_segmentation_contract() -> None:
    spec = read_json(CELLS_DIR / "model.json")

    assert (spec["name"], spec["version"], spec["task"]) == ("cells", "1", "segmentation")
    assert spec["input"] == {"name": "image"}
    assert [step["op"] for step in spec["transforms"]] == ["color", "resize", "pad_to_multiple", "normalize", "layout"]
    assert spec["transforms"][1] == {"op": "resize", "longer": 256, "resample": "bilinear"}
    assert spec["transforms"][2] == {"op": "pad_to_multiple", "multiple": 32, "fill": 0, "align": "top_left"}
    assert spec["output"] == {"name": "scores", "type": "class_scores", "layout": "NCHW"}
    assert spec["labels"] == CELLS_LABELS


def test_cells_graph_has_a_symbolic_batch_and_size_and_scores_every_input_pixel() -> None:
    model = onnx.load(CELLS_DIR / "model.onnx")
    bare = BareModel(CELLS_DIR)

    (graph_input,) = model.graph.input
    (graph_output,) = model.graph.output
    assert graph_dims(graph_input) == ["N", 1, "H", "W"]
    assert graph_dims(graph_output) == ["N", len(CELLS_LABELS), "H", "W"]
    (scores,) = bare.session.run(["scores"], {"image": np.zeros((2, 1, 96, 160), dtype=np.float32)})
    assert scores.shape == (2, len(CELLS_LABELS), 96, 160)
    assert (CELLS_DIR / "model.onnx").stat().st_size < MAX_MODEL_BYTES


def test_cells_ground_truth_masks_are_indexed_pngs_of_each_image_size(cells_truth: dict[str, Any]) -> None:
    images = sorted(path.name for path in CELLS_SAMPLES.glob("*.png") if not path.name.endswith(".mask.png"))

    assert sorted(cells_truth["images"]) == images
    assert len(images) >= 40
    seen = set()
    for name, entry in cells_truth["images"].items():
        assert entry["mask"] == name.removesuffix(".png") + ".mask.png"
        with Image.open(CELLS_SAMPLES / name) as image, Image.open(CELLS_SAMPLES / entry["mask"]) as mask:
            assert image.mode == "L"
            assert mask.mode == "P"
            assert image.size == mask.size == (entry["width"], entry["height"])
            seen.update(np.unique(np.asarray(mask)).tolist())
    assert seen == set(range(len(CELLS_LABELS)))


def test_cells_model_segments_the_held_out_images(cells_truth: dict[str, Any]) -> None:
    model = BareModel(CELLS_DIR)
    matrix = np.zeros((len(CELLS_LABELS), len(CELLS_LABELS)), dtype=np.int64)
    for name, entry in cells_truth["images"].items():
        with Image.open(CELLS_SAMPLES / name) as image, Image.open(CELLS_SAMPLES / entry["mask"]) as truth:
            matrix += confusion_matrix(np.asarray(truth), model.segment(image), len(CELLS_LABELS))

    overall = mean_iou(matrix)

    assert overall >= MIN_CELLS_MEAN_IOU, f"mean IoU {overall:.4f}, per class {class_ious(matrix).round(4).tolist()}"
