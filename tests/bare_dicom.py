"""A reference reading of DICOM files for the medical demo model (models/ct): pydicom for the file and its pixel
decoding, and the intensity pipeline done here in numpy as the standard defines it: the Modality LUT (Rescale
Slope and Intercept), the model's window (the linear VOI function of PS3.3 C.11.2.1.2.1, onto 0..255), and
MONOCHROME1 inversion after it. The rest of the model's transforms run in ``tests/bare_onnx.py``.

Like ``tests/bare_onnx.py`` it shares no code with the platform: it is what the platform's DICOM path is checked
against. Only what the demo needs is implemented (one sample per pixel, a window step first).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from numpy.typing import NDArray
from PIL import Image

from tests.bare_onnx import BareModel, apply_transforms


def modality_values(path: Path) -> tuple[list[NDArray[np.float64]], str]:
    """Each frame's Modality LUT output (stored value * slope + intercept) and the photometric interpretation.

    Raises:
        ValueError: for a file with more than one sample per pixel or a Modality LUT Sequence.
    """
    dataset = pydicom.dcmread(path)
    if int(dataset.SamplesPerPixel) != 1 or "ModalityLUTSequence" in dataset:
        raise ValueError(f"{path.name}: only one sample per pixel with a linear rescale is implemented here")
    stored = np.asarray(dataset.pixel_array, dtype=np.float64)
    frames = list(stored) if int(dataset.get("NumberOfFrames", 1)) > 1 else [stored]
    slope, intercept = float(dataset.get("RescaleSlope", 1)), float(dataset.get("RescaleIntercept", 0))
    return [frame * slope + intercept for frame in frames], str(dataset.PhotometricInterpretation)


def linear_window(values: NDArray[np.float64], center: float, width: float) -> NDArray[np.float32]:
    """The DICOM linear VOI function onto 0..255: below ``c - 0.5 - (w - 1) / 2`` is 0, above ``c - 0.5 + (w - 1) / 2``
    is 255, in between ``((x - (c - 0.5)) / (w - 1) + 0.5) * 255``."""
    scaled = ((values - (center - 0.5)) / (width - 1) + 0.5) * 255
    return np.clip(scaled, 0, 255).astype(np.float32)


def windowed_frames(path: Path, window: dict[str, Any]) -> list[NDArray[np.float32]]:
    """Each frame windowed to 0..255 (float32), MONOCHROME1 inverted after the window as it is displayed."""
    frames, photometric = modality_values(path)
    grey = [linear_window(frame, float(window["center"]), float(window["width"])) for frame in frames]
    if photometric == "MONOCHROME1":
        grey = [np.float32(255) - frame for frame in grey]
    return grey


def dicom_inputs(spec: dict[str, Any], path: Path) -> list[tuple[NDArray[np.float32], Any]]:
    """The model's input array (no batch axis) and geometry for every frame of a DICOM file.

    Raises:
        ValueError: when the model's transforms do not start with its window (after a grey ``color`` step).
    """
    steps = list(spec["transforms"])
    if steps[0] == {"op": "color", "mode": "L"}:
        steps = steps[1:]  # a windowed frame is grey already
    first, *rest = steps
    if first["op"] != "window":
        raise ValueError("this reference expects the model's transforms to start with its window")
    return [apply_transforms(Image.fromarray(frame, mode="F"), rest) for frame in windowed_frames(path, first)]


def segment_dicom(model: BareModel, path: Path) -> list[NDArray[np.uint8]]:
    """The class-index mask of every frame of a DICOM file, each at the frame's size."""
    masks = []
    for array, geometry in dicom_inputs(model.spec, path):
        (output,) = model.session.run([model.output_name], {model.input_name: array[np.newaxis]})
        masks.append(geometry.to_original_mask(np.argmax(output[0], axis=0)))
    return masks
