"""Every task through the local stack: the detection (shapes) and segmentation (cells) demo models in single
predictions, batches and upload triggers, measured against their held-out ground truth, and a model with its own
code (transforms.py) that fails on one image."""

from __future__ import annotations

import base64
import io
import json
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
from PIL import Image

from tests.integration.conftest import PICKY_WIDTH, REPO, Api
from tests.integration.helpers import all_results, upload, wait_for
from tests.quality import LabelledBox, box_iou, confusion_matrix, mean_average_precision, mean_iou

SHAPES = REPO / "samples" / "shapes"
CELLS = REPO / "samples" / "cells"
GROUND_TRUTH = json.loads((SHAPES / "ground_truth.json").read_text(encoding="utf-8"))
SHAPES_LABELS = GROUND_TRUTH["labels"]
CELLS_CLASSES = 4
MIN_MAP = 0.9
MIN_MEAN_IOU = 0.9
# One image's mean IoU is noisier than the whole set's (a small class can be a few pixels): a lower bar per image.
MIN_IMAGE_MEAN_IOU = 0.8
RESULT_TIMEOUT_S = 60.0


def shapes_samples() -> list[Path]:
    return sorted(SHAPES.glob("shapes-*.png"))


def cells_samples() -> list[Path]:
    return sorted(path for path in CELLS.glob("cells-*.png") if not path.name.endswith(".mask.png"))


def truth_boxes(name: str) -> list[LabelledBox]:
    return [LabelledBox(entry["label"], tuple(entry["box"])) for entry in GROUND_TRUTH["images"][name]["objects"]]


def found_boxes(detections: list[dict[str, Any]]) -> list[LabelledBox]:
    return [LabelledBox(entry["label"], tuple(entry["box"]), entry["score"]) for entry in detections]


def truth_mask(image: Path) -> np.ndarray:
    return np.asarray(Image.open(image.with_name(image.stem + ".mask.png")))


def png_pixels(data: bytes) -> np.ndarray:
    mask = Image.open(io.BytesIO(data))
    assert mask.mode == "P"
    return np.asarray(mask)


def predict(api: Api, path: Path, model: str, query: str = "") -> requests.Response:
    return api.post(f"/predictions?model={model}{query}", data=path.read_bytes(), headers={"Content-Type": "image/png"})


def png(width: int, height: int, colour: str) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(buffer, format="PNG")
    return buffer.getvalue()


# --- single predictions ---------------------------------------------------------------------------------------


def test_a_shapes_prediction_finds_every_ground_truth_box_with_its_label(api: Api) -> None:
    for path in shapes_samples()[:6]:
        # Given a held-out shapes image
        # When it is predicted
        response = predict(api, path, "shapes")

        # Then every ground-truth box has a detection of its label overlapping it by at least 0.5
        assert response.status_code == 200, response.text
        body = response.json()
        assert (body["model"], body["count"]) == ("shapes", len(body["detections"]))
        for truth in truth_boxes(path.name):
            same_label = [entry.box for entry in found_boxes(body["detections"]) if entry.label == truth.label]
            overlaps = box_iou(truth.box, np.array(same_label, dtype=np.float64))
            assert overlaps.size, f"{path.name}: no {truth.label} found"
            assert overlaps.max() >= 0.5, f"{path.name}: {truth.label} {truth.box} best IoU {overlaps.max():.2f}"


def test_a_cells_prediction_returns_a_mask_close_to_the_ground_truth(api: Api) -> None:
    for path in cells_samples()[:4]:
        # Given a held-out cells image
        # When it is predicted
        response = predict(api, path, "cells")

        # Then the inlined mask has the image's size and overlaps the ground truth closely
        assert response.status_code == 200, response.text
        body = response.json()
        truth = truth_mask(path)
        assert (body["mask"]["height"], body["mask"]["width"]) == truth.shape
        predicted = png_pixels(base64.b64decode(body["mask"]["data"]))
        assert mean_iou(confusion_matrix(truth, predicted, CELLS_CLASSES)) >= MIN_IMAGE_MEAN_IOU
        assert [entry["label"] for entry in body["classes"]] == ["background", "cell", "nucleus", "debris"]


def test_masks_false_leaves_the_mask_out_and_keeps_the_classes(api: Api) -> None:
    # Given a cells image
    path = cells_samples()[0]

    # When it is predicted with ?masks=false, and as JSON with "masks": false
    raw = predict(api, path, "cells", "&masks=false")
    encoded = base64.b64encode(path.read_bytes()).decode()
    as_json = api.post("/predictions", json={"model": "cells", "image": encoded, "masks": False})
    wrong = api.post("/predictions", json={"model": "cells", "image": encoded, "masks": "no"})

    # Then neither has a mask but both have the classes; a masks that is not a boolean is a 400
    for response in (raw, as_json):
        assert response.status_code == 200, response.text
        assert "mask" not in response.json()
        assert len(response.json()["classes"]) == CELLS_CLASSES
    assert (wrong.status_code, wrong.json()["error"]["code"]) == (400, "invalid_request")


def test_a_model_with_its_own_preprocess_predicts_and_fails_on_the_image_it_refuses_with_a_500(api: Api) -> None:
    # Given the picky model, whose transforms.py refuses images PICKY_WIDTH pixels wide
    # When a red image and a refused one are predicted
    red = api.post("/predictions?model=picky", data=png(16, 16, "red"), headers={"Content-Type": "image/png"})
    refused = api.post(
        "/predictions?model=picky", data=png(PICKY_WIDTH, 16, "red"), headers={"Content-Type": "image/png"}
    )

    # Then the red one is "red", and the refused one is a 500 model_code_error naming the exception, no traceback
    assert red.status_code == 200, red.text
    assert red.json()["label"] == "red"
    assert refused.status_code == 500
    error = refused.json()["error"]
    assert error["code"] == "model_code_error"
    assert "ValueError" in error["message"]
    assert "Traceback" not in refused.text


# --- batches --------------------------------------------------------------------------------------------------


def results_file(job: dict[str, Any]) -> list[dict[str, Any]]:
    response = requests.get(job["links"]["results_file"], timeout=30)
    assert response.status_code == 200, response.text
    return [json.loads(line) for line in response.text.splitlines()]


def test_batches_of_every_shapes_and_cells_sample_reach_the_held_out_quality(
    api: Api, s3: Any, images_bucket: str, record_property: Any
) -> None:
    # Given every held-out shapes and cells sample in the images bucket
    run = uuid.uuid4().hex[:8]
    shapes = {f"tasks-{run}/shapes/{path.name}": path for path in shapes_samples()}
    cells = {f"tasks-{run}/cells/{path.name}": path for path in cells_samples()}
    upload(s3, images_bucket, {key: path.read_bytes() for key, path in {**shapes, **cells}.items()})

    # When each set runs as a batch
    submitted = {
        model: api.post("/batches", json={"model": model, "images": list(keys), "chunk_size": 25}).json()["batch_id"]
        for model, keys in (("shapes", shapes), ("cells", cells))
    }
    jobs = {model: wait_for(api, batch_id, timeout=120) for model, batch_id in submitted.items()}

    # Then both complete
    for model, job in jobs.items():
        assert job["status"] == "COMPLETED", job
        assert job["counts"]["predicted"] == (len(shapes) if model == "shapes" else len(cells))

    # And the detections in the results file reach mAP@0.5 >= MIN_MAP
    detections = {shapes[entry["key"]].name: found_boxes(entry["detections"]) for entry in results_file(jobs["shapes"])}
    truths = {path.name: truth_boxes(path.name) for path in shapes.values()}
    detection_map, per_class = mean_average_precision(detections, truths, SHAPES_LABELS)
    assert detection_map >= MIN_MAP, per_class

    # And the masks the results file names, read from S3, reach mean IoU >= MIN_MEAN_IOU over all images
    matrix = np.zeros((CELLS_CLASSES, CELLS_CLASSES), dtype=np.int64)
    for entry in results_file(jobs["cells"]):
        key = entry["mask"]["s3_key"]
        assert key == f"results/{jobs['cells']['batch_id']}/masks/{entry['item']}.png"
        stored = s3.get_object(Bucket=images_bucket, Key=key)
        assert stored["ContentType"] == "image/png"
        matrix += confusion_matrix(truth_mask(cells[entry["key"]]), png_pixels(stored["Body"].read()), CELLS_CLASSES)
    cells_iou = mean_iou(matrix)
    assert cells_iou >= MIN_MEAN_IOU

    # And the results listing links each mask
    listed = all_results(api, jobs["cells"]["batch_id"])
    first = requests.get(listed[0]["mask"]["url"], timeout=30)
    assert first.status_code == 200
    assert first.content.startswith(b"\x89PNG")
    record_property("shapes_map50", round(detection_map, 4))
    record_property("cells_mean_iou", round(cells_iou, 4))
    print(f"\nheld-out through batches: shapes mAP@0.5 {detection_map:.4f} {per_class}, cells mean IoU {cells_iou:.4f}")


def test_a_batch_of_a_model_with_its_own_code_fails_only_the_image_its_code_refuses(
    api: Api, s3: Any, images_bucket: str
) -> None:
    # Given a red, a refused and a blue image for the picky model
    run = uuid.uuid4().hex[:8]
    files = {
        f"tasks-{run}/picky/0-red.png": png(16, 16, "red"),
        f"tasks-{run}/picky/1-refused.png": png(PICKY_WIDTH, 16, "blue"),
        f"tasks-{run}/picky/2-blue.png": png(20, 20, "blue"),
    }
    keys = upload(s3, images_bucket, files)

    # When they run as one batch
    job = wait_for(api, api.post("/batches", json={"model": "picky", "images": keys}).json()["batch_id"])

    # Then only the refused image failed, with model_code_error, and its neighbours have their labels
    assert job["status"] == "COMPLETED_WITH_ERRORS"
    assert job["counts"] == {"predicted": 2, "failed": 1, "pending": 0}
    outcomes = {result["item"]: result for result in all_results(api, job["batch_id"])}
    assert (outcomes[0]["label"], outcomes[2]["label"]) == ("red", "blue")
    assert outcomes[1]["error"]["code"] == "model_code_error"
    assert "ValueError" in outcomes[1]["error"]["message"]


# --- upload triggers ------------------------------------------------------------------------------------------


def wait_for_object(s3: Any, bucket: str, key: str) -> bytes:
    deadline = time.monotonic() + RESULT_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            body: bytes = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
            return body
        except s3.exceptions.NoSuchKey:
            time.sleep(0.1)
    raise AssertionError(f"no s3://{bucket}/{key} after {RESULT_TIMEOUT_S} s")


def test_a_cells_image_uploaded_gets_its_result_document_and_its_mask_png(s3: Any, images_bucket: str) -> None:
    # Given a cells image
    path = cells_samples()[1]
    key = f"uploads/cells/{uuid.uuid4().hex[:8]}-{path.name}"

    # When it is put under uploads/cells/
    s3.put_object(Bucket=images_bucket, Key=key, Body=path.read_bytes())

    # Then results/{key}.json has the classes and names the mask, and the mask PNG is the image's mask
    document = json.loads(wait_for_object(s3, images_bucket, f"results/{key}.json"))
    truth = truth_mask(path)
    assert (document["key"], document["model"]) == (key, "cells")
    assert document["mask"] == {
        "format": "png",
        "width": truth.shape[1],
        "height": truth.shape[0],
        "s3_key": f"results/{key}.mask.png",
    }
    assert len(document["classes"]) == CELLS_CLASSES
    predicted = png_pixels(wait_for_object(s3, images_bucket, f"results/{key}.mask.png"))
    assert mean_iou(confusion_matrix(truth, predicted, CELLS_CLASSES)) >= MIN_IMAGE_MEAN_IOU


@pytest.fixture(autouse=True)
def _models_served(api: Api) -> None:
    """The stack serves the demo detection and segmentation models and the user-code one (else nothing here runs)."""
    names = {model["name"] for model in api.get("/models").json()["models"]}
    assert {"shapes", "cells", "picky"} <= names
