"""The preview a prediction returns on request: each predicted frame as the model sees it before resizing, an 8-bit
PNG at the original size (the window, else the file's VOI, then MONOCHROME1's inversion)."""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from modelrun.errors import PreviewTooLarge
from modelrun.images.decode import Limits
from modelrun.models.registry import ModelRegistry
from modelrun.predict import Predictor
from modelrun.transforms import preview as preview_module
from tests.dicomfactory import ct_slice, dicom_bytes
from tests.modelfactory import DELETE, make_model

FILE_WINDOW = (40.0, 400.0)


def linear_window(values: np.ndarray, center: float, width: float) -> np.ndarray:
    """DICOM PS3.3 C.11.2.1.2's linear function to 0..255, rounded to 8 bits."""
    low, high = center - 0.5 - (width - 1) / 2, center - 0.5 + (width - 1) / 2
    ramp = ((values - (center - 0.5)) / (width - 1) + 0.5) * 255
    return np.rint(np.where(values <= low, 0, np.where(values > high, 255, ramp))).astype(np.uint8)


def hounsfield(seed: int = 0) -> np.ndarray:
    return ct_slice(seed=seed).astype(np.float64) - 1024


def predictor(tmp_path: Path, **spec: Any) -> Predictor:
    """A grey 16x16 quadrant model ("q") with model.json changes ``spec``."""
    make_model(tmp_path, name="q", color_mode="L", size=(16, 16), classes=4, **spec)
    return Predictor(ModelRegistry(tmp_path), Limits(), "q")


def shown(entry: dict[str, Any]) -> np.ndarray:
    assert (entry["format"], entry["encoding"]) == ("png", "base64")
    image = Image.open(io.BytesIO(base64.b64decode(entry["data"])))
    assert image.size == (entry["width"], entry["height"])
    return np.asarray(image)


def test_a_dicom_frame_is_previewed_through_the_files_window_at_its_original_size(tmp_path: Path) -> None:
    # Given a CT slice with its own window, and a model that declares none
    data = dicom_bytes(ct_slice(seed=1), intercept=-1024, window=FILE_WINDOW)

    # When it is predicted with a preview
    result = predictor(tmp_path).predict(data, preview=True)

    # Then the one preview is the slice's Hounsfield units through the file's window, 64x64 grey
    [entry] = result["preview"]
    assert entry["frame"] == 0
    assert shown(entry).shape == (64, 64)
    np.testing.assert_array_equal(shown(entry), linear_window(hounsfield(1), *FILE_WINDOW))


def test_the_models_window_wins_over_the_files_and_monochrome1_is_inverted_after_it(tmp_path: Path) -> None:
    # Given a MONOCHROME1 file with its own window, and a model with a bone window
    data = dicom_bytes(ct_slice(seed=2), photometric="MONOCHROME1", intercept=-1024, window=FILE_WINDOW)
    steps = [
        {"op": "color", "mode": "L"},
        {"op": "window", "center": 500, "width": 2000},
        {"op": "resize", "size": [16, 16]},
    ]
    shorthand = {key: DELETE for key in ("layout", "size", "color_mode", "dtype")}
    model = predictor(tmp_path, input=shorthand, transforms=steps)

    # When it is predicted with a preview
    [entry] = model.predict(data, preview=True)["preview"]

    # Then the preview is the model's window, inverted
    np.testing.assert_array_equal(shown(entry), 255 - linear_window(hounsfield(2), 500, 2000))


@pytest.mark.parametrize(("policy", "frames"), [("all", [0, 1, 2]), ("middle", [1]), ("first", [0])])
def test_each_predicted_frame_has_its_preview_in_the_order_of_the_results(
    tmp_path: Path, policy: str, frames: list[int]
) -> None:
    # Given a 3-frame file, frame i having its disc at a different brightness
    stack = np.stack([ct_slice(seed=index, disc=200 + 300 * index) for index in range(3)])
    data = dicom_bytes(stack, intercept=-1024, window=FILE_WINDOW)

    # When a model with that frame policy predicts it with a preview
    result = predictor(tmp_path, frames=policy).predict(data, preview=True)

    # Then there is one preview per predicted frame, each that frame's own pixels
    assert [entry["frame"] for entry in result["preview"]] == frames
    for entry in result["preview"]:
        index = entry["frame"]
        expected = linear_window(stack[index].astype(np.float64) - 1024, *FILE_WINDOW)
        np.testing.assert_array_equal(shown(entry), expected)
    if policy == "all":
        assert [frame["frame"] for frame in result["frames"]] == frames


def test_a_colour_png_is_previewed_as_it_is(tmp_path: Path) -> None:
    pixels = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode="RGB").save(buffer, format="PNG")
    [entry] = predictor(tmp_path).predict(buffer.getvalue(), preview=True)["preview"]
    np.testing.assert_array_equal(shown(entry), pixels)


def test_no_preview_unless_asked(tmp_path: Path) -> None:
    data = dicom_bytes(ct_slice(), intercept=-1024, window=FILE_WINDOW)
    assert "preview" not in predictor(tmp_path).predict(data)
    assert "preview" not in predictor(tmp_path).predict_raw(data)


def test_previews_too_large_for_a_response_are_refused_with_preview_too_large(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a bound smaller than two frames' PNGs
    stack = np.stack([ct_slice(seed=index) for index in range(3)])
    data = dicom_bytes(stack, intercept=-1024, window=FILE_WINDOW)
    model = predictor(tmp_path, frames="all")
    one_frame = len(base64.b64decode(model.predict(data, preview=True)["preview"][0]["data"]))
    monkeypatch.setattr(preview_module, "MAX_PREVIEW_BYTES", int(one_frame * 1.5))

    # When all three frames are previewed, then the request is refused with a 413 that says what to do
    with pytest.raises(PreviewTooLarge, match="ask without preview") as raised:
        model.predict(data, preview=True)
    assert (raised.value.status, raised.value.code) == (413, "preview_too_large")
    # ... and without the preview the same file is predicted
    assert len(model.predict(data)["frames"]) == 3
