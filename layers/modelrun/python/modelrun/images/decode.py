"""Untrusted image bytes to a decoded image: the format sniffed from the bytes, then the format's decoder.

Decoding is defensive: the format is sniffed from the bytes (a client's content type is not trusted), the byte count
and the pixel count (read from the header, before any pixel is decoded) are checked against :class:`Limits`, and the
image is fully decoded inside a ``try`` so that a truncated or corrupt file becomes
:class:`~modelrun.errors.InvalidImage` instead of a half-black picture. Raster formats are decoded by
:mod:`modelrun.images.raster`; DICOM Part 10 files, recognised by ``DICM`` after their 128-byte preamble, by
:mod:`modelrun.images.dicom` (which imports pydicom only then).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from modelrun.errors import ImageTooLarge, InvalidImage, UnsupportedMediaType
from modelrun.images.dicom import decode_dicom, is_dicom
from modelrun.images.image import DecodedImage
from modelrun.images.limits import DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS, Limits
from modelrun.images.raster import decode_raster

__all__ = ["DEFAULT_MAX_BYTES", "DEFAULT_MAX_PIXELS", "SUPPORTED_FORMATS", "Limits", "decode_image", "sniff_format"]

SUPPORTED_FORMATS: Final = ("PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP", "DICOM")
_SUPPORTED_TEXT: Final = "PNG, JPEG, GIF, BMP, TIFF, WebP or DICOM"


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


def decode_image(data: bytes, limits: Limits, frames: str = "first") -> DecodedImage:
    """Decode untrusted bytes: a raster image upright and fully loaded (first frame of an animation), or the frames of
    a DICOM file that the frame policy selects.

    Args:
        data: the untrusted bytes.
        limits: the byte and pixel limits.
        frames: the model's frame policy for multi-frame DICOM (``first``, ``middle`` or ``all``).

    Raises:
        InvalidImage: empty, not an image, corrupt or truncated.
        UnsupportedMediaType: a recognised image (or document) format other than PNG/JPEG/GIF/BMP/TIFF/WebP/DICOM.
        ImageTooLarge: more than ``limits.max_bytes`` bytes or ``limits.max_pixels`` pixels.
        InvalidDicom, DicomWithoutPixelData, UnsupportedTransferSyntax: as
            :func:`~modelrun.images.dicom.decode_dicom`.
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
    if fmt == "DICOM":
        return decode_dicom(data, limits, frames)
    if fmt is None:
        raise InvalidImage(f"the data is not a recognised image; send {_SUPPORTED_TEXT}")
    if not supported:
        raise UnsupportedMediaType(
            f"the {fmt} format is not supported; send {_SUPPORTED_TEXT}", format=fmt, supported=list(SUPPORTED_FORMATS)
        )

    return DecodedImage.single(decode_raster(data, fmt, limits))


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
    # First: a DICOM preamble may itself hold another format's header (a TIFF one, in dual-personality files).
    ("DICOM", is_dicom),
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
