"""The flat ``input`` shorthand runs through the transforms pipeline and gives, bit for bit, the tensor the platform
made before transforms existed (the reference below is that code, kept here as the oracle)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from modelrun.models.spec import InputSpec
from modelrun.transforms.pipeline import Pipeline, to_tensor

RESAMPLING = {"nearest": Image.Resampling.NEAREST, "box": Image.Resampling.BOX, "bilinear": Image.Resampling.BILINEAR}


def reference_tensor(img: Image.Image, spec: InputSpec) -> np.ndarray:
    """The pre-transforms preprocessing: colour mode, resize, float32 normalise or uint8 round, then layout."""
    plane = img
    if img.mode in ("RGBA", "P", "LA"):
        rgba = img.convert("RGBA")
        plane = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")
    elif img.mode == "I;16":
        values = np.asarray(img).astype(np.float32) / np.float32(257.0)
        plane = Image.fromarray(np.clip(values, 0.0, 255.0).astype(np.float32))
    if spec.color_mode == "L" and plane.mode == "RGB":
        plane = plane.convert("L")
    if plane.size != (spec.width, spec.height):
        plane = plane.resize((spec.width, spec.height), RESAMPLING[spec.resample])
    pixels = np.asarray(plane, dtype=np.float32)
    if pixels.ndim == 2:
        pixels = pixels[:, :, np.newaxis]
    if spec.channels == 3 and pixels.shape[2] == 1:
        pixels = np.repeat(pixels, 3, axis=2)
    if spec.color_mode == "BGR":
        pixels = pixels[:, :, ::-1]
    if spec.dtype == "uint8":
        tensor = np.clip(np.rint(pixels), 0, 255).astype(np.uint8)
    else:
        mean = np.asarray(spec.mean, dtype=np.float32)
        std = np.asarray(spec.std, dtype=np.float32)
        tensor = ((pixels * np.float32(spec.scale) - mean) / std).astype(spec.dtype)
    if spec.layout == "NCHW":
        tensor = tensor.transpose(2, 0, 1)
    return np.ascontiguousarray(tensor)


def input_spec(**changes: object) -> InputSpec:
    fields: dict[str, object] = {
        "name": "image",
        "layout": "NCHW",
        "size": (7, 5),
        "color_mode": "RGB",
        "dtype": "float32",
        "scale": 1 / 255,
        "mean": (0.485, 0.456, 0.406),
        "std": (0.229, 0.224, 0.225),
        "resample": "bilinear",
    }
    fields.update(changes)
    if fields["color_mode"] == "L":
        fields.update(mean=(0.5,), std=(0.25,))
    if fields["dtype"] == "uint8":
        channels = 1 if fields["color_mode"] == "L" else 3
        fields.update(scale=1.0, mean=(0.0,) * channels, std=(1.0,) * channels)
    return InputSpec(**fields)  # type: ignore[arg-type]


def images() -> list[Image.Image]:
    rng = np.random.default_rng(9)
    rgb = Image.fromarray(rng.integers(0, 256, (13, 11, 3), dtype=np.uint8), "RGB")
    rgba = Image.fromarray(rng.integers(0, 256, (9, 12, 4), dtype=np.uint8), "RGBA")
    grey = Image.fromarray(rng.integers(0, 256, (6, 10), dtype=np.uint8), "L")
    deep = Image.fromarray(rng.integers(0, 65536, (8, 8), dtype=np.uint16))
    assert deep.mode == "I;16"
    return [rgb, rgba, grey, deep, rgb.resize((5, 7))]


@pytest.mark.parametrize(
    "spec",
    [
        pytest.param(input_spec(), id="RGB float32 ImageNet"),
        pytest.param(input_spec(color_mode="BGR", layout="NHWC"), id="BGR NHWC"),
        pytest.param(input_spec(color_mode="L", resample="box"), id="grey box"),
        pytest.param(input_spec(dtype="uint8", resample="nearest"), id="uint8 nearest"),
        pytest.param(input_spec(dtype="float16", size=(16, 3)), id="float16 enlarged"),
    ],
)
def test_the_shorthand_gives_the_same_tensor_as_before_transforms_existed(spec: InputSpec) -> None:
    for image in images():
        # given an image and a flat input spec
        # when it is turned into a tensor through the transforms
        tensor = to_tensor(image, spec)

        # then it is the reference tensor, byte for byte
        expected = reference_tensor(image, spec)
        assert tensor.dtype == expected.dtype
        assert tensor.shape == expected.shape == spec.image_shape
        assert tensor.tobytes() == expected.tobytes()


def test_the_shorthand_records_the_resize_in_its_geometry() -> None:
    # given a 7x5 shorthand and an 11x13 (width x height) image
    _, geometry = Pipeline(input_spec().steps()).run(images()[0])

    # then the geometry is the stretch from 13x11 to 7x5
    assert geometry.original_size == (13, 11)
    assert geometry.input_size == (7, 5)
    assert geometry.scale == pytest.approx((7 / 13, 5 / 11))
