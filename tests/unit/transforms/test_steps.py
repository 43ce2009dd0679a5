"""Each transform step on a real ONNX Identity graph: the model's output is the tensor the transforms made, so the
values and the geometry can be checked exactly."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from PIL import Image

from modelrun.models.onnx import LoadedModel
from modelrun.transforms import Geometry
from tests.unit.conftest import IdentityModel


def run(model: LoadedModel, image: Image.Image) -> tuple[np.ndarray, Geometry]:
    """The tensor the model received for ``image`` (the Identity graph's output) and the recorded geometry."""
    feeds, geometry = model.prepare(image)
    (outputs,) = model.infer([feeds])
    np.testing.assert_array_equal(outputs["out"], feeds["images"])
    return outputs["out"], geometry


def pattern(width: int, height: int, mode: str = "RGB") -> Image.Image:
    """An image whose pixels are all different (within 0..255), so a shifted crop or pad would show."""
    values = (np.arange(width * height * 3).reshape(height, width, 3) * 7 % 256).astype(np.uint8)
    image = Image.fromarray(values, "RGB")
    return image if mode == "RGB" else Image.fromarray(values[:, :, 0], "L")


def chw(image: Image.Image) -> np.ndarray:
    pixels = np.asarray(image, dtype=np.float32)
    return pixels[np.newaxis] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)


def assert_geometry(geometry: Geometry, scale: tuple[float, float], offset: tuple[float, float]) -> None:
    assert geometry.scale == pytest.approx(scale)
    assert geometry.offset == pytest.approx(offset)


# --- resize ----------------------------------------------------------------------------------------------------


def test_resize_to_an_exact_size_stretches_the_image(identity_model: IdentityModel) -> None:
    # given a model whose graph takes 10x30 and a resize to exactly that
    model = identity_model([{"op": "resize", "size": [10, 30]}], dims=["N", 3, 10, 30])
    image = pattern(40, 20)

    # when a 40x20 (width x height) image goes through it
    tensor, geometry = run(model, image)

    # then the tensor is Pillow's bilinear resize, pixels as 0..255 floats, and each axis scaled on its own
    np.testing.assert_array_equal(tensor, chw(image.resize((30, 10), Image.Resampling.BILINEAR)))
    assert geometry.input_size == (10, 30)
    assert_geometry(geometry, (0.5, 0.75), (0.0, 0.0))


def test_resize_shorter_then_centre_crop_is_the_imagenet_recipe(identity_model: IdentityModel) -> None:
    # given resize shorter 20 then centre crop 20x20 on a static 20x20 graph
    steps = [{"op": "resize", "shorter": 20}, {"op": "center_crop", "size": [20, 20]}]
    model = identity_model(steps, dims=["N", 3, 20, 20])
    image = pattern(60, 40)

    # when a 60x40 image goes through it
    tensor, geometry = run(model, image)

    # then it was resized to 30x20 keeping the aspect, and the middle 20 columns kept (left = round(10 / 2) = 5)
    resized = chw(image.resize((30, 20), Image.Resampling.BILINEAR))
    np.testing.assert_array_equal(tensor, resized[:, :, 5:25])
    assert_geometry(geometry, (0.5, 0.5), (0.0, -5.0))


def test_resize_longer_keeps_the_aspect_on_a_dynamic_graph(identity_model: IdentityModel) -> None:
    # given a graph with symbolic height and width and a resize of the longer side to 20
    model = identity_model([{"op": "resize", "longer": 20}])
    image = pattern(40, 20)

    # when a 40x20 image goes through it
    tensor, geometry = run(model, image)

    # then it is 20 wide and 10 high
    np.testing.assert_array_equal(tensor, chw(image.resize((20, 10), Image.Resampling.BILINEAR)))
    assert_geometry(geometry, (0.5, 0.5), (0.0, 0.0))


def test_resize_keep_aspect_fits_inside_the_size_without_padding(identity_model: IdentityModel) -> None:
    # given a resize that fits images inside 16x16
    model = identity_model([{"op": "resize", "size": [16, 16], "keep_aspect": True, "resample": "nearest"}])
    image = pattern(40, 20)

    # when a 40x20 image goes through it
    tensor, geometry = run(model, image)

    # then the scale is min(16/20, 16/40) = 0.4: 16 wide, 8 high, no padding
    assert tensor.shape == (3, 8, 16)
    np.testing.assert_array_equal(tensor, chw(image.resize((16, 8), Image.Resampling.NEAREST)))
    assert_geometry(geometry, (0.4, 0.4), (0.0, 0.0))


# --- centre crop -----------------------------------------------------------------------------------------------


def test_centre_crop_rounds_its_offset_as_torchvision_does(identity_model: IdentityModel) -> None:
    # given a 3x4 centre crop of a grey 9x6 (width x height) image
    model = identity_model([{"op": "color", "mode": "L"}, {"op": "center_crop", "size": [3, 4]}], dims=["N", 1, 3, 4])
    image = pattern(9, 6, "L")

    # when it goes through
    tensor, geometry = run(model, image)

    # then torchvision's int(round((6 - 3) / 2)) = round(1.5) = 2 rows and int(round((9 - 4) / 2)) = round(2.5) = 2
    # columns are cut from the top and left (half to even; a floor would cut 1 row)
    np.testing.assert_array_equal(tensor[0], np.asarray(image, dtype=np.float32)[2:5, 2:6])
    assert_geometry(geometry, (1.0, 1.0), (-2.0, -2.0))


def test_centre_crop_larger_than_the_image_pads_it_with_the_fill(identity_model: IdentityModel) -> None:
    # given a 4x6 crop with fill 7 and a grey 3x2 image
    steps = [{"op": "color", "mode": "L"}, {"op": "center_crop", "size": [4, 6], "fill": 7}]
    model = identity_model(steps, dims=["N", 1, 4, 6])
    image = Image.fromarray(np.array([[1, 2, 3], [4, 5, 6]], dtype=np.uint8), "L")

    # when it goes through
    tensor, geometry = run(model, image)

    # then the image sits (4 - 2) // 2 = 1 row down and (6 - 3) // 2 = 1 column in, the rest is 7
    expected = np.full((4, 6), 7, dtype=np.float32)
    expected[1:3, 1:4] = [[1, 2, 3], [4, 5, 6]]
    np.testing.assert_array_equal(tensor[0], expected)
    assert_geometry(geometry, (1.0, 1.0), (1.0, 1.0))


# --- letterbox -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("align", "top"), [("center", 1), ("top_left", 0)])
def test_letterbox_scales_to_fit_and_pads_with_114(identity_model: IdentityModel, align: str, top: int) -> None:
    # given an 8x8 letterbox (fill 114) and a 16x10 (width x height) image
    step = {"op": "letterbox", "size": [8, 8], "fill": 114, "align": align, "resample": "nearest"}
    model = identity_model([step], dims=["N", 3, 8, 8])
    image = pattern(16, 10)

    # when it goes through
    tensor, geometry = run(model, image)

    # then r = min(8/10, 8/16) = 0.5 gives 8x5; the 3 spare rows split as Ultralytics does: round(1.5 - 0.1) = 1
    # above when centred (2 below), all below when top-left
    expected = np.full((3, 8, 8), 114, dtype=np.float32)
    expected[:, top : top + 5, :] = chw(image.resize((8, 5), Image.Resampling.NEAREST))
    np.testing.assert_array_equal(tensor, expected)
    assert geometry.input_size == (8, 8)
    assert_geometry(geometry, (0.5, 0.5), (float(top), 0.0))


def test_letterbox_without_scale_up_keeps_a_small_image_at_its_size(identity_model: IdentityModel) -> None:
    # given a letterbox that may not enlarge, and a 4x2 image
    step = {"op": "letterbox", "size": [8, 8], "fill": [1, 2, 3], "scale_up": False}
    model = identity_model([step], dims=["N", 3, 8, 8])
    image = pattern(4, 2)

    # when it goes through
    tensor, geometry = run(model, image)

    # then it stays 4x2, centred at round(3 - 0.1) = 3 rows down and round(2 - 0.1) = 2 columns in, per-channel fill
    assert tensor[:, 0, 0].tolist() == [1, 2, 3]
    np.testing.assert_array_equal(tensor[:, 3:5, 2:6], chw(image))
    assert_geometry(geometry, (1.0, 1.0), (3.0, 2.0))


# --- pad to multiple -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("align", "left"), [("top_left", 0), ("center", 1)])
def test_pad_to_multiple_rounds_each_side_up(identity_model: IdentityModel, align: str, left: int) -> None:
    # given a dynamic grey graph, sides bounded to 10 and padded to multiples of 4 with fill 9
    steps = [
        {"op": "color", "mode": "L"},
        {"op": "resize", "longer": 10},
        {"op": "pad_to_multiple", "multiple": 4, "fill": 9, "align": align},
    ]
    model = identity_model(steps, dims=["N", 1, "H", "W"])
    image = pattern(10, 7, "L")

    # when a 10x7 image goes through
    tensor, geometry = run(model, image)

    # then it is 12 wide and 8 high, the image at the top (and split left/right when centred), the rest 9
    expected = np.full((8, 12), 9, dtype=np.float32)
    expected[0:7, left : left + 10] = np.asarray(image, dtype=np.float32)
    np.testing.assert_array_equal(tensor[0], expected)
    assert_geometry(geometry, (1.0, 1.0), (0.0, float(left)))


# --- colour, normalize, dtype, layout ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "channels", "expected"),
    [("RGB", 3, [10, 20, 30]), ("BGR", 3, [30, 20, 10]), ("L", 1, [18])],
)
def test_colour_modes_order_the_channels(
    identity_model: IdentityModel, mode: str, channels: int, expected: list[int]
) -> None:
    # given a colour step and a (10, 20, 30) image
    model = identity_model(
        [{"op": "color", "mode": mode}, {"op": "resize", "size": [2, 2]}], dims=["N", channels, 2, 2]
    )
    image = Image.new("RGB", (2, 2), (10, 20, 30))

    # when it goes through
    tensor, _ = run(model, image)

    # then the channels are RGB, reversed for BGR, or Pillow's luma for L:
    # (10 * 299 + 20 * 587 + 30 * 114) / 1000 = 18.15 -> 18
    assert tensor[:, 0, 0].tolist() == expected


def test_normalize_scales_then_subtracts_the_mean_and_divides_by_the_std(identity_model: IdentityModel) -> None:
    # given a normalize step
    step = {"op": "normalize", "scale": 0.5, "mean": [1, 2, 3], "std": [2, 4, 5]}
    model = identity_model([{"op": "resize", "size": [1, 1]}, step], dims=["N", 3, 1, 1])

    # when a (10, 20, 30) pixel goes through
    tensor, _ = run(model, Image.new("RGB", (1, 1), (10, 20, 30)))

    # then each channel is (pixel * 0.5 - mean) / std
    np.testing.assert_allclose(tensor[:, 0, 0], [2.0, 2.0, 2.4], rtol=1e-6)


@pytest.mark.parametrize(("dtype", "numpy_type"), [("uint8", np.uint8), ("float16", np.float16)])
def test_dtype_gives_the_graph_its_element_type(identity_model: IdentityModel, dtype: str, numpy_type: Any) -> None:
    # given a graph of another element type and a dtype step
    steps = [{"op": "resize", "size": [1, 1]}, {"op": "dtype", "dtype": dtype}]
    model = identity_model(steps, dims=["N", 3, 1, 1], dtype=dtype)

    # when a pixel goes through
    tensor, _ = run(model, Image.new("RGB", (1, 1), (10, 20, 200)))

    # then the tensor has that type and holds the raw pixel values
    assert tensor.dtype == numpy_type
    assert tensor[:, 0, 0].tolist() == [10, 20, 200]


def test_layout_nhwc_puts_channels_last(identity_model: IdentityModel) -> None:
    # given a channels-last graph
    model = identity_model([{"op": "resize", "size": [1, 2]}, {"op": "layout", "layout": "NHWC"}], dims=["N", 1, 2, 3])

    # when a 2x1 image goes through
    tensor, _ = run(model, Image.new("RGB", (2, 1), (10, 20, 30)))

    # then the tensor is height, width, channels
    assert tensor.shape == (1, 2, 3)
    assert tensor[0, 1].tolist() == [10, 20, 30]
