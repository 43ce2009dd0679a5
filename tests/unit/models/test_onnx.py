"""LoadedModel on graphs with dynamic and fixed dims: grouping by shape in infer, and the load-time graph check."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from PIL import Image

from modelrun.errors import ModelConfigError
from modelrun.models.onnx import LoadedModel
from tests.unit.conftest import IdentityModel


def spy_on_runs(model: LoadedModel, monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, ...]]:
    """Record the input shape of every session.run call."""
    shapes: list[tuple[int, ...]] = []
    original = model.session.run

    def run(names: list[str], feed: dict[str, np.ndarray], *args: Any, **kwargs: Any) -> Any:
        shapes.append(tuple(next(iter(feed.values())).shape))
        return original(names, feed, *args, **kwargs)

    monkeypatch.setattr(model.session, "run", run)
    return shapes


def test_images_of_two_sizes_run_in_groups_of_equal_shape_on_a_dynamic_graph(
    identity_model: IdentityModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given a graph with symbolic height and width and transforms that bound the longer side to 16
    model = identity_model([{"op": "resize", "longer": 16}], dims=["N", 3, "H", "W"])
    images = [
        Image.new("RGB", size, colour) for size, colour in [((32, 16), "red"), ((16, 32), "blue"), ((64, 32), "lime")]
    ]
    feeds = [model.prepare(image)[0] for image in images]
    runs = spy_on_runs(model, monkeypatch)

    # when the three images are inferred in one call
    outputs = model.infer(feeds)

    # then the two wide ones ran together and the tall one alone, never padded, each output its own input
    assert sorted(runs) == [(1, 3, 16, 8), (2, 3, 8, 16)]
    assert [result["out"].shape for result in outputs] == [(3, 8, 16), (3, 16, 8), (3, 8, 16)]
    for result, feed in zip(outputs, feeds, strict=True):
        np.testing.assert_array_equal(result["out"], feed["images"])


def test_a_fixed_batch_of_two_runs_in_chunks_and_drops_the_filler(
    identity_model: IdentityModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given a graph with a fixed batch of 2
    model = identity_model([{"op": "resize", "size": [4, 4]}], dims=[2, 3, 4, 4])
    feeds = [model.prepare(Image.new("RGB", (4, 4), (value, 0, 0)))[0] for value in (10, 20, 30)]
    runs = spy_on_runs(model, monkeypatch)

    # when three images are inferred
    outputs = model.infer(feeds)

    # then two full chunks ran and three outputs came back, in order
    assert runs == [(2, 3, 4, 4), (2, 3, 4, 4)]
    assert [float(result["out"][0, 0, 0]) for result in outputs] == [10.0, 20.0, 30.0]


def test_a_fixed_batch_of_one_runs_image_by_image(
    identity_model: IdentityModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given a graph with a fixed batch of 1
    model = identity_model([{"op": "resize", "size": [2, 2]}], dims=[1, 3, 2, 2])
    feeds = [model.prepare(Image.new("RGB", (5, 5), "white"))[0] for _ in range(3)]
    runs = spy_on_runs(model, monkeypatch)

    # when three images are inferred
    outputs = model.infer(feeds)

    # then it ran three times
    assert runs == [(1, 3, 2, 2)] * 3
    assert len(outputs) == 3


@pytest.mark.parametrize(
    ("steps", "dims", "field", "fragment"),
    [
        pytest.param(
            [{"op": "resize", "size": [10, 10]}],
            ["N", 3, 8, 8],
            "transforms[0].size",
            '[10, 10] does not match the graph input "images" shape ["N", 3, 8, 8]',
            id="static size differs",
        ),
        pytest.param(
            [{"op": "resize", "shorter": 8}, {"op": "center_crop", "size": [8, 9]}],
            ["N", 3, 8, 8],
            "transforms[1].size",
            "[8, 9] does not match",
            id="crop size differs",
        ),
        pytest.param(
            [{"op": "resize", "longer": 8}], ["N", 3, 8, 8], "transforms", "varying height", id="variable for static"
        ),
        pytest.param(
            [{"op": "resize", "shorter": 8}], ["N", 3, "H", "W"], "transforms", "must fix or bound", id="unbounded"
        ),
        pytest.param([], ["N", 3, "H", "W"], "transforms", "must fix or bound", id="no size step"),
        pytest.param(
            [{"op": "color", "mode": "L"}, {"op": "resize", "size": [8, 8]}],
            ["N", 3, 8, 8],
            "transforms[0].mode",
            '"L" (1 channel(s))',
            id="channels",
        ),
        pytest.param(
            [{"op": "resize", "size": [8, 8]}, {"op": "dtype", "dtype": "uint8"}],
            ["N", 3, 8, 8],
            "transforms[1].dtype",
            "type tensor(float)",
            id="dtype",
        ),
        pytest.param(
            [{"op": "resize", "size": [8, 8]}, {"op": "layout", "layout": "NHWC"}],
            ["N", 3, 8, 8],
            "transforms[1].layout",
            'it looks like "NCHW"',
            id="layout",
        ),
        pytest.param([{"op": "resize", "size": [8, 8]}], ["N", 3, 8], "transforms", "needs a rank-4 input", id="rank"),
    ],
)
def test_transforms_that_disagree_with_the_graph_fail_at_load_naming_the_step(
    identity_model: IdentityModel, steps: list[dict[str, Any]], dims: list[int | str], field: str, fragment: str
) -> None:
    # given transforms that do not fit the graph input
    # when the model is loaded
    with pytest.raises(ModelConfigError) as caught:
        identity_model(steps, dims=dims)

    # then the error names the step's field and says how they disagree
    assert caught.value.details["field"] == field
    assert f"model.json: {field} " in caught.value.message
    assert fragment in caught.value.message


def test_a_static_size_produced_by_the_transforms_loads_on_a_graph_with_symbolic_dims(
    identity_model: IdentityModel,
) -> None:
    # given a letterbox to 8x8 and a graph taking any height and width
    model = identity_model([{"op": "letterbox", "size": [8, 8]}], dims=["N", 3, "H", "W"])

    # when an image is prepared
    feeds, _ = model.prepare(Image.new("RGB", (30, 10), "white"))

    # then the input is the letterbox's size
    assert feeds["images"].shape == (3, 8, 8)
