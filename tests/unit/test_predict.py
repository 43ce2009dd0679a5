"""Predictor.predict for every task: decode, prepare, infer, decode; classification keeps its keys exactly."""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from modelrun.images.decode import Limits
from modelrun.models.registry import ModelRegistry
from modelrun.predict import Predictor
from tests.modelfactory import make_model
from tests.unit.conftest import IR_VERSION, OPSET, write_model_folder


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def finish(
    nodes: list[onnx.NodeProto], inputs: list[Any], outputs: list[Any], initializers: list[Any]
) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "predict-test", inputs, outputs, initializer=initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    return model


def bright_pixel_segmenter() -> onnx.ModelProto:
    """Grey input -> class scores ``[255 - x, x]``: a pixel brighter than mid-grey is class 1."""
    nodes = [
        helper.make_node("Sub", ["full", "images"], ["dark"]),
        helper.make_node("Concat", ["dark", "images"], ["masks"], axis=1),
    ]
    return finish(
        nodes,
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", 1, "H", "W"])],
        [helper.make_tensor_value_info("masks", TensorProto.FLOAT, ["N", 2, "H", "W"])],
        [numpy_helper.from_array(np.array(255.0, dtype=np.float32), "full")],
    )


def one_box_detector() -> onnx.ModelProto:
    """Whatever the image, one box ``[2, 2, 6, 6]`` in input pixels, score 0.9, class 1."""
    constants = {
        "boxes": np.array([[[2, 2, 6, 6]]], dtype=np.float32),
        "scores": np.array([[0.9]], dtype=np.float32),
        "classes": np.array([[1]], dtype=np.float32),
    }
    nodes = [
        helper.make_node("Constant", [], [name], value=numpy_helper.from_array(value))
        for name, value in constants.items()
    ]
    return finish(
        nodes,
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", 3, 8, 8])],
        [
            helper.make_tensor_value_info(name, TensorProto.FLOAT, list(value.shape))
            for name, value in constants.items()
        ],
        [],
    )


@pytest.fixture
def segmenter(tmp_path: Path) -> Predictor:
    spec = {
        "task": "segmentation",
        "input": {"name": "images"},
        "transforms": [{"op": "color", "mode": "L"}, {"op": "resize", "longer": 8, "resample": "nearest"}],
        "output": {"name": "masks", "type": "class_scores", "layout": "NCHW"},
        "labels": ["background", "bright"],
    }
    write_model_folder(tmp_path, bright_pixel_segmenter(), spec, name="seg")
    return Predictor(ModelRegistry(tmp_path), Limits(), "seg")


def half_bright() -> Image.Image:
    """16x8, the left half white."""
    pixels = np.zeros((8, 16), dtype=np.uint8)
    pixels[:, :8] = 255
    return Image.fromarray(pixels, "L")


def test_a_segmentation_returns_its_classes_and_the_mask_inline_on_the_original_size(segmenter: Predictor) -> None:
    # given a segmenter of bright pixels and a 16x8 image whose left half is white
    # when it is predicted
    result = segmenter.predict(png(half_bright()))

    # then half the pixels are "bright" and the mask is a 16x8 indexed PNG with class 1 on the left
    bright = next(entry for entry in result["classes"] if entry["label"] == "bright")
    assert bright["pixels"] == 64
    mask = result["mask"]
    assert (mask["format"], mask["width"], mask["height"], mask["encoding"]) == ("png", 16, 8, "base64")
    decoded = np.asarray(Image.open(io.BytesIO(base64.b64decode(mask["data"]))))
    assert decoded[:, :8].tolist() == [[1] * 8] * 8
    assert decoded[:, 8:].sum() == 0


def test_a_segmentation_leaves_the_mask_out_when_asked(segmenter: Predictor) -> None:
    # given the same segmenter
    # when it is predicted with masks off
    result = segmenter.predict(png(half_bright()), masks=False)

    # then there is no mask, the classes remain
    assert "mask" not in result
    assert [entry["label"] for entry in result["classes"]] == ["background", "bright"]


def test_a_detection_reports_boxes_on_the_original_image(tmp_path: Path) -> None:
    # given a detector that always finds one box [2, 2, 6, 6] in its 8x8 input, behind a resize
    spec = {
        "task": "detection",
        "input": {"name": "images"},
        "transforms": [{"op": "resize", "size": [8, 8]}],
        "output": {
            "format": "boxes",
            "boxes": "boxes",
            "scores": "scores",
            "classes": "classes",
            "box_format": "xyxy",
            "box_units": "pixels",
        },
        "labels": ["cat", "dog"],
    }
    write_model_folder(tmp_path, one_box_detector(), spec, name="det")

    # when a 16x16 image is predicted
    result = Predictor(ModelRegistry(tmp_path), Limits(), "det").predict(png(Image.new("RGB", (16, 16))))

    # then the box is in the original's pixels (twice the input's) with its label and score
    assert result["count"] == 1
    assert result["detections"] == [{"label": "dog", "score": 0.9, "box": [4.0, 4.0, 12.0, 12.0]}]


def test_a_classification_response_keeps_exactly_its_keys(tmp_path: Path) -> None:
    # given a classification model in the flat shorthand
    make_model(tmp_path)

    # when a red image is predicted
    result = Predictor(ModelRegistry(tmp_path), Limits(), "tiny").predict(png(Image.new("RGB", (20, 20), "red")))

    # then the response has today's keys and the right label
    assert list(result) == ["prediction_id", "model", "version", "label", "score", "top_k", "timings_ms"]
    assert result["label"] == "red"
    assert set(result["timings_ms"]) == {"preprocess", "inference", "total"}
