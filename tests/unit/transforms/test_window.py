"""The VOI in the pipeline, checked numerically on a CT phantom of known Hounsfield units (DICOM PS3.3 C.11.2.1.2):
the model's window, the file's window, the image range, MONOCHROME1 and the rescale slope and intercept."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from PIL import Image

from modelrun.errors import ModelConfigError
from modelrun.images.decode import Limits, decode_image
from modelrun.images.voi import Window as WindowVoi
from modelrun.models.spec import parse_spec
from modelrun.transforms.pipeline import Pipeline
from modelrun.transforms.steps import parse_steps
from tests.unit.conftest import dicom_bytes

HU = np.array([-1000, 0, 40, 400, 1000], dtype=np.float64)
"""Air, water, soft tissue (the window's centre), bone at the window's top, dense bone."""

# The linear function of C.11.2.1.2 for centre 40 and width 400, by hand: at or below c - 0.5 - (w - 1) / 2 = -160
# black, above c - 0.5 + (w - 1) / 2 = 239 white, between ((x - (c - 0.5)) / (w - 1) + 0.5) * 255.
SOFT_TISSUE = [0.0, ((0 - 39.5) / 399 + 0.5) * 255, ((40 - 39.5) / 399 + 0.5) * 255, 255.0, 255.0]


def phantom(**options: Any) -> bytes:
    """Two rows of the five HU values, stored as HU / slope - intercept / slope in unsigned 16 bits."""
    slope = options.pop("slope", 1.0)
    intercept = options.pop("intercept", -1024.0)
    stored = np.rint((HU - intercept) / slope).astype(np.uint16)
    return dicom_bytes(np.stack([stored, stored]), slope=slope, intercept=intercept, **options)


def raw_values(steps: list[dict[str, Any]], data: bytes) -> np.ndarray:
    """The first row of the grey input the pipeline makes, without scaling (layout NHWC, one channel)."""
    pipeline = Pipeline(parse_steps([{"op": "color", "mode": "L"}, *steps, {"op": "layout", "layout": "NHWC"}], fail))
    tensor, _ = pipeline.run(decode_image(data, Limits()).frames[0])
    return np.asarray(tensor[0, :, 0], dtype=np.float64)


def fail(field: str, problem: str) -> Any:
    raise ModelConfigError(f"{field} {problem}")


MODEL_WINDOW = {"op": "window", "center": 40, "width": 400}


def test_the_models_window_maps_hounsfield_units_by_the_standards_linear_function() -> None:
    # given a CT phantom stored with slope 1 and intercept -1024
    # when a model with a soft-tissue window (40/400) prepares it
    values = raw_values([MODEL_WINDOW], phantom())

    # then each region has the value the standard's formula gives
    np.testing.assert_allclose(values, SOFT_TISSUE, rtol=0, atol=1e-4)


def test_the_rescale_slope_is_applied_before_the_window() -> None:
    # given the same HU stored with slope 2 (half the stored values)
    # when the same model prepares it
    values = raw_values([MODEL_WINDOW], phantom(slope=2.0, intercept=-1024.0))

    # then the output is the same: the window sees Hounsfield units, not stored values
    np.testing.assert_allclose(values, SOFT_TISSUE, rtol=0, atol=1e-4)


def test_without_a_model_window_the_files_first_window_applies() -> None:
    # given the phantom carrying the same soft-tissue window in the file
    # when a model without a window prepares it
    values = raw_values([], phantom(window=(40.0, 400.0)))

    # then the file's window gave the same values
    np.testing.assert_allclose(values, SOFT_TISSUE, rtol=0, atol=1e-4)


def test_the_models_window_overrides_the_files() -> None:
    # given the phantom with a bone window (centre 1000, width 10) in the file
    # when a model with the soft-tissue window prepares it
    values = raw_values([MODEL_WINDOW], phantom(window=(1000.0, 10.0)))

    # then the model's window won
    np.testing.assert_allclose(values, SOFT_TISSUE, rtol=0, atol=1e-4)


def test_without_any_window_the_image_range_maps_to_0_255() -> None:
    # given the phantom with no window in the file, and a model without one
    values = raw_values([], phantom())

    # then -1000 HU (the minimum) is 0, 1000 HU (the maximum) 255, water half way
    np.testing.assert_allclose(values, [0.0, 127.5, 132.6, 178.5, 255.0], rtol=0, atol=1e-4)


def test_monochrome1_is_inverted_after_the_window() -> None:
    # given the phantom as MONOCHROME1 (the lowest value shown white)
    values = raw_values([MODEL_WINDOW], phantom(photometric="MONOCHROME1"))

    # then each value is 255 minus the windowed one
    np.testing.assert_allclose(values, [255.0 - value for value in SOFT_TISSUE], rtol=0, atol=1e-4)


@pytest.mark.parametrize(
    ("function", "expected"),
    [
        pytest.param("linear_exact", [0.0, ((0 - 40) / 400 + 0.5) * 255, 127.5, 255.0, 255.0], id="linear_exact"),
        pytest.param(
            "sigmoid",
            [255 / (1 + np.exp(-4 * (hu - 40) / 400)) for hu in HU],
            id="sigmoid",
        ),
    ],
)
def test_the_other_window_functions_follow_the_standard(function: str, expected: list[float]) -> None:
    values = raw_values([{**MODEL_WINDOW, "function": function}], phantom())
    np.testing.assert_allclose(values, expected, rtol=0, atol=1e-4)


def test_a_lut_window_maps_each_value_and_clamps_outside_its_entries() -> None:
    # given a LUT from -1 HU: -1 -> 10, 0 -> 20, 1 -> 30
    lut = {"op": "window", "lut": {"first": -1, "values": [10, 20, 30]}}

    # when the phantom goes through it
    values = raw_values([lut], phantom())

    # then water (0 HU) is 20, everything below -1 HU 10, everything above 1 HU 30
    assert values.tolist() == [10.0, 20.0, 30.0, 30.0, 30.0]


def test_the_window_keeps_precision_through_a_resize() -> None:
    # given a 1x2 phantom (0 and 1 HU) windowed to 0.0 and 0.6390977 of 255, then doubled in size (bilinear)
    data = dicom_bytes(np.array([[1024, 1025]], dtype=np.uint16), slope=1.0, intercept=-1024.0)
    steps = [MODEL_WINDOW, {"op": "resize", "size": [1, 4], "resample": "bilinear"}]

    # when it is prepared
    values = raw_values(steps, data)

    # then the resized values lie strictly between the two windowed ones, unrounded (uint8 would give whole numbers)
    low, high = ((0 - 39.5) / 399 + 0.5) * 255, ((1 - 39.5) / 399 + 0.5) * 255
    assert values[0] == pytest.approx(low, abs=1e-4)
    assert values[-1] == pytest.approx(high, abs=1e-4)
    assert any(low < value < high and value != round(value) for value in values)


def test_a_models_window_applies_to_a_16_bit_png_on_its_raw_values() -> None:
    # given a 16-bit greyscale image of raw values 0, 1064 and 5000 (as a PNG)
    import io

    image = Image.fromarray(np.array([[0, 1064, 5000]], dtype=np.uint16))
    buffer = io.BytesIO()
    image.save(buffer, "PNG")

    # when a model with a window 1064/400 prepares it
    values = raw_values([{"op": "window", "center": 1064, "width": 400}], buffer.getvalue())

    # then the raw values were windowed: below black, the centre mid-grey, above white
    np.testing.assert_allclose(values, [0.0, ((1064 - 1063.5) / 399 + 0.5) * 255, 255.0], rtol=0, atol=1e-4)


def test_without_a_window_a_16_bit_png_keeps_its_0_255_scaling() -> None:
    import io

    image = Image.fromarray(np.array([[0, 257 * 100, 65535]], dtype=np.uint16))
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    values = raw_values([], buffer.getvalue())
    np.testing.assert_allclose(values, [0.0, 100.0, 255.0], rtol=0, atol=1e-4)


def test_a_window_spec_round_trips_through_its_dict_form() -> None:
    # given a model.json with a window and a frame policy
    document = {
        "name": "ct",
        "version": "1",
        "description": "a CT model",
        "input": {"name": "image"},
        "transforms": [
            {"op": "color", "mode": "L"},
            {"op": "window", "center": 40, "width": 400, "function": "sigmoid"},
            {"op": "resize", "size": [8, 8]},
        ],
        "frames": "all",
        "labels": ["a", "b"],
        "output": {"name": "probabilities", "type": "probabilities"},
    }
    spec = parse_spec(document, "model.json")

    # when its dict form is parsed again, then it is the same spec
    again = parse_spec(spec.to_dict(), "model.json")
    assert again == spec
    assert (again.frames, again.to_dict()["transforms"][1]["function"]) == ("all", "sigmoid")


@pytest.mark.parametrize("function", ["linear", "linear_exact", "sigmoid"])
def test_a_window_gives_finite_values_nan_as_black_and_infinities_at_their_end(function: str) -> None:
    # given float pixel values with a NaN and both infinities
    values = np.array([np.nan, np.inf, -np.inf, 40.0], dtype=np.float32)

    # when a window applies
    out = WindowVoi(40.0, 400.0, function).apply(values)

    # then NaN is 0, +inf 255, -inf 0, as float32
    assert out.dtype == np.float32
    assert out[:3].tolist() == [0.0, 255.0, 0.0]
    assert 0.0 < out[3] < 255.0


def test_a_centre_float32_cannot_hold_keeps_the_linear_windows_edges() -> None:
    # given centre 3000.3 and width 7: black at or below 2996.8, white above 3002.8; values around both edges
    window = WindowVoi(3000.3, 7.0)
    values = np.array([2996.75, 2996.8125, 2997.0, 3000.0, 3002.75, 3002.8125], dtype=np.float32)

    # when windowed
    out = window.apply(values)

    # then each value is the standard's formula evaluated in float64, to within float32's precision
    x = values.astype(np.float64)
    expected = np.clip(((x - 2999.8) / 6 + 0.5) * 255, 0, 255)
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-4)
    assert out[0] == 0.0
    assert out[-1] == 255.0
