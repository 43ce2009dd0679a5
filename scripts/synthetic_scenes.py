"""Drawing helpers shared by the synthetic demo datasets (scripts/train_detection_model.py and
scripts/train_segmentation_model.py): a textured background that PNG still compresses well, and file writing.

The texture is a smooth brightness ramp plus coarse blocky noise (cells of a few pixels, each one flat): it
makes the task less trivial than a flat background while keeping the sample PNGs small, which fine per-pixel
noise would not.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image


def textured_background(
    rng: np.random.Generator, height: int, width: int, base: NDArray[np.float64], amplitude: float
) -> NDArray[np.float64]:
    """A ``(height, width, channels)`` float image around ``base`` (one value per channel, 0..255).

    A linear ramp in a random direction (up to ``amplitude`` either way) and blocky noise of 3 to 6 pixel
    cells (standard deviation ``amplitude / 2``), the same in every channel so the tint stays ``base``.
    """
    rows, cols = np.mgrid[0:height, 0:width]
    angle = rng.uniform(0, 2 * np.pi)
    ramp = (np.cos(angle) * (cols / width - 0.5) + np.sin(angle) * (rows / height - 0.5)) * 2 * amplitude
    cell = int(rng.integers(3, 7))
    coarse = rng.normal(0, amplitude / 2, size=(-(-height // cell), -(-width // cell)))
    blocks = np.repeat(np.repeat(coarse, cell, axis=0), cell, axis=1)[:height, :width]
    shading = ramp + blocks
    return np.clip(base[np.newaxis, np.newaxis, :] + shading[:, :, np.newaxis], 0, 255)


def png_bytes(image: Image.Image) -> bytes:
    """PNG with no metadata chunks, so a rerun writes the same bytes."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def replace_samples(folder: Path, files: dict[str, bytes], pattern: str) -> None:
    """Write ``files`` into ``folder``, first removing files matching ``pattern`` that are not among them."""
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob(pattern):
        if stale.name not in files:
            stale.unlink()
    for name, content in files.items():
        (folder / name).write_bytes(content)


def json_text(document: Any) -> str:
    return json.dumps(document, indent=2) + "\n"
