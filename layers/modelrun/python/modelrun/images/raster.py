"""Raster image bytes (PNG, JPEG, GIF, BMP, TIFF, WebP) to an upright, fully loaded Pillow image.

No Pillow global is changed: ``ImageFile.LOAD_TRUNCATED_IMAGES`` stays False and ``Image.MAX_IMAGE_PIXELS``
keeps its value (both are process-wide). Instead our own pixel limit is checked on the header size right after
``Image.open``; Pillow's decompression-bomb guard stays in place too (it fires inside ``Image.open`` for more
than twice ``Image.MAX_IMAGE_PIXELS``, also before any pixel is decoded), and its error, or its warning when a
warnings filter turns it into an exception, becomes ImageTooLarge.
"""

from __future__ import annotations

import contextlib
import io
import struct
from typing import Final

from PIL import Image, ImageOps

from modelrun.errors import ImageTooLarge, InvalidImage
from modelrun.images.limits import Limits, check_pixels

# Everything Pillow's decoders raise on hostile or damaged input; to the caller they all mean "invalid image".
_DECODE_ERRORS: Final = (OSError, SyntaxError, ValueError, EOFError, IndexError, KeyError, TypeError, struct.error)


def decode_raster(data: bytes, fmt: str, limits: Limits) -> Image.Image:
    """Decode sniffed raster bytes into an upright, fully loaded image (first frame of an animation).

    Args:
        data: the bytes, already sniffed as ``fmt`` and within ``limits.max_bytes``.
        fmt: the Pillow format name :func:`~modelrun.images.decode.sniff_format` recognised.
        limits: the pixel limit, checked on the header before any pixel is decoded.

    Raises:
        InvalidImage: corrupt or truncated.
        ImageTooLarge: more than ``limits.max_pixels`` pixels.
    """
    try:
        image = Image.open(io.BytesIO(data), formats=[fmt])
        check_pixels(image.size, limits)
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


def _upright(image: Image.Image) -> Image.Image:
    """Apply the EXIF orientation; a damaged EXIF block leaves the image as stored rather than rejecting it."""
    with contextlib.suppress(*_DECODE_ERRORS):
        ImageOps.exif_transpose(image, in_place=True)
    return image


def _format_label(fmt: str) -> str:
    return "WebP" if fmt == "WEBP" else fmt
