"""Untrusted image bytes to a decoded, upright Pillow image.

Decoding is defensive: the format is sniffed from the bytes (a client's content type is not trusted), the
byte count and the pixel count (read from the header, before any pixel is decoded) are checked against
:class:`Limits`, and the image is fully decoded inside a ``try`` so that a truncated or corrupt file becomes
:class:`~modelrun.errors.InvalidImage` instead of a half-black picture.

No Pillow global is changed: ``ImageFile.LOAD_TRUNCATED_IMAGES`` stays False and ``Image.MAX_IMAGE_PIXELS``
keeps its value (both are process-wide). Instead our own pixel limit is checked on the header size right after
``Image.open``; Pillow's decompression-bomb guard stays in place too (it fires inside ``Image.open`` for more
than twice ``Image.MAX_IMAGE_PIXELS``, also before any pixel is decoded), and its error, or its warning when a
warnings filter turns it into an exception, becomes ImageTooLarge.
"""

from __future__ import annotations

import contextlib
import io
import os
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final

from PIL import Image, ImageOps

from modelrun.errors import ImageTooLarge, InvalidImage, UnsupportedMediaType

DEFAULT_MAX_BYTES: Final = 10 * 1024 * 1024
DEFAULT_MAX_PIXELS: Final = 50_000_000

SUPPORTED_FORMATS: Final = ("PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP")
_SUPPORTED_TEXT: Final = "PNG, JPEG, GIF, BMP, TIFF or WebP"


# Everything Pillow's decoders raise on hostile or damaged input; to the caller they all mean "invalid image".
_DECODE_ERRORS: Final = (OSError, SyntaxError, ValueError, EOFError, IndexError, KeyError, TypeError, struct.error)


@dataclass(frozen=True, slots=True)
class Limits:
    """Size limits for one uploaded image."""

    max_bytes: int = DEFAULT_MAX_BYTES
    max_pixels: int = DEFAULT_MAX_PIXELS

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Limits:
        """Read ``MAX_IMAGE_BYTES`` and ``MAX_IMAGE_PIXELS`` (positive integers; unset means the default).

        Raises:
            ValueError: a variable is set but is not a positive integer (fails the cold start).
        """
        env = os.environ if environ is None else environ
        return cls(
            max_bytes=_positive_int(env, "MAX_IMAGE_BYTES", DEFAULT_MAX_BYTES),
            max_pixels=_positive_int(env, "MAX_IMAGE_PIXELS", DEFAULT_MAX_PIXELS),
        )


def sniff_format(data: bytes) -> tuple[str | None, bool]:
    """Recognise an image format from its leading bytes.

    Returns:
        ``(format, supported)``: a Pillow format name and True for the accepted formats, a name and False for
        a recognised format we do not accept, ``(None, False)`` for anything else.
    """
    for name, matches in _SUPPORTED_SIGNATURES:
        if matches(data):
            return name, True
    for name, matches in _OTHER_SIGNATURES:
        if matches(data):
            return name, False
    return None, False


def decode_image(data: bytes, limits: Limits) -> Image.Image:
    """Decode untrusted bytes into an upright, fully loaded image (first frame of an animation).

    Raises:
        InvalidImage: empty, not an image, corrupt or truncated.
        UnsupportedMediaType: a recognised image (or document) format other than PNG/JPEG/GIF/BMP/TIFF/WebP.
        ImageTooLarge: more than ``limits.max_bytes`` bytes or ``limits.max_pixels`` pixels.
    """
    if not data:
        raise InvalidImage("the image is empty")
    if len(data) > limits.max_bytes:
        raise ImageTooLarge(
            f"the image is {len(data)} bytes, over the limit of {limits.max_bytes} bytes; send a smaller image",
            size_bytes=len(data),
            max_bytes=limits.max_bytes,
        )
    fmt, supported = sniff_format(data)
    if fmt is None:
        raise InvalidImage(f"the data is not a recognised image; send {_SUPPORTED_TEXT}")
    if not supported:
        raise UnsupportedMediaType(
            f"the {fmt} format is not supported; send {_SUPPORTED_TEXT}", format=fmt, supported=list(SUPPORTED_FORMATS)
        )

    try:
        image = Image.open(io.BytesIO(data), formats=[fmt])
        _check_pixels(image.size, limits)
        image.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageTooLarge(
            f"the image has too many pixels to decode safely ({exc}); send a smaller image",
            max_pixels=limits.max_pixels,
        ) from exc
    except _DECODE_ERRORS as exc:
        raise InvalidImage(
            f"the {_format_label(fmt)} image is corrupt or truncated and cannot be decoded", format=fmt
        ) from exc
    return _upright(image)


def _check_pixels(size: tuple[int, int], limits: Limits) -> None:
    """Reject an image by its header size, before its pixels are decoded."""
    width, height = size
    pixels = width * height
    if pixels > limits.max_pixels:
        raise ImageTooLarge(
            f"the image is {width}x{height} = {pixels} pixels, over the limit of {limits.max_pixels} pixels; "
            "send a smaller image",
            width=width,
            height=height,
            pixels=pixels,
            max_pixels=limits.max_pixels,
        )


def _upright(image: Image.Image) -> Image.Image:
    """Apply the EXIF orientation; a damaged EXIF block leaves the image as stored rather than rejecting it."""
    with contextlib.suppress(*_DECODE_ERRORS):
        ImageOps.exif_transpose(image, in_place=True)
    return image


def _positive_int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        value = 0
    if value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {raw!r}")
    return value


def _format_label(fmt: str) -> str:
    return "WebP" if fmt == "WEBP" else fmt


def _starts(*prefixes: bytes) -> Callable[[bytes], bool]:
    return lambda data: data.startswith(prefixes)


def _is_webp(data: bytes) -> bool:
    return data[:4] == b"RIFF" and data[8:12] == b"WEBP"


def _is_iso_media(data: bytes) -> bool:
    """HEIC/HEIF/AVIF: an ISO base media ``ftyp`` box with an image brand."""
    return data[4:8] == b"ftyp" and data[8:12] in (b"heic", b"heix", b"hevc", b"mif1", b"msf1", b"avif", b"avis")


def _is_svg(data: bytes) -> bool:
    head = data[:1024].lstrip().lower()
    return head.startswith((b"<svg", b"<?xml")) and b"<svg" in head


_SUPPORTED_SIGNATURES: Final[tuple[tuple[str, Callable[[bytes], bool]], ...]] = (
    ("PNG", _starts(b"\x89PNG\r\n\x1a\n")),
    ("JPEG", _starts(b"\xff\xd8\xff")),
    ("GIF", _starts(b"GIF87a", b"GIF89a")),
    ("BMP", _starts(b"BM")),
    ("TIFF", _starts(b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")),
    ("WEBP", _is_webp),
)

_OTHER_SIGNATURES: Final[tuple[tuple[str, Callable[[bytes], bool]], ...]] = (
    ("PDF", _starts(b"%PDF-")),
    ("PostScript", _starts(b"%!PS", b"\xc5\xd0\xd3\xc6")),
    ("ICO", _starts(b"\x00\x00\x01\x00")),
    ("CUR", _starts(b"\x00\x00\x02\x00")),
    ("PSD", _starts(b"8BPS")),
    ("ICNS", _starts(b"icns")),
    ("DDS", _starts(b"DDS ")),
    ("JPEG 2000", _starts(b"\x00\x00\x00\x0cjP  \r\n\x87\n", b"\xffO\xffQ")),
    ("JPEG XL", _starts(b"\xff\x0a", b"\x00\x00\x00\x0cJXL \r\n\x87\n")),
    ("HEIF/AVIF", _is_iso_media),
    ("QOI", _starts(b"qoif")),
    ("XCF", _starts(b"gimp xcf")),
    ("SVG", _is_svg),
)
