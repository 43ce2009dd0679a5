"""The medical demo: the committed synthetic CT series (samples/ct) checked as DICOM against the phantom it was cut
from, and the committed model (models/ct/1) run over it with bare ONNX Runtime and the reference DICOM reading of
tests/bare_dicom.py (pydicom, rescale, window and MONOCHROME1 inversion done in numpy)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pydicom
import pytest
from PIL import Image
from pydicom.uid import CTImageStorage

from scripts.ct_dicom import MIRROR, TRANSFER_SYNTAX_NAMES, dicom_bytes, sample_series
from scripts.ct_phantom import LABELS, RESCALE_INTERCEPT, WINDOW_CENTER, WINDOW_WIDTH, window
from tests.bare_dicom import linear_window, modality_values, segment_dicom, windowed_frames
from tests.bare_onnx import BareModel
from tests.quality import class_ious, confusion_matrix, mean_iou

REPO_ROOT = Path(__file__).resolve().parents[2]
MODEL_DIR = REPO_ROOT / "models" / "ct" / "1"
SAMPLES = REPO_ROOT / "samples" / "ct"
MIN_MEAN_IOU = 0.85
MAX_MODEL_BYTES = 2_500_000
# Lesions are a few dozen to 200 pixels a slice: a one-pixel margin around each costs much of their IoU.
MIN_LESION_IOU = 0.6
MAX_SAMPLE_BYTES = 400_000


@pytest.fixture(scope="module")
def truth() -> dict[str, Any]:
    document: dict[str, Any] = json.loads((SAMPLES / "ground_truth.json").read_text(encoding="utf-8"))
    return document


@pytest.fixture(scope="module")
def series() -> dict[str, Any]:
    """The phantom's own slices, rebuilt from the seed: file name -> (SeriesFile, masks)."""
    return {f"{item.stem}.dcm": (item, masks) for item, masks in sample_series()}


def read(name: str) -> pydicom.Dataset:
    return pydicom.dcmread(SAMPLES / name)


# --- the sample files ----------------------------------------------------------------------------------------------


def test_ground_truth_lists_exactly_the_dicom_files_and_one_mask_per_slice(truth: dict[str, Any]) -> None:
    files = sorted(path.name for path in SAMPLES.glob("*.dcm"))
    masks = sorted(path.name for path in SAMPLES.glob("*.mask.png"))

    assert sorted(truth["files"]) == files
    assert sorted(frame["mask"] for entry in truth["files"].values() for frame in entry["frames"]) == masks
    assert truth["labels"] == LABELS
    assert sum(path.stat().st_size for path in SAMPLES.iterdir()) < MAX_SAMPLE_BYTES


def test_the_series_uses_every_transfer_syntax_one_multi_frame_file_and_one_monochrome1_file(
    truth: dict[str, Any],
) -> None:
    datasets = {name: read(name) for name in truth["files"]}

    syntaxes = {dataset.file_meta.TransferSyntaxUID for dataset in datasets.values()}
    assert syntaxes == set(TRANSFER_SYNTAX_NAMES)
    assert any(dataset.file_meta.TransferSyntaxUID.is_compressed for dataset in datasets.values())
    multi_frame = [name for name, dataset in datasets.items() if int(dataset.get("NumberOfFrames", 1)) > 1]
    assert multi_frame == [name for name, entry in truth["files"].items() if len(entry["frames"]) > 1]
    assert len(multi_frame) == 1
    assert int(datasets[multi_frame[0]].NumberOfFrames) == len(truth["files"][multi_frame[0]]["frames"]) >= 2
    monochrome1 = [name for name, dataset in datasets.items() if dataset.PhotometricInterpretation == "MONOCHROME1"]
    assert len(monochrome1) == 1
    for name, dataset in datasets.items():
        entry = truth["files"][name]
        assert dataset.file_meta.TransferSyntaxUID == entry["transfer_syntax"]
        assert dataset.PhotometricInterpretation == entry["photometric_interpretation"]


def test_every_file_is_a_ct_image_of_one_anonymous_series_with_valid_file_meta(truth: dict[str, Any]) -> None:
    datasets = [read(name) for name in truth["files"]]

    assert len({dataset.StudyInstanceUID for dataset in datasets}) == 1
    assert len({dataset.SeriesInstanceUID for dataset in datasets}) == 1
    assert len({dataset.SOPInstanceUID for dataset in datasets}) == len(datasets)
    assert sorted(int(dataset.InstanceNumber) for dataset in datasets) == list(range(1, len(datasets) + 1))
    for dataset in datasets:
        assert dataset.preamble == b"\0" * 128
        assert dataset.SOPClassUID == dataset.file_meta.MediaStorageSOPClassUID == CTImageStorage
        assert dataset.SOPInstanceUID == dataset.file_meta.MediaStorageSOPInstanceUID
        assert (dataset.Modality, str(dataset.PatientName), dataset.PatientID) == ("CT", "ANON^DEMO", "ANON-DEMO")
        assert (dataset.BitsAllocated, dataset.BitsStored, dataset.PixelRepresentation) == (16, 12, 0)
        assert (float(dataset.RescaleSlope), float(dataset.WindowWidth)) == (1.0, WINDOW_WIDTH)
        assert (dataset.Rows, dataset.Columns) == (128, 128)
        assert len(dataset.PixelSpacing) == 2
        assert float(dataset.SliceLocation) == float(dataset.ImagePositionPatient[2])


def test_the_stored_pixels_rescale_to_the_phantoms_hounsfield_units(
    truth: dict[str, Any], series: dict[str, Any]
) -> None:
    for name, entry in truth["files"].items():
        # Given the phantom's HU for the slices of a file
        item, _ = series[name]
        dataset = read(name)

        # When its pixels are decoded and rescaled
        frames, photometric = modality_values(SAMPLES / name)

        # Then they are the phantom's HU exactly (lossless everywhere), mirrored about the window in MONOCHROME1
        assert len(frames) == len(item.slices_hu) == len(entry["frames"])
        if photometric == "MONOCHROME1":
            assert float(dataset.RescaleIntercept) != RESCALE_INTERCEPT
            expected = [MIRROR - hu.astype(np.float64) for hu in item.slices_hu]
        else:
            assert float(dataset.RescaleIntercept) == RESCALE_INTERCEPT
            expected = [hu.astype(np.float64) for hu in item.slices_hu]
        for frame, hu in zip(frames, expected, strict=True):
            np.testing.assert_array_equal(frame, hu, err_msg=name)


def test_known_regions_read_back_with_their_tissues_hounsfield_units(truth: dict[str, Any]) -> None:
    for name, entry in truth["files"].items():
        frames, photometric = modality_values(SAMPLES / name)
        for frame, item in zip(frames, entry["frames"], strict=True):
            hu = MIRROR - frame if photometric == "MONOCHROME1" else frame
            with Image.open(SAMPLES / item["mask"]) as picture:
                mask = np.asarray(picture)
            body = np.median(hu[mask == LABELS.index("body")])
            assert -150 < body < 100, name  # soft tissue and fat
            assert np.median(hu[mask == LABELS.index("bone")]) > 250, name
            assert np.median(hu[(mask == LABELS.index("background"))]) < -900, name  # air
            lesion = hu[mask == LABELS.index("lesion")]
            if lesion.size:
                assert np.median(lesion) < 55, name  # hypodense: below the organ's 55..70 (blurred at its edge)


def test_the_monochrome1_file_windowed_and_inverted_gives_the_grey_levels_of_its_hu(
    truth: dict[str, Any], series: dict[str, Any]
) -> None:
    (name,) = [name for name, entry in truth["files"].items() if entry["photometric_interpretation"] == "MONOCHROME1"]
    item, _ = series[name]

    (grey,) = windowed_frames(SAMPLES / name, {"center": WINDOW_CENTER, "width": WINDOW_WIDTH})

    np.testing.assert_allclose(grey, window(item.slices_hu[0]), atol=1e-3)


def test_the_masks_are_the_phantoms_labels(truth: dict[str, Any], series: dict[str, Any]) -> None:
    seen = set()
    for name, entry in truth["files"].items():
        _, masks = series[name]
        for frame, mask in zip(entry["frames"], masks, strict=True):
            with Image.open(SAMPLES / frame["mask"]) as picture:
                assert picture.mode == "P"
                np.testing.assert_array_equal(np.asarray(picture), mask)
            seen.update(np.unique(mask).tolist())
    assert seen == set(range(len(LABELS)))


def test_writing_the_series_again_gives_the_committed_bytes(series: dict[str, Any]) -> None:
    for name, (item, _) in series.items():
        assert dicom_bytes(item) == (SAMPLES / name).read_bytes(), name


def test_the_reference_window_is_the_dicom_linear_function() -> None:
    # centre 40, width 400: 0 at or below -160 (c - 0.5 - (w - 1) / 2 = -160), 255 above 239, linear between
    values = np.array([-1000, -160, 39.5, 239, 240, 3000], dtype=np.float64)

    grey = linear_window(values, 40, 400)

    np.testing.assert_allclose(grey, [0, 0, 127.5, 255, 255, 255])
    np.testing.assert_allclose(window(values), grey)


# --- the model ------------------------------------------------------------------------------------------------------


def test_ct_model_json_declares_grey_then_its_window_and_every_frame(truth: dict[str, Any]) -> None:
    spec = json.loads((MODEL_DIR / "model.json").read_text(encoding="utf-8"))

    assert (spec["name"], spec["version"], spec["task"], spec["frames"]) == ("ct", "1", "segmentation", "all")
    ops = [step["op"] for step in spec["transforms"]]
    assert ops == ["color", "window", "resize", "pad_to_multiple", "normalize", "layout"]
    assert spec["transforms"][0] == {"op": "color", "mode": "L"}
    assert spec["transforms"][1] == {"op": "window", "center": WINDOW_CENTER, "width": WINDOW_WIDTH}
    assert truth["window"] == {"center": WINDOW_CENTER, "width": WINDOW_WIDTH}
    assert spec["output"] == {"name": "scores", "type": "class_scores", "layout": "NCHW"}
    assert spec["labels"] == LABELS


def test_ct_graph_has_a_symbolic_batch_and_size_and_one_input_channel() -> None:
    model = onnx.load(MODEL_DIR / "model.onnx")

    (graph_input,) = model.graph.input
    (graph_output,) = model.graph.output
    assert [dim.dim_param or dim.dim_value for dim in graph_input.type.tensor_type.shape.dim] == ["N", 1, "H", "W"]
    assert [dim.dim_param or dim.dim_value for dim in graph_output.type.tensor_type.shape.dim] == ["N", 4, "H", "W"]
    assert (MODEL_DIR / "model.onnx").stat().st_size < MAX_MODEL_BYTES


def test_ct_model_segments_every_slice_of_the_held_out_series(truth: dict[str, Any]) -> None:
    model = BareModel(MODEL_DIR)
    matrix = np.zeros((len(LABELS), len(LABELS)), dtype=np.int64)
    for name, entry in truth["files"].items():
        for frame, predicted in zip(entry["frames"], segment_dicom(model, SAMPLES / name), strict=True):
            with Image.open(SAMPLES / frame["mask"]) as picture:
                matrix += confusion_matrix(np.asarray(picture), predicted, len(LABELS))

    overall = mean_iou(matrix)

    assert overall >= MIN_MEAN_IOU, f"mean IoU {overall:.4f}, per class {class_ious(matrix).round(4).tolist()}"
    assert class_ious(matrix)[LABELS.index("lesion")] >= MIN_LESION_IOU


def test_ct_model_needs_its_window(truth: dict[str, Any]) -> None:
    # Given the multi-frame file (lesions in every frame) seen without the window: the whole 12-bit range as 0..255
    model = BareModel(MODEL_DIR)
    name = next(name for name, entry in truth["files"].items() if len(entry["frames"]) > 1)
    frames, _ = modality_values(SAMPLES / name)
    lesion = LABELS.index("lesion")
    found = 0
    for frame in frames:
        unwindowed = ((frame + 1024) / 4095 * 255).astype(np.float32) / 255
        (scores,) = model.session.run(["scores"], {"image": unwindowed[np.newaxis, np.newaxis]})
        found += int((np.argmax(scores[0], axis=0) == lesion).sum())

    # Then no lesion is found, where the windowed frames have them (previous test)
    masks = [np.asarray(Image.open(SAMPLES / frame["mask"])) for frame in truth["files"][name]["frames"]]
    assert found < 0.1 * sum(int((mask == lesion).sum()) for mask in masks)
