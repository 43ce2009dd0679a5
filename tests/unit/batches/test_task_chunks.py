"""A chunk of every task: detection and segmentation chunks record their results (masks and long detection lists in
S3, the full lists in the results file), and a model's own code failing on one image fails only that image (moto S3
and the template's tables, tiny ONNX graphs built here whose outputs are known exactly)."""

from __future__ import annotations

import copy
import io
import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from modelrun.aws.dynamo import plain
from modelrun.aws.s3 import ImageStore
from modelrun.batches.chunks import Chunk, ChunkPredictor
from modelrun.batches.close import BatchCloser, results_key
from modelrun.batches.results import MAX_ITEM_DETECTIONS, ResultObjects, detections_key, mask_key
from modelrun.batches.store import FAILED_OUTCOME, PREDICTED, public_outcome
from modelrun.images.decode import Limits
from modelrun.models.registry import ModelRegistry
from tests.batchfixtures import (
    BUCKET,
    BatchAws,
    BatchStatusContext,
    default_tenants_store,
    import_batch_status_handler,
    with_stack_key,
)
from tests.modelfactory import make_model

REPO = Path(__file__).resolve().parents[3]
RESULTS_EVENT = REPO / "events" / "batch_status" / "get-results-failed.json"
BATCH = "b-20261119T101320-5a3c0e2f9b1d"  # the batch of the sample event
OPSET = 17
IR_VERSION = 8
SIDE = 64
GRID = 16  # a 16 x 16 grid of 2-pixel boxes 4 pixels apart: 256 boxes that never overlap
LABELS = ["circle", "square"]


# --- tiny graphs ----------------------------------------------------------------------------------------------


def save(root: Path, name: str, graph: onnx.GraphProto, spec: dict[str, Any]) -> None:
    folder = root / name / "1"
    folder.mkdir(parents=True)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    onnx.save(model, str(folder / "model.onnx"))
    (folder / "model.json").write_text(json.dumps({"name": name, "version": "1", **spec}), encoding="utf-8")


def grid_boxes(count: int) -> np.ndarray:
    """YOLO features-first rows ``[cx, cy, w, h, score circle, score square]`` x ``count`` anchors: the first
    ``count`` cells of the grid, class circle for even anchors and square for odd ones, scores falling from 0.99."""
    features = np.zeros((1, 4 + len(LABELS), count), dtype=np.float32)
    for anchor in range(count):
        row, column = divmod(anchor, GRID)
        features[0, :4, anchor] = (4 * column + 2, 4 * row + 2, 2, 2)
        features[0, 4 + anchor % 2, anchor] = 0.99 - anchor * 0.001
    return features


def write_detector(root: Path, name: str, boxes: int) -> None:
    """A YOLO detector whose output is the same :func:`grid_boxes` for every image (the image only sets N)."""
    constant = grid_boxes(boxes)
    nodes = [
        helper.make_node("ReduceMean", ["images"], ["mean"], axes=[1, 2, 3], keepdims=0),  # [N]
        helper.make_node("Mul", ["mean", "zero"], ["zeros"]),
        helper.make_node("Reshape", ["zeros", "column"], ["per_image"]),  # [N, 1, 1]
        helper.make_node("Add", ["per_image", "features"], ["output0"]),  # [N, 6, boxes]
    ]
    graph = helper.make_graph(
        nodes,
        "grid-detector",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", 3, SIDE, SIDE])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, ["N", 4 + len(LABELS), boxes])],
        initializer=[
            numpy_helper.from_array(np.array(0.0, dtype=np.float32), "zero"),
            numpy_helper.from_array(np.array([-1, 1, 1], dtype=np.int64), "column"),
            numpy_helper.from_array(constant, "features"),
        ],
    )
    spec = {
        "task": "detection",
        "input": {"name": "images"},
        "transforms": [{"op": "resize", "size": [SIDE, SIDE]}, {"op": "normalize", "scale": 1 / 255}],
        "output": {"format": "yolo", "name": "output0", "layout": "features_first", "max_detections": 1000},
        "labels": LABELS,
    }
    save(root, name, graph, spec)


def write_segmenter(root: Path, name: str = "halves") -> None:
    """Two classes: background scores 0.5 everywhere, foreground scores the pixel (0..1), so bright is foreground."""
    nodes = [
        helper.make_node("Mul", ["image", "zero"], ["zeros"]),
        helper.make_node("Add", ["zeros", "half"], ["background"]),
        helper.make_node("Concat", ["background", "image"], ["scores"], axis=1),  # [N, 2, 16, 16]
    ]
    graph = helper.make_graph(
        nodes,
        "halves",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 1, 16, 16])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", 2, 16, 16])],
        initializer=[
            numpy_helper.from_array(np.array(0.0, dtype=np.float32), "zero"),
            numpy_helper.from_array(np.array(0.5, dtype=np.float32), "half"),
        ],
    )
    spec = {
        "task": "segmentation",
        "input": {"name": "image"},
        "transforms": [
            {"op": "color", "mode": "L"},
            {"op": "resize", "size": [16, 16], "resample": "nearest"},
            {"op": "normalize", "scale": 1 / 255, "mean": [0.0], "std": [1.0]},
        ],
        "output": {"name": "scores", "type": "class_scores", "layout": "NCHW"},
        "labels": ["background", "bright"],
    }
    save(root, name, graph, spec)


RAISES_ON_13_WIDE = """
import numpy as np


def preprocess(image, spec):
    if image.width == 13:
        raise ValueError("no 13-pixel-wide images")
    pixels = np.asarray(image.convert("RGB").resize((16, 16)), dtype=np.float32) / 255
    return pixels.transpose(2, 0, 1)
"""


RAISES_ON_BLUE = """
def postprocess(outputs, spec, geometry):
    best = int(outputs["probabilities"].argmax())
    if spec.labels[best] == "blue":
        raise RuntimeError("blue is not decoded")
    return {"colour": spec.labels[best]}
"""


def write_user_code_model(root: Path) -> None:
    folder = make_model(root, name="picky", color_mode="RGB", size=(16, 16), code="transforms.py")
    (folder / "transforms.py").write_text(RAISES_ON_13_WIDE, encoding="utf-8")
    folder = make_model(root, name="no-blue", color_mode="RGB", size=(16, 16), code="decode.py")
    (folder / "decode.py").write_text(RAISES_ON_BLUE, encoding="utf-8")


# --- fixtures -------------------------------------------------------------------------------------------------


@pytest.fixture
def registry(tmp_path: Path) -> ModelRegistry:
    write_detector(tmp_path, "few", boxes=3)
    write_detector(tmp_path, "many", boxes=150)
    write_segmenter(tmp_path)
    write_user_code_model(tmp_path)
    return ModelRegistry(tmp_path, intra_op_threads=1)


@pytest.fixture
def predictor(aws: BatchAws, registry: ModelRegistry) -> Iterator[ChunkPredictor]:
    with ThreadPoolExecutor(max_workers=4) as pool:
        yield ChunkPredictor(
            store=aws.store,
            images=ImageStore(aws.s3, {BUCKET}),
            registry=registry,
            limits=Limits(),
            pool=pool,
            results=ResultObjects(aws.s3, BUCKET),
        )


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def left_half_white(width: int = 32, height: int = 32) -> Image.Image:
    image = Image.new("L", (width, height), 0)
    image.paste(255, (0, 0, width // 2, height))
    return image


def run_chunk(aws: BatchAws, predictor: ChunkPredictor, model: str, images: list[bytes]) -> dict[str, Any]:
    """Upload the images, make a job of them, and predict them as chunk 0; the chunk's summary."""
    keys = [f"scans/{item}.png" for item in range(len(images))]
    for key, data in zip(keys, images, strict=True):
        aws.put(key, data)
    default_tenants_store(aws.store).create({"batch_id": BATCH, "model": model, "version": "1", "total": len(images)})
    chunk = Chunk(
        batch_id=BATCH, index=0, items=list(enumerate(keys)), bucket=BUCKET, model=model, version="1", attempt=1
    )
    return predictor.run(chunk)


def shown(aws: BatchAws) -> dict[int, dict[str, Any]]:
    """Each item's outcome as the API shows it."""
    return {int(record["item"]): public_outcome(record) for record in aws.store.iter_outcomes(BATCH)}


def s3_bytes(aws: BatchAws, key: str) -> bytes:
    body: bytes = aws.s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()
    return body


def results_file(aws: BatchAws) -> dict[int, dict[str, Any]]:
    """Close the batch and read its results file, by item."""
    BatchCloser(store=aws.store, s3=aws.s3, bucket=BUCKET).try_close(BATCH)
    lines = s3_bytes(aws, results_key(BATCH, 1)).decode().splitlines()
    return {entry["item"]: entry for entry in map(json.loads, lines)}


# --- detection ------------------------------------------------------------------------------------------------


def test_a_detection_chunk_records_each_images_boxes_in_its_own_pixels(
    aws: BatchAws, predictor: ChunkPredictor
) -> None:
    # given two images of twice the model's size (boxes scale back by 2) in a detection model's chunk
    images = [png(Image.new("RGB", (2 * SIDE, 2 * SIDE), colour)) for colour in ("red", "blue")]

    # when the chunk is predicted
    summary = run_chunk(aws, predictor, "few", images)

    # then each image has the three boxes, best first, in its own pixels, with their labels and the count
    assert (summary["predicted"], summary["failed"]) == (2, 0)
    expected = [
        {"label": "circle", "score": 0.99, "box": [2.0, 2.0, 6.0, 6.0]},
        {"label": "square", "score": 0.989, "box": [10.0, 2.0, 14.0, 6.0]},
        {"label": "circle", "score": 0.988, "box": [18.0, 2.0, 22.0, 6.0]},
    ]
    for outcome in shown(aws).values():
        assert outcome["status"] == PREDICTED
        assert outcome["count"] == 3
        assert [detection["label"] for detection in outcome["detections"]] == [e["label"] for e in expected]
        for detection, wanted in zip(outcome["detections"], expected, strict=True):
            assert detection["score"] == pytest.approx(wanted["score"], abs=1e-5)
            assert detection["box"] == pytest.approx(wanted["box"], abs=1e-3)
        assert "detections_truncated" not in outcome
    assert aws.s3.list_objects_v2(Bucket=BUCKET, Prefix=f"results/{BATCH}/detections/")["KeyCount"] == 0


def test_detections_over_the_cap_keep_the_best_in_the_item_and_all_of_them_in_s3_and_the_results_file(
    aws: BatchAws, predictor: ChunkPredictor
) -> None:
    # given an image on which the model finds 150 boxes
    images = [png(Image.new("RGB", (SIDE, SIDE), "white"))]

    # when its chunk is predicted and the batch closed
    run_chunk(aws, predictor, "many", images)
    outcome = shown(aws)[0]
    in_file = results_file(aws)[0]

    # then the item keeps the best 100, says there are 150 and that it was cut
    assert len(outcome["detections"]) == MAX_ITEM_DETECTIONS
    assert outcome["count"] == 150
    assert outcome["detections_truncated"] is True
    scores = [detection["score"] for detection in outcome["detections"]]
    assert scores == sorted(scores, reverse=True)
    # and the full list is in S3 and in the results file, the item's 100 first
    stored = json.loads(s3_bytes(aws, detections_key(BATCH, 0)))
    assert len(stored) == 150
    assert stored[:MAX_ITEM_DETECTIONS] == outcome["detections"]
    assert in_file["detections"] == stored
    assert in_file["count"] == 150
    assert "detections_truncated" not in in_file


# --- segmentation ---------------------------------------------------------------------------------------------


def test_a_segmentation_chunk_stores_each_mask_as_a_png_in_s3_and_its_classes_in_the_item(
    aws: BatchAws, predictor: ChunkPredictor
) -> None:
    # given an image whose left half is white and one all black
    images = [png(left_half_white(32, 24)), png(Image.new("L", (20, 10), 0))]

    # when the chunk is predicted
    run_chunk(aws, predictor, "halves", images)
    outcomes = shown(aws)

    # then each item names its mask in S3, at the image's own size
    first = outcomes[0]
    assert first["mask"] == {"format": "png", "width": 32, "height": 24, "s3_key": mask_key(BATCH, 0)}
    assert outcomes[1]["mask"]["s3_key"] == mask_key(BATCH, 1)
    # and the PNG there is the mask: class 1 exactly on the white half
    head = aws.s3.head_object(Bucket=BUCKET, Key=mask_key(BATCH, 0))
    assert head["ContentType"] == "image/png"
    mask = Image.open(io.BytesIO(s3_bytes(aws, mask_key(BATCH, 0))))
    assert mask.mode == "P"
    expected = np.zeros((24, 32), dtype=np.uint8)
    expected[:, :16] = 1
    np.testing.assert_array_equal(np.asarray(mask), expected)
    dark = np.asarray(Image.open(io.BytesIO(s3_bytes(aws, mask_key(BATCH, 1)))))
    assert dark.shape == (10, 20)
    assert not dark.any()
    # and the classes are in the item, with the pixels they cover
    assert first["classes"] == [
        {"label": "background", "index": 0, "pixels": 384, "fraction": 0.5, "box": [16, 0, 32, 24]},
        {"label": "bright", "index": 1, "pixels": 384, "fraction": 0.5, "box": [0, 0, 16, 24]},
    ]


def test_the_results_listing_adds_a_presigned_link_to_each_mask(
    aws: BatchAws, predictor: ChunkPredictor, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given a predicted segmentation chunk
    run_chunk(aws, predictor, "halves", [png(left_half_white())])
    app = import_batch_status_handler(monkeypatch, "task_chunks_batch_status_app")

    # when GET /batches/{id}/results lists it
    event = copy.deepcopy(json.loads(RESULTS_EVENT.read_text()))
    event["queryStringParameters"] = None
    event["multiValueQueryStringParameters"] = None
    answer = app.lambda_handler(with_stack_key(event), BatchStatusContext())
    (outcome,) = json.loads(answer["body"])["results"]

    # then the mask carries a presigned GET of its key beside the key
    assert answer["statusCode"] == 200
    assert outcome["mask"]["s3_key"] == mask_key(BATCH, 0)
    url = outcome["mask"]["url"]
    assert f"/{mask_key(BATCH, 0)}?" in url
    assert "Signature=" in url or "X-Amz-Signature=" in url


# --- the model's own code -------------------------------------------------------------------------------------


def test_a_models_code_raising_on_one_image_fails_only_that_image_with_model_code_error(
    aws: BatchAws, predictor: ChunkPredictor
) -> None:
    # given a model whose preprocess raises on 13-pixel-wide images, and a chunk with one such image
    images = [png(Image.new("RGB", (16, 16), "red")), png(Image.new("RGB", (13, 16), "red"))]
    images.append(png(Image.new("RGB", (16, 16), "blue")))

    # when the chunk is predicted
    summary = run_chunk(aws, predictor, "picky", images)

    # then that image failed with model_code_error, naming the function and the exception, never a traceback
    assert (summary["predicted"], summary["failed"]) == (2, 1)
    outcomes = shown(aws)
    failed = outcomes[1]
    assert failed["status"] == FAILED_OUTCOME
    assert failed["error"]["code"] == "model_code_error"
    assert "preprocess" in failed["error"]["message"]
    assert "ValueError: no 13-pixel-wide images" in failed["error"]["message"]
    assert "Traceback" not in failed["error"]["message"]
    # and its neighbours got their labels
    assert (outcomes[0]["label"], outcomes[2]["label"]) == ("red", "blue")
    job = plain(aws.store.get(BATCH))
    assert (job["predicted"], job["failed"]) == (2, 1)


def test_a_models_postprocess_raising_on_one_image_fails_only_that_image_with_model_code_error(
    aws: BatchAws, predictor: ChunkPredictor
) -> None:
    # given a model whose own postprocess raises on blue images, and a chunk with a red, a blue and a green image
    images = [png(Image.new("RGB", (16, 16), colour)) for colour in ("red", "blue", "lime")]

    # when the chunk is predicted
    summary = run_chunk(aws, predictor, "no-blue", images)

    # then the blue one failed with model_code_error naming postprocess, and the others hold postprocess's result
    assert (summary["predicted"], summary["failed"]) == (2, 1)
    outcomes = shown(aws)
    assert outcomes[1]["error"]["code"] == "model_code_error"
    assert "postprocess" in outcomes[1]["error"]["message"]
    assert "RuntimeError: blue is not decoded" in outcomes[1]["error"]["message"]
    assert (outcomes[0]["colour"], outcomes[2]["colour"]) == ("red", "green")
