"""The CLI's output for every task: predictions, the model table, batch results, and the masks it saves."""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

import pytest

from modelrun_cli import commands, output
from modelrun_cli.client import ApiClient
from modelrun_cli.main import run

ENDPOINT = {"MODELRUN_ENDPOINT": "http://x/", "MODELRUN_API_KEY": "k"}
PNG = b"\x89PNG\r\n\x1a\n" + b"indexed mask bytes"

DETECTION = {
    "model": "shapes",
    "version": "1",
    "detections": [
        {"label": "square", "score": 0.980227, "box": [149.91, 235.2, 307.76, 394.53]},
        {"label": "circle", "score": 0.948452, "box": [56.13, 21.87, 164.0, 128.59]},
    ],
    "count": 2,
    "timings_ms": {"total": 86.2},
}
SEGMENTATION = {
    "model": "cells",
    "version": "1",
    "classes": [
        {"label": "background", "index": 0, "pixels": 120251, "fraction": 0.798798, "box": [0, 0, 386, 390]},
        {"label": "cell", "index": 1, "pixels": 22800, "fraction": 0.151455, "box": [0, 0, 386, 271]},
        {"label": "nucleus", "index": 2, "pixels": 5517, "fraction": 0.036648, "box": [0, 6, 386, 253]},
        {"label": "debris", "index": 3, "pixels": 0, "fraction": 0.0, "box": None},
    ],
    "mask": {
        "format": "png",
        "width": 386,
        "height": 390,
        "encoding": "base64",
        "data": base64.b64encode(PNG).decode(),
    },
    "timings_ms": {"total": 102.4},
}
MULTILABEL = {
    "model": "tags",
    "version": "2",
    "labels": [{"label": "cat", "score": 0.91}, {"label": "indoor", "score": 0.6}],
    "scores": {"dog": 0.1, "cat": 0.91, "indoor": 0.6},
}


def run_cli(argv: list[str], tmp_path: Path, env: dict[str, str] = ENDPOINT) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = run(argv, env=env, cwd=tmp_path, out=out, err=err, read_stack=lambda name: pytest.fail(name))
    return code, out.getvalue(), err.getvalue()


def answering(monkeypatch: pytest.MonkeyPatch, document: dict[str, Any]) -> None:
    monkeypatch.setattr(ApiClient, "request", lambda self, method, path, **kwargs: document)


# -- predict -----------------------------------------------------------------------------------------------------
def test_a_detection_prints_the_count_then_label_score_and_box_per_object() -> None:
    assert output.format_prediction(DETECTION).splitlines() == [
        "2 detections",
        "LABEL   SCORE   BOX (X1,Y1,X2,Y2)",
        "square  0.9802  149.9,235.2,307.8,394.5",
        "circle  0.9485  56.1,21.9,164,128.6",
        "(model shapes version 1, 86.2 ms)",
    ]


def test_a_detection_without_objects_says_so_and_prints_no_table() -> None:
    result = {"model": "shapes", "version": "1", "detections": [], "count": 0}
    assert output.format_prediction(result).splitlines() == ["0 detections", "(model shapes version 1)"]


def test_a_segmentation_prints_the_classes_present_then_pixels_fraction_and_box_per_class() -> None:
    assert output.format_prediction(SEGMENTATION).splitlines() == [
        "mask 386x390: cell 15.15%, nucleus 3.66%",
        "INDEX  CLASS       PIXELS  FRACTION  BOX (X1,Y1,X2,Y2)",
        "0      background  120251  79.88%    0,0,386,390",
        "1      cell        22800   15.15%    0,0,386,271",
        "2      nucleus     5517    3.66%     0,6,386,253",
        "3      debris      0       0.00%     -",
        "(model cells version 1, 102.4 ms)",
    ]


def test_a_multilabel_result_prints_the_chosen_labels_then_every_score() -> None:
    assert output.format_prediction(MULTILABEL).splitlines() == [
        "cat 0.9100, indoor 0.6000",
        "LABEL   SCORE   CHOSEN",
        "cat     0.9100  yes",
        "indoor  0.6000  yes",
        "dog     0.1000",
        "(model tags version 2)",
    ]


DICOM = {
    "modality": "CT",
    "rows": 64,
    "columns": 48,
    "study_instance_uid": "1.2.826.0.1.3680043.8.498.1",
    "series_instance_uid": "1.2.826.0.1.3680043.8.498.2",
    "sop_instance_uid": "1.2.826.0.1.3680043.8.498.3",
}


def test_a_dicom_prediction_prints_the_answer_then_the_modality_size_and_uids() -> None:
    result = {"model": "ct", "version": "1", "label": "bone", "score": 0.9, "dicom": DICOM}
    assert output.format_prediction(result).splitlines() == [
        "bone 0.9000",
        "dicom CT 48x64",
        "  study    1.2.826.0.1.3680043.8.498.1",
        "  series   1.2.826.0.1.3680043.8.498.2",
        "  instance 1.2.826.0.1.3680043.8.498.3",
        "(model ct version 1)",
    ]


def test_a_prediction_per_frame_prints_each_frames_answer_under_its_number() -> None:
    # Given a 2-frame DICOM segmented frame by frame
    frames = [{"frame": index, **SEGMENTATION, "timings_ms": None} for index in (0, 1)]
    result = {"model": "cells", "version": "1", "frames": frames, "dicom": {**DICOM, "frames": 2}}
    lines = output.format_prediction(result).splitlines()
    # Then each frame's segmentation lines follow its heading, indented, and the UIDs follow the frames
    assert lines[:3] == ["2 frames", "frame 0", "  mask 386x390: cell 15.15%, nucleus 3.66%"]
    assert lines.index("frame 1") == 8
    assert lines[9] == "  mask 386x390: cell 15.15%, nucleus 3.66%"
    assert lines[15:] == [
        "dicom CT 48x64, 2 frames",
        "  study    1.2.826.0.1.3680043.8.498.1",
        "  series   1.2.826.0.1.3680043.8.498.2",
        "  instance 1.2.826.0.1.3680043.8.498.3",
        "(model cells version 1)",
    ]


def test_batch_results_of_a_multi_frame_item_summarise_each_frame() -> None:
    frames = [{"frame": 0, "label": "bone", "score": 0.9}, {"frame": 1, "label": "air", "score": 0.8}]
    results = [{"item": 0, "key": "series/IM1", "status": "predicted", "frames": frames, "dicom": DICOM}]
    lines = output.format_results(results).splitlines()
    assert lines[0].split() == ["ITEM", "KEY", "STATUS", "RESULT", "ERROR"]
    assert lines[1].split(None, 3)[3] == "frame 0: bone 0.9000; frame 1: air 0.8000"


def test_predict_mask_out_writes_the_decoded_png_and_keeps_stdout_the_answer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "cells.png").write_bytes(b"image")
    answering(monkeypatch, SEGMENTATION)
    target = tmp_path / "out" / "mask.png"
    code, out, err = run_cli(["predict", str(tmp_path / "cells.png"), "--mask-out", str(target)], tmp_path)
    assert code == 0
    assert target.read_bytes() == PNG
    assert out.splitlines()[0] == "mask 386x390: cell 15.15%, nucleus 3.66%"
    assert err == f"saved the 386x390 mask as {target} ({len(PNG)} bytes)\n"


def test_predict_json_keeps_printing_the_raw_answer_with_the_mask_inline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "cells.png").write_bytes(b"image")
    answering(monkeypatch, SEGMENTATION)
    code, out, _ = run_cli(["predict", str(tmp_path / "cells.png"), "--json"], tmp_path)
    assert code == 0
    assert output.to_json(SEGMENTATION) + "\n" == out


def test_predict_mask_out_for_a_detection_model_is_refused_naming_the_task(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "shapes.png").write_bytes(b"image")
    answering(monkeypatch, DETECTION)
    code, out, err = run_cli(["predict", str(tmp_path / "shapes.png"), "--mask-out", str(tmp_path / "m.png")], tmp_path)
    assert (code, out) == (1, "")
    assert "is a detection result" in err
    assert not (tmp_path / "m.png").exists()


# -- models ------------------------------------------------------------------------------------------------------
def test_the_model_table_shows_each_models_task() -> None:
    catalogue = {
        "default_model": "digits",
        "models": [
            {"name": "cells", "version": "1", "task": "segmentation", "labels": ["background", "cell"]},
            {"name": "digits", "version": "1", "task": "classification"},
            {"name": "shapes", "version": "1", "task": "detection"},
        ],
    }
    lines = output.format_models(catalogue).splitlines()
    assert lines[0].split()[:4] == ["MODEL", "VERSION", "TASK", "INPUT"]
    assert [line.split()[:3] for line in lines[1:4]] == [
        ["cells", "1", "segmentation"],
        ["digits*", "1", "classification"],
        ["shapes", "1", "detection"],
    ]


# -- batch results -----------------------------------------------------------------------------------------------
def outcome(item: int, key: str, **fields: Any) -> dict[str, Any]:
    return {"item": item, "key": key, "status": "predicted", "attempt": 1, "updated_at": "t", **fields}


DETECTED = [
    outcome(0, "u/shapes-000.png", detections=DETECTION["detections"], count=2),
    outcome(
        1,
        "u/shapes-001.png",
        detections=[{"label": "triangle", "score": 0.9, "box": [0, 0, 1, 1]}] * 3,
        count=140,
        detections_truncated=True,
    ),
    outcome(2, "u/shapes-002.png", detections=[], count=0),
    {"item": 3, "key": "u/bad.png", "status": "failed", "error": {"code": "invalid_image", "message": "no"}},
]


def test_batch_results_of_a_detection_model_summarise_each_images_objects() -> None:
    lines = output.format_results(DETECTED).splitlines()
    assert lines[0].split() == ["ITEM", "KEY", "STATUS", "RESULT", "ERROR"]
    assert "2 objects: square 0.9802, circle 0.9485" in lines[1]
    assert "140 objects: triangle 0.9000, triangle 0.9000, triangle 0.9000, +137 more" in lines[2]
    assert "no objects" in lines[3]
    assert lines[4].endswith("invalid_image: no")


def test_batch_results_of_a_segmentation_model_give_each_images_classes_by_share() -> None:
    results = [outcome(0, "u/cells-000.png", classes=SEGMENTATION["classes"], mask={"format": "png"})]
    assert "cell 15.15%, nucleus 3.66%" in output.format_results(results).splitlines()[1]


def test_batch_results_of_a_classifier_keep_the_label_and_score_columns() -> None:
    lines = output.format_results([outcome(0, "a.png", label="7", score=0.5, top_k=[])]).splitlines()
    assert lines[0].split() == ["ITEM", "KEY", "STATUS", "LABEL", "SCORE", "ERROR"]


class FakeS3:
    def __init__(self, objects: dict[tuple[str, str], bytes]) -> None:
        self.objects = objects

    def get_object(self, Bucket: str, Key: str) -> dict[str, Any]:
        return {"Body": io.BytesIO(self.objects[(Bucket, Key)])}


def test_batch_results_masks_downloads_each_mask_by_url_or_by_s3_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a results page with one mask behind a presigned link, one known only by its key, and a failed image
    page = {
        "batch_id": "b-1",
        "results": [
            outcome(0, "u/cells-000.png", classes=[], mask={"format": "png", "url": "http://s3/m0?s", "s3_key": "k0"}),
            outcome(1, "u/deep/cells-001.tif", classes=[], mask={"format": "png", "s3_key": "results/b-1/masks/1.png"}),
            {"item": 2, "key": "u/x.png", "status": "failed", "error": {"code": "invalid_image", "message": "no"}},
        ],
        "next_token": None,
    }
    answering(monkeypatch, page)
    downloads: list[tuple[str, Path]] = []

    def download(self: ApiClient, url: str, path: Path) -> int:
        downloads.append((url, path))
        path.write_bytes(b"from the link")
        return 13

    monkeypatch.setattr(ApiClient, "download", download)
    monkeypatch.setattr(
        commands, "s3_client", lambda target: FakeS3({("images", "results/b-1/masks/1.png"): b"from the bucket"})
    )
    folder = tmp_path / "masks"

    # When the results are asked for with --masks
    env = {**ENDPOINT, "MODELRUN_BUCKET": "images"}
    code, out, err = run_cli(["batch", "results", "b-1", "--masks", str(folder)], tmp_path, env=env)

    # Then each mask is saved as <item>-<image name>.png, the link used where there is one
    assert code == 0
    assert downloads == [("http://s3/m0?s", folder / "0-cells-000.png")]
    assert (folder / "0-cells-000.png").read_bytes() == b"from the link"
    assert (folder / "1-cells-001.png").read_bytes() == b"from the bucket"
    assert sorted(path.name for path in folder.iterdir()) == ["0-cells-000.png", "1-cells-001.png"]
    assert err.splitlines()[-1] == f"2 masks saved in {folder}"
    assert out.splitlines()[0].split() == ["ITEM", "KEY", "STATUS", "RESULT", "ERROR"]


def test_batch_results_masks_without_a_url_or_a_bucket_asks_for_the_bucket(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    page = {"results": [outcome(0, "u/c.png", classes=[], mask={"format": "png", "s3_key": "k"})], "next_token": None}
    answering(monkeypatch, page)
    code, out, err = run_cli(["batch", "results", "b-1", "--masks", str(tmp_path / "m")], tmp_path)
    assert (code, out) == (1, "")
    assert "downloading the mask k (no url in the results) needs the stack's images bucket" in err
