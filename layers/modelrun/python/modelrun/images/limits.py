"""Size limits for one uploaded image, and the pixel-count check every decoder runs on the header."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from modelrun.errors import ImageTooLarge

DEFAULT_MAX_BYTES: Final = 10 * 1024 * 1024
DEFAULT_MAX_PIXELS: Final = 50_000_000


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


def check_pixels(size: tuple[int, int], limits: Limits) -> None:
    """Reject an image by its header size, before its pixels are decoded.

    Raises:
        ImageTooLarge: ``width * height`` is over ``limits.max_pixels``.
    """
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
