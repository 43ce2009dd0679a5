"""Synthetic body CT phantoms for the medical demo (models/ct, samples/ct): Hounsfield units with exact labels.

A phantom is a volume made of ellipsoids, each with one CT number (HU), painted in order: an elliptic body of
fat (about -100 HU) around soft tissue (35..55 HU), a liver-like organ (55..70 HU) holding 0 to 3 hypodense
lesions (40..65 HU darker than the organ, so -10..30 HU), a contrast-filled aorta (120..200 HU), bowel gas
(-950..-700 HU), a vertebra (a cortical shell of 900..1400 HU around cancellous bone of 260..420 HU, and its
spinous process), ribs (600..1200 HU) and, outside the body, the scanner table (-250..-100 HU) in air
(-1000 HU). An axial slice at height ``z`` cuts each ellipsoid in an ellipse; a pixel belongs to a shape when its
centre does, which gives the class mask exactly. The HU image is the painted slice smoothed a little (the scanner's
blur), plus smoothed Gaussian noise, rounded to whole HU and clipped to the 12-bit range stored in the DICOM files.

Classes: 0 background (air and table), 1 body (fat, soft tissue, organ, aorta, gas), 2 bone, 3 lesion. The
demo model sees them through the soft-tissue window (centre 40, width 400 HU): bone is above the window, the
aorta inside it, and a lesion's 40 HU of contrast is about 26 of its 255 grey levels; across the full 12-bit range
it would be 2.5.

Numpy only (no torch), so the unit tests can rebuild a phantom and compare the committed files with it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

LABELS = ["background", "body", "bone", "lesion"]
BACKGROUND, BODY, BONE, LESION = range(4)
SIDE = 128  # pixels a side of every slice
PIXEL_SPACING_MM = 3.0
Z_UNIT_MM = 5.0  # one unit of z
WINDOW_CENTER = 40.0
WINDOW_WIDTH = 400.0
AIR_HU = -1000.0
RESCALE_INTERCEPT = -1024  # stored value = HU + 1024, unsigned 12 bits in 16
STORED_MAX = 4095
LOWEST_HU = RESCALE_INTERCEPT
HIGHEST_HU = STORED_MAX + RESCALE_INTERCEPT


@dataclass(frozen=True)
class Ellipsoid:
    """``centre`` and ``radii`` as (x, y, z): x and y in pixels (column, row), z in slices; ``angle`` turns the
    x and y axes in the slice plane (radians)."""

    centre: tuple[float, float, float]
    radii: tuple[float, float, float]
    angle: float = 0.0

    def section(self, z: float, rows: NDArray[np.float64], cols: NDArray[np.float64]) -> NDArray[np.bool_]:
        """The pixels whose centre lies inside the ellipse this ellipsoid leaves on the slice at ``z``."""
        depth = (z - self.centre[2]) / self.radii[2]
        if abs(depth) >= 1:
            return np.zeros(rows.shape, dtype=bool)
        shrink = np.sqrt(1 - depth * depth)
        dx, dy = cols - self.centre[0], rows - self.centre[1]
        along = (dx * np.cos(self.angle) + dy * np.sin(self.angle)) / (self.radii[0] * shrink)
        across = (-dx * np.sin(self.angle) + dy * np.cos(self.angle)) / (self.radii[1] * shrink)
        inside: NDArray[np.bool_] = along * along + across * across <= 1
        return inside


@dataclass(frozen=True)
class Part:
    """One painted shape: its HU, the class it gives its pixels (None keeps the class beneath, as an organ stays
    body), and an optional ellipsoid it is clipped to (a lesion stays inside its organ, bone inside the body)."""

    shape: Ellipsoid
    hu: float
    label: int | None
    within: Ellipsoid | None = None


@dataclass(frozen=True)
class Phantom:
    parts: tuple[Part, ...]
    noise_hu: float  # standard deviation of the noise after smoothing
    noise_seed: int

    def slice(self, z: float) -> tuple[NDArray[np.int16], NDArray[np.uint8]]:
        """The axial slice at ``z``: whole HU (``SIDE`` x ``SIDE``, within the stored range) and its class mask."""
        rows, cols = (axis.astype(np.float64) for axis in np.mgrid[0:SIDE, 0:SIDE])
        hu = np.full((SIDE, SIDE), AIR_HU)
        mask = np.zeros((SIDE, SIDE), dtype=np.uint8)
        for part in self.parts:
            region = part.shape.section(z, rows, cols)
            if part.within is not None:
                region &= part.within.section(z, rows, cols)
            hu[region] = part.hu
            if part.label is not None:
                mask[region] = part.label
        rng = np.random.default_rng([self.noise_seed, round(z * 1000) + 1_000_000])
        noise = smooth(rng.normal(0.0, 1.0, size=(SIDE, SIDE)))
        noise *= self.noise_hu / max(float(noise.std()), 1e-9)
        values = np.clip(np.rint(smooth(hu) + noise), LOWEST_HU, HIGHEST_HU)
        return values.astype(np.int16), mask


def smooth(image: NDArray[np.float64]) -> NDArray[np.float64]:
    """A 3x3 binomial blur (weights 1 2 1 each way), edges repeated."""
    padded = np.pad(image, 1, mode="edge")
    rows = padded[:-2] + 2 * padded[1:-1] + padded[2:]
    blurred: NDArray[np.float64] = (rows[:, :-2] + 2 * rows[:, 1:-1] + rows[:, 2:]) / 16
    return blurred


def random_phantom(rng: np.random.Generator, lesions: int | None = None) -> Phantom:
    """A body phantom centred near slice ``z = 0`` (its organ spans a few slices either side).

    Args:
        rng: the random stream every size, place and HU is drawn from.
        lesions: how many lesions the organ holds; None draws 0 to 3.
    """
    uniform = rng.uniform
    far = 1e6  # along z, the body, bone and table go on for ever
    cx, cy = 64 + uniform(-4, 4), 60 + uniform(-4, 4)
    a, b = uniform(44, 57), uniform(32, 44)
    fat = uniform(2, 6)
    body = Ellipsoid((cx, cy, 0), (a, b, far), uniform(-0.08, 0.08))
    inner = Ellipsoid((cx, cy, 0), (a - fat, b - fat, far), body.angle)
    parts = [Part(body, uniform(-110, -80), BODY), Part(inner, uniform(35, 55), None)]

    for _ in range(int(rng.integers(0, 3))):  # bowel gas, under the organ if they meet
        angle, reach = uniform(0, 2 * np.pi), uniform(0.2, 0.6)
        centre = (cx + reach * (a - fat) * np.cos(angle), cy + reach * (b - fat) * np.sin(angle), uniform(-6, 6))
        parts.append(Part(Ellipsoid(centre, (uniform(2, 5), uniform(2, 5), uniform(1, 3))), uniform(-950, -700), None))

    organ_hu = uniform(55, 70)
    organ = Ellipsoid(
        (cx - a * uniform(0.2, 0.4), cy - b * uniform(0.0, 0.25), uniform(-1, 1)),
        (a * uniform(0.3, 0.45), b * uniform(0.35, 0.5), uniform(4, 9)),
        uniform(-0.5, 0.5),
    )
    parts.append(Part(organ, organ_hu, None, within=inner))
    for _ in range(int(rng.integers(0, 4)) if lesions is None else lesions):
        spot = uniform(-0.55, 0.55, size=3) * np.array(organ.radii)
        centre = (organ.centre[0] + spot[0], organ.centre[1] + spot[1], organ.centre[2] + spot[2])
        radii = (uniform(3, 8), uniform(3, 8), uniform(1.2, 2.5))
        parts.append(Part(Ellipsoid(centre, radii, uniform(0, np.pi)), organ_hu - uniform(40, 65), LESION, organ))

    spine_r = b * uniform(0.2, 0.26)
    spine = (cx + uniform(-2, 2), cy + b * uniform(0.42, 0.5))
    aorta = (spine[0] + uniform(-8, 8), spine[1] - spine_r - uniform(5, 8))
    parts.append(Part(Ellipsoid((*aorta, 0), (uniform(5, 7.5),) * 2 + (far,)), uniform(120, 200), BODY))
    shell = uniform(1.5, 2.5)
    parts.append(Part(Ellipsoid((*spine, 0), (spine_r, spine_r * 0.85, far)), uniform(900, 1400), BONE, body))
    cancellous = Ellipsoid((*spine, 0), (spine_r - shell, spine_r * 0.85 - shell, far))
    parts.append(Part(cancellous, uniform(260, 420), BONE, body))
    process = (spine[0], spine[1] + spine_r * 0.85 + uniform(3, 5))
    parts.append(Part(Ellipsoid((*process, 0), (uniform(2, 3), uniform(4, 6), far)), uniform(900, 1400), BONE, body))
    for _ in range(int(rng.integers(6, 11))):  # ribs, just inside the fat, anywhere but the front midline
        angle = uniform(-np.pi / 2 + 0.5, 3 * np.pi / 2 - 0.5)
        depth = fat + uniform(2, 4)
        centre = (cx + (a - depth) * np.cos(angle), cy + (b - depth) * np.sin(angle), 0)
        parts.append(
            Part(Ellipsoid(centre, (uniform(1.8, 3.2), uniform(1.8, 3.2), far)), uniform(600, 1200), BONE, body)
        )

    table = Ellipsoid((cx, cy + b + uniform(6, 9), 0), (uniform(45, 60), uniform(1.5, 2.5), far))
    parts.append(Part(table, uniform(-250, -100), BACKGROUND))
    return Phantom(tuple(parts), noise_hu=uniform(6, 15), noise_seed=int(rng.integers(2**31)))


def window(hu: NDArray[np.floating], center: float = WINDOW_CENTER, width: float = WINDOW_WIDTH) -> NDArray[np.float32]:
    """The DICOM linear VOI function (PS3.3 C.11.2.1.2.1) onto 0..255, in float32: what the model is trained on."""
    values = np.asarray(hu, dtype=np.float64)
    low, high = center - 0.5 - (width - 1) / 2, center - 0.5 + (width - 1) / 2
    scaled = ((values - (center - 0.5)) / (width - 1) + 0.5) * 255
    return np.where(values <= low, 0.0, np.where(values > high, 255.0, scaled)).astype(np.float32)
