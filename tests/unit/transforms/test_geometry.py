"""Geometry: boxes and masks in input pixels mapped back onto the original image."""

from __future__ import annotations

import numpy as np
import pytest

from modelrun.transforms import Geometry


def letterboxed() -> Geometry:
    # A 200x100 (h x w) image letterboxed into 64x64: scale 0.32, 16 px of padding left and right.
    return Geometry.identity(200, 100).then((0.32, 0.32), (0.0, 16.0), (64, 64))


def test_a_box_in_a_letterboxed_input_maps_back_to_original_pixels() -> None:
    box = letterboxed().to_original_box([16.0, 0.0, 32.0, 32.0])
    assert box == pytest.approx([0.0, 0.0, 50.0, 100.0])


def test_a_box_reaching_into_the_padding_is_clipped_to_the_image() -> None:
    box = letterboxed().to_original_box([0.0, -5.0, 60.0, 70.0])
    assert box == pytest.approx([0.0, 0.0, 100.0, 200.0])


def test_steps_compose_in_order() -> None:
    # Resize 100x100 -> 50x50, then crop 10 px off the top and the left.
    geometry = Geometry.identity(100, 100).then((0.5, 0.5), (0.0, 0.0), (50, 50)).then((1, 1), (-10, -10), (40, 40))
    assert geometry.scale == (0.5, 0.5)
    assert geometry.offset == (-10, -10)
    assert geometry.to_original_box([0, 0, 40, 40]) == pytest.approx([20, 20, 100, 100])


def test_a_mask_maps_back_with_nearest_neighbour_and_background_outside_the_input() -> None:
    # Given a 4x4 image cropped to its central 2x2 (offset -1, -1).
    geometry = Geometry.identity(4, 4).then((1, 1), (-1, -1), (2, 2))
    mask = np.array([[1, 2], [3, 4]], dtype=np.uint8)
    # Then the centre carries the mask and the cropped-away border is background.
    expected = np.array([[0, 0, 0, 0], [0, 1, 2, 0], [0, 3, 4, 0], [0, 0, 0, 0]], dtype=np.uint8)
    np.testing.assert_array_equal(geometry.to_original_mask(mask), expected)


def test_a_mask_of_a_downscaled_input_is_upsampled_to_the_original_size() -> None:
    geometry = Geometry.identity(4, 6).then((0.5, 0.5), (0, 0), (2, 3))
    mask = np.array([[0, 1, 2], [3, 4, 5]], dtype=np.uint8)
    out = geometry.to_original_mask(mask)
    assert out.shape == (4, 6)
    np.testing.assert_array_equal(out[0], [0, 0, 1, 1, 2, 2])
    np.testing.assert_array_equal(out[3], [3, 3, 4, 4, 5, 5])


def test_a_mask_that_is_not_2d_is_refused() -> None:
    with pytest.raises(ValueError, match="2-D"):
        Geometry.identity(2, 2).to_original_mask(np.zeros((1, 2, 2)))
