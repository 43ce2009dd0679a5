"""Image decoding and tensor preparation: formats, modes, orientation, limits, layouts and normalisation."""

from __future__ import annotations

import io
import struct
import zlib
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageFile

from modelrun.errors import ImageTooLarge, InvalidImage, ModelrunError, UnsupportedMediaType
from modelrun.images.decode import Limits, decode_image, sniff_format
from modelrun.models.spec import InputSpec, parse_spec
from modelrun.transforms.pipeline import preprocess, to_tensor
from tests.modelfactory import spec_dict

RED = (255, 0, 0)


def encode(image: Image.Image, fmt: str, **params: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


def raw_spec(**changes: Any) -> InputSpec:
    """An input spec that keeps raw pixel values (scale 1, no mean/std) so tests can read pixels back."""
    fields: dict[str, Any] = {
        "name": "image",
        "layout": "NHWC",
        "size": (2, 2),
        "color_mode": "RGB",
        "dtype": "float32",
        "scale": 1.0,
        "mean": (0.0, 0.0, 0.0),
        "std": (1.0, 1.0, 1.0),
        "resample": "nearest",
    }
    fields.update(changes)
    if fields["color_mode"] == "L" and "mean" not in changes:
        fields["mean"], fields["std"] = (0.0,), (1.0,)
    return InputSpec(**fields)


def top_left(img: Image.Image, **changes: Any) -> list[float]:
    """The top-left pixel as the model would see it, channels last."""
    tensor = to_tensor(img, raw_spec(**changes))
    return [float(value) for value in tensor[0, 0]]


def noise(size: tuple[int, int], seed: int = 7) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares width x height but carries almost no pixel data."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


# --- formats ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "params"),
    [
        pytest.param("PNG", {}, id="PNG"),
        pytest.param("JPEG", {"quality": 95}, id="JPEG"),
        pytest.param("GIF", {}, id="GIF"),
        pytest.param("BMP", {}, id="BMP"),
        pytest.param("TIFF", {}, id="TIFF"),
        pytest.param("WEBP", {"lossless": True}, id="WebP"),
    ],
)
def test_every_supported_format_decodes(fmt: str, params: dict[str, Any]) -> None:
    # given a red 10x6 image encoded in the format
    data = encode(Image.new("RGB", (10, 6), RED), fmt, **params)

    # when it is decoded
    image = decode_image(data, Limits()).frames[0].image

    # then it has its size, its format and its colour
    assert image.size == (10, 6)
    assert image.format == fmt
    assert top_left(image, size=(6, 10)) == pytest.approx([255, 0, 0], abs=15)


def test_an_animated_gif_gives_its_first_frame() -> None:
    # given a GIF whose first frame is red and second is blue
    frames = [Image.new("RGB", (8, 8), RED), Image.new("RGB", (8, 8), (0, 0, 255))]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)

    # when it is decoded
    image = decode_image(data, Limits()).frames[0].image

    # then the first frame is used
    assert getattr(image, "n_frames", 1) == 2
    assert top_left(image) == [255.0, 0.0, 0.0]


def test_an_exif_rotated_jpeg_comes_out_upright() -> None:
    # given a 40x20 JPEG, left half red, right half blue, tagged "rotate 90 degrees clockwise to display"
    stored = Image.new("RGB", (40, 20), (0, 0, 255))
    stored.paste(RED, (0, 0, 20, 20))
    exif = Image.Exif()
    exif[0x0112] = 6
    data = encode(stored, "JPEG", quality=95, exif=exif.tobytes())

    # when it is decoded
    image = decode_image(data, Limits()).frames[0].image.convert("RGB")

    # then it is 20 wide and 40 tall, with the red half on top
    assert image.size == (20, 40)
    pixels = np.asarray(image)
    assert pixels[5, 10].tolist() == pytest.approx([255, 0, 0], abs=40)
    assert pixels[35, 10].tolist() == pytest.approx([0, 0, 255], abs=40)


# --- modes ------------------------------------------------------------------------------------------------


def palette_image(*, transparent: bool) -> Image.Image:
    image = Image.new("P", (2, 2), 1)
    image.putpalette([0, 0, 0, 10, 20, 30] + [0] * (256 * 3 - 6))
    if transparent:
        return Image.open(io.BytesIO(encode(image, "PNG", transparency=1)))
    return image


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        pytest.param(lambda: Image.new("L", (2, 2), 100), [100, 100, 100], id="L"),
        pytest.param(lambda: Image.new("LA", (2, 2), (100, 255)), [100, 100, 100], id="LA opaque"),
        pytest.param(lambda: Image.new("LA", (2, 2), (100, 0)), [255, 255, 255], id="LA transparent on white"),
        pytest.param(lambda: Image.new("RGB", (2, 2), (10, 20, 30)), [10, 20, 30], id="RGB"),
        pytest.param(lambda: Image.new("RGBA", (2, 2), (10, 20, 30, 255)), [10, 20, 30], id="RGBA opaque"),
        pytest.param(lambda: Image.new("RGBA", (2, 2), (10, 20, 30, 0)), [255, 255, 255], id="RGBA transparent"),
        pytest.param(lambda: Image.new("RGBA", (2, 2), (0, 0, 0, 102)), [153, 153, 153], id="RGBA 40% black"),
        pytest.param(lambda: palette_image(transparent=False), [10, 20, 30], id="P"),
        pytest.param(lambda: palette_image(transparent=True), [255, 255, 255], id="P with transparency"),
        pytest.param(lambda: Image.new("CMYK", (2, 2), (0, 255, 255, 0)), [255, 0, 0], id="CMYK"),
        pytest.param(lambda: Image.new("1", (2, 2), 1), [255, 255, 255], id="1"),
        pytest.param(lambda: Image.new("I;16", (2, 2), 65535), [255, 255, 255], id="I;16 full scale"),
        pytest.param(lambda: Image.new("I;16", (2, 2), 100 * 257), [100, 100, 100], id="I;16 mid scale"),
        pytest.param(lambda: Image.new("I;16B", (2, 2), 65535), [255, 255, 255], id="I;16B"),
        pytest.param(lambda: Image.new("I", (2, 2), 200 * 257), [200, 200, 200], id="I"),
        pytest.param(lambda: Image.new("F", (2, 2), 42.5), [42.5, 42.5, 42.5], id="F"),
    ],
)
def test_every_mode_becomes_rgb_pixels(make: Any, expected: list[float]) -> None:
    # given an image in some Pillow mode
    image = make()

    # when it is turned into an RGB tensor
    pixel = top_left(image)

    # then the pixel is what that mode means, on a white background where transparent
    assert pixel == pytest.approx(expected, abs=1)


def test_a_sixteen_bit_png_is_scaled_not_clipped() -> None:
    # given a 16-bit grey PNG at 65535 and 32896 (about half)
    image = Image.new("I;16", (2, 1), 65535)
    image.putpixel((1, 0), 32896)
    decoded = decode_image(encode(image, "PNG"), Limits()).frames[0].image

    # when it is turned into a grey tensor
    tensor = to_tensor(decoded, raw_spec(color_mode="L", size=(1, 2)))

    # then full scale is 255 and half scale is 128
    assert decoded.mode.startswith("I")
    assert tensor[0, :, 0].tolist() == pytest.approx([255.0, 128.0], abs=0.01)


def test_a_colour_image_becomes_luma_for_a_grey_model() -> None:
    # given a pure red image
    image = Image.new("RGB", (2, 2), RED)

    # when it is turned into a grey tensor
    pixel = top_left(image, color_mode="L")

    # then it has the ITU-R 601 luma of red
    assert pixel == [76.0]


# --- layout, channel order, normalisation -----------------------------------------------------------------


def two_by_two() -> Image.Image:
    image = Image.new("RGB", (2, 2))
    image.putdata([(1, 2, 3), (4, 5, 6), (7, 8, 9), (10, 11, 12)])
    return image


def test_nhwc_puts_channels_last() -> None:
    # given a 2x2 image with distinct pixels
    # when it is laid out NHWC
    tensor = to_tensor(two_by_two(), raw_spec(layout="NHWC"))

    # then [row, column, channel] reads back the pixels
    assert tensor.shape == (2, 2, 3)
    assert tensor[0, 1].tolist() == [4, 5, 6]
    assert tensor[1, 0].tolist() == [7, 8, 9]


def test_nchw_puts_channels_first() -> None:
    # given a 2x2 image with distinct pixels
    # when it is laid out NCHW
    tensor = to_tensor(two_by_two(), raw_spec(layout="NCHW"))

    # then [channel, row, column] reads back the pixels
    assert tensor.shape == (3, 2, 2)
    assert tensor[:, 0, 1].tolist() == [4, 5, 6]
    assert tensor[2].tolist() == [[3, 6], [9, 12]]
    assert tensor.flags["C_CONTIGUOUS"]


def test_bgr_reverses_the_channels() -> None:
    # given a 2x2 image with distinct pixels
    # when it is prepared for a BGR model
    tensor = to_tensor(two_by_two(), raw_spec(color_mode="BGR", layout="NCHW"))

    # then channel 0 is blue and channel 2 is red
    assert tensor[:, 1, 1].tolist() == [12, 11, 10]


def test_scale_mean_and_std_are_applied_in_that_order() -> None:
    # given a pixel (100, 150, 200) and ImageNet-style normalisation
    image = Image.new("RGB", (2, 2), (100, 150, 200))
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

    # when it is turned into a tensor
    pixel = top_left(image, scale=1 / 255, mean=mean, std=std)

    # then each channel is (pixel * scale - mean) / std
    expected = [(value / 255 - m) / s for value, m, s in zip((100, 150, 200), mean, std, strict=True)]
    assert pixel == pytest.approx(expected, rel=1e-5)


def test_a_uint8_model_gets_raw_pixels() -> None:
    # given a uint8 model spec
    spec = raw_spec(dtype="uint8")

    # when an image is turned into a tensor
    tensor = to_tensor(Image.new("RGB", (2, 2), (100, 150, 200)), spec)

    # then the pixels are unchanged bytes
    assert tensor.dtype == np.uint8
    assert tensor[0, 0].tolist() == [100, 150, 200]


def test_a_float16_model_gets_a_float16_tensor() -> None:
    # given a float16 model spec
    # when an image is turned into a tensor
    tensor = to_tensor(Image.new("RGB", (2, 2), (100, 150, 200)), raw_spec(dtype="float16", scale=1 / 255))

    # then the dtype is float16 and the values scaled
    assert tensor.dtype == np.float16
    assert float(tensor[0, 0, 0]) == pytest.approx(100 / 255, abs=1e-3)


def test_the_image_is_resized_to_height_and_width() -> None:
    # given a 30x20 image and a model taking 4 rows of 8 columns
    # when it is turned into a tensor
    tensor = to_tensor(Image.new("RGB", (30, 20)), raw_spec(size=(4, 8), layout="NCHW"))

    # then the tensor is 3 x 4 x 8
    assert tensor.shape == (3, 4, 8)


@pytest.mark.parametrize(("resample", "expected"), [("box", 127.5), ("nearest", 255.0)])
def test_the_resize_uses_the_spec_resample_filter(resample: str, expected: float) -> None:
    # given a 2x2 grey image, half black, half white
    image = Image.new("L", (2, 2), 0)
    image.putpixel((1, 0), 255)
    image.putpixel((1, 1), 255)

    # when it is reduced to one pixel
    pixel = top_left(image, color_mode="L", size=(1, 1), resample=resample)

    # then the filter decides the value (box averages, nearest picks one)
    assert pixel == pytest.approx([expected], abs=0.6)


def test_preprocess_decodes_and_prepares_for_the_model() -> None:
    # given PNG bytes and a 16x16 NCHW RGB model spec
    spec = parse_spec(spec_dict(), "model.json")
    data = encode(Image.new("RGB", (40, 30), RED), "PNG")

    # when they are preprocessed
    tensor = preprocess(data, spec, Limits())

    # then the tensor fits the model and red is 1.0 after the default 1/255 scale
    assert tensor.shape == (3, 16, 16)
    assert tensor.dtype == np.float32
    assert tensor[:, 0, 0].tolist() == pytest.approx([1.0, 0.0, 0.0])


# --- bad input --------------------------------------------------------------------------------------------


def test_empty_bytes_are_an_invalid_image() -> None:
    # given no bytes
    # when they are decoded
    with pytest.raises(InvalidImage) as caught:
        decode_image(b"", Limits())

    # then the message says so
    assert caught.value.message == "the image is empty"
    assert caught.value.code == "invalid_image"


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_a_truncated_image_is_an_invalid_image(fmt: str) -> None:
    # given a noisy image cut in half
    data = encode(noise((64, 64)), fmt)
    truncated = data[: len(data) // 2]

    # when it is decoded
    # then it is rejected, not half-decoded
    with pytest.raises(InvalidImage, match="corrupt or truncated"):
        decode_image(truncated, Limits())


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(np.random.default_rng(3).bytes(512), id="random bytes"),
        pytest.param(b"hello, this is plain text and not an image at all", id="text"),
        pytest.param(b'{"image": "not really"}', id="json"),
        pytest.param(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, id="png signature with garbage"),
    ],
)
def test_bytes_that_are_not_an_image_are_an_invalid_image(data: bytes) -> None:
    # given bytes that are not a decodable image
    # when they are decoded
    with pytest.raises(InvalidImage) as caught:
        decode_image(data, Limits())

    # then the error is invalid_image (400)
    assert (caught.value.code, caught.value.status) == ("invalid_image", 400)


@pytest.mark.parametrize(
    ("data", "name"),
    [
        pytest.param(b"%PDF-1.7\n1 0 obj\n<< /Type /Catalog >>\nendobj\n", "PDF", id="PDF"),
        pytest.param(encode(Image.new("RGB", (16, 16), RED), "ICO"), "ICO", id="ICO"),
        pytest.param(b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg"/>', "SVG", id="SVG"),
        pytest.param(b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00avifmif1", "HEIF/AVIF", id="AVIF"),
    ],
)
def test_a_recognised_but_unsupported_format_is_an_unsupported_media_type(data: bytes, name: str) -> None:
    # given a recognisable file in a format we do not accept
    # when it is decoded
    with pytest.raises(UnsupportedMediaType) as caught:
        decode_image(data, Limits())

    # then the error is 415 and names the format
    assert (caught.value.code, caught.value.status) == ("unsupported_media_type", 415)
    assert caught.value.details["format"] == name


def test_the_format_is_sniffed_from_the_bytes() -> None:
    # given a JPEG
    data = encode(Image.new("RGB", (4, 4)), "JPEG")

    # when its format is sniffed
    # then the leading bytes decide
    assert sniff_format(data) == ("JPEG", True)
    assert sniff_format(b"%PDF-1.4") == ("PDF", False)
    assert sniff_format(b"plain") == (None, False)


# --- limits -----------------------------------------------------------------------------------------------


def test_more_bytes_than_the_limit_is_too_large() -> None:
    # given a PNG bigger than a 100-byte limit
    data = encode(noise((16, 16)), "PNG")

    # when it is decoded
    with pytest.raises(ImageTooLarge) as caught:
        decode_image(data, Limits(max_bytes=100))

    # then the message gives the limit
    assert "limit of 100 bytes" in caught.value.message
    assert caught.value.status == 413


def test_more_pixels_than_the_limit_is_too_large_and_says_how_many() -> None:
    # given a 100x100 image and a 5000-pixel limit
    data = encode(Image.new("RGB", (100, 100)), "PNG")

    # when it is decoded
    with pytest.raises(ImageTooLarge) as caught:
        decode_image(data, Limits(max_pixels=5000))

    # then the message names the pixel count and the limit
    assert "100x100 = 10000 pixels" in caught.value.message
    assert "limit of 5000 pixels" in caught.value.message


def test_a_declared_size_over_the_limit_is_rejected_before_any_pixel_is_decoded() -> None:
    # given a tiny PNG that declares 10000 x 6000 pixels but holds almost no pixel data
    data = png_header_only(10000, 6000)

    # when it is decoded
    with pytest.raises(ImageTooLarge) as caught:
        decode_image(data, Limits())

    # then the header size alone refused it (decoding would have failed as truncated instead)
    assert len(data) < 200
    assert caught.value.details["pixels"] == 60_000_000


def test_a_decompression_bomb_is_image_too_large() -> None:
    # given a tiny PNG that declares 20000 x 20000 pixels
    data = png_header_only(20000, 20000)

    # when it is decoded
    # then it is refused as too large
    with pytest.raises(ImageTooLarge):
        decode_image(data, Limits())


def test_pillows_own_bomb_guard_also_becomes_image_too_large() -> None:
    # given a declared 20000 x 20000 PNG and our own limit raised far above Pillow's
    data = png_header_only(20000, 20000)

    # when it is decoded
    # then Pillow's DecompressionBombError is reported as ImageTooLarge
    with pytest.raises(ImageTooLarge, match="too many pixels to decode safely"):
        decode_image(data, Limits(max_pixels=10**12))


def test_decoding_leaves_pillows_global_settings_alone() -> None:
    # given Pillow's global settings
    before = (Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES)

    # when a bomb, a truncated image and a good image are decoded
    for data in (png_header_only(20000, 20000), encode(noise((32, 32)), "PNG")[:300]):
        with pytest.raises(ModelrunError):
            decode_image(data, Limits())
    decode_image(encode(noise((8, 8)), "PNG"), Limits())

    # then they are unchanged
    assert before == (Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES)


def test_limits_default_when_the_environment_is_silent() -> None:
    # given no limit variables
    # when limits are read
    limits = Limits.from_env({})

    # then the defaults apply
    assert limits == Limits(max_bytes=10 * 1024 * 1024, max_pixels=50_000_000)


def test_limits_are_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # given both limit variables
    monkeypatch.setenv("MAX_IMAGE_BYTES", "2048")
    monkeypatch.setenv("MAX_IMAGE_PIXELS", "1000000")

    # when limits are read
    limits = Limits.from_env()

    # then they are used
    assert limits == Limits(max_bytes=2048, max_pixels=1_000_000)


@pytest.mark.parametrize("value", ["ten", "0", "-5", "1.5"])
def test_an_invalid_limit_fails_at_cold_start_naming_the_variable(value: str) -> None:
    # given a limit variable that is not a positive integer
    # when limits are read
    # then the variable and its value are named
    with pytest.raises(ValueError, match=rf"MAX_IMAGE_PIXELS must be a positive integer, got '{value}'"):
        Limits.from_env({"MAX_IMAGE_PIXELS": value})
