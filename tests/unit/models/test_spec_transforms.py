"""model.json's task, transforms and code: validation naming the field path, defaults, and the dict form."""

from __future__ import annotations

import json
from typing import Any

import pytest

from modelrun.errors import ModelConfigError
from modelrun.models.spec import parse_spec
from modelrun.transforms.steps import CenterCrop, Color, Letterbox, Normalize, Resize
from tests.modelfactory import spec_dict

SOURCE = "/models/tiny/1/model.json"

IMAGENET = [
    {"op": "color", "mode": "RGB"},
    {"op": "resize", "shorter": 256},
    {"op": "center_crop", "size": [224, 224]},
    {"op": "normalize", "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]},
]


def with_transforms(transforms: Any, **changes: Any) -> dict[str, Any]:
    document = spec_dict()
    document["input"] = {"name": "image"}
    document["transforms"] = transforms
    document.update(changes)
    return document


def test_transforms_parse_into_typed_steps_with_defaults() -> None:
    # given the ImageNet recipe
    spec = parse_spec(with_transforms(IMAGENET), SOURCE)

    # then each step is typed, defaults filled in (bilinear, 1/255, fill 0), and the task is classification
    assert spec.task == "classification"
    assert spec.input_name == "image"
    assert spec.input is None
    assert spec.transforms == (
        Color("RGB"),
        Resize(shorter=256, resample="bilinear"),
        CenterCrop(size=(224, 224), fill=(0.0, 0.0, 0.0)),
        Normalize(scale=1 / 255, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)),
    )


def test_a_letterbox_fill_given_once_applies_to_every_channel() -> None:
    # given a YOLO-style letterbox
    spec = parse_spec(with_transforms([{"op": "letterbox", "size": [640, 640], "fill": 114}]), SOURCE)

    # then the fill is one value per channel and the letterbox is centred and may scale up
    assert spec.transforms == (Letterbox(size=(640, 640), fill=(114.0, 114.0, 114.0)),)


def test_the_flat_input_shorthand_expands_to_the_equivalent_transforms() -> None:
    # given today's flat input section
    spec = parse_spec(spec_dict(), SOURCE)

    # when it is shown as a dict
    shown = spec.to_dict()

    # then it is the steps it stands for
    assert shown["input"] == {"name": "image"}
    assert shown["transforms"] == [
        {"op": "color", "mode": "RGB"},
        {"op": "resize", "size": [16, 16], "resample": "bilinear"},
        {"op": "normalize", "scale": 1 / 255, "mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0]},
        {"op": "dtype", "dtype": "float32"},
        {"op": "layout", "layout": "NCHW"},
    ]
    assert shown["task"] == "classification"
    assert shown["output"] == {"name": "probabilities", "type": "probabilities"}


@pytest.mark.parametrize(
    "document",
    [
        pytest.param(with_transforms(IMAGENET), id="classification"),
        pytest.param(
            with_transforms(
                [{"op": "letterbox", "size": [64, 64]}],
                task="detection",
                output={"format": "yolo", "name": "output0", "layout": "features_first"},
            ),
            id="detection",
        ),
        pytest.param(
            with_transforms(
                [{"op": "pad_to_multiple", "multiple": 32, "align": "center", "fill": [1, 2, 3]}],
                task="segmentation",
                output={"name": "masks", "type": "class_scores", "layout": "NCHW"},
            ),
            id="segmentation",
        ),
        pytest.param(
            with_transforms(
                [{"op": "resize", "size": [8, 8], "keep_aspect": True}],
                task="multilabel",
                output={"name": "scores", "type": "logits", "thresholds": {"red": 0.3}},
                code="transforms.py",
            ),
            id="multilabel with code",
        ),
    ],
)
def test_the_dict_form_parses_back_to_the_same_spec(document: dict[str, Any]) -> None:
    # given a parsed spec of some task
    spec = parse_spec(document, SOURCE)

    # when its dict form is parsed again
    again = parse_spec(json.loads(json.dumps(spec.to_dict())), SOURCE)

    # then it is the same spec
    assert again == spec
    if spec.task != "classification":
        assert "top_k" not in spec.to_dict()


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        pytest.param({"transforms": {"op": "resize"}}, "transforms", id="not a list"),
        pytest.param({"transforms": ["resize"]}, "transforms[0]", id="step not an object"),
        pytest.param({"transforms": [{"op": "blur"}]}, "transforms[0].op", id="unknown op"),
        pytest.param({"transforms": [{"op": "window", "center": 40}]}, "transforms[0].width", id="window no width"),
        pytest.param(
            {"transforms": [{"op": "window", "center": 40, "width": 0.5}]},
            "transforms[0].width",
            id="linear window narrower than 1",
        ),
        pytest.param(
            {"transforms": [{"op": "window", "center": 40, "width": 400, "function": "cubic"}]},
            "transforms[0].function",
            id="window function unknown",
        ),
        pytest.param(
            {"transforms": [{"op": "window", "center": 40, "width": 400, "lut": {"first": 0, "values": [0]}}]},
            "transforms[0].center",
            id="window and lut",
        ),
        pytest.param(
            {"transforms": [{"op": "window", "lut": {"first": 0, "values": [0, 256]}}]},
            "transforms[0].lut.values[1]",
            id="lut value over 255",
        ),
        pytest.param(
            {"transforms": [{"op": "resize", "size": [8, 8]}, {"op": "window", "center": 40, "width": 400}]},
            "transforms[1].op",
            id="window after resize",
        ),
        pytest.param(
            {"transforms": [{"op": "normalize"}, {"op": "window", "center": 40, "width": 400}]},
            "transforms[1].op",
            id="window after normalize",
        ),
        pytest.param({"transforms": [{"op": "resize"}]}, "transforms[0].size", id="resize without a size"),
        pytest.param(
            {"transforms": [{"op": "resize", "size": [8, 8], "shorter": 8}]}, "transforms[0].size", id="two sizes"
        ),
        pytest.param({"transforms": [{"op": "resize", "size": [8, 0]}]}, "transforms[0].size[1]", id="size zero"),
        pytest.param(
            {"transforms": [{"op": "resize", "shorter": 8, "keep_aspect": True}]},
            "transforms[0].keep_aspect",
            id="keep aspect with shorter",
        ),
        pytest.param(
            {"transforms": [{"op": "resize", "size": [8, 8], "resample": "cubic"}]},
            "transforms[0].resample",
            id="resample unknown",
        ),
        pytest.param(
            {"transforms": [{"op": "resize", "size": [8, 8]}, {"op": "center_crop", "size": [4, 4], "fill": [0, 0]}]},
            "transforms[1].fill",
            id="fill for two channels",
        ),
        pytest.param(
            {"transforms": [{"op": "letterbox", "size": [8, 8], "fill": 300}]}, "transforms[0].fill", id="fill 300"
        ),
        pytest.param(
            {"transforms": [{"op": "letterbox", "size": [8, 8], "align": "middle"}]},
            "transforms[0].align",
            id="align unknown",
        ),
        pytest.param(
            {"transforms": [{"op": "pad_to_multiple", "multiple": 0}]}, "transforms[0].multiple", id="multiple zero"
        ),
        pytest.param(
            {"transforms": [{"op": "resize", "size": [8, 8]}, {"op": "color", "mode": "L"}]},
            "transforms[1].op",
            id="color after resize",
        ),
        pytest.param(
            {"transforms": [{"op": "color", "mode": "L"}, {"op": "color", "mode": "L"}]},
            "transforms[1].op",
            id="color twice",
        ),
        pytest.param({"transforms": [{"op": "color", "mode": "CMYK"}]}, "transforms[0].mode", id="color unknown"),
        pytest.param(
            {"transforms": [{"op": "layout", "layout": "NHWC"}, {"op": "resize", "size": [8, 8]}]},
            "transforms[1].op",
            id="image step after array step",
        ),
        pytest.param(
            {"transforms": [{"op": "dtype", "dtype": "float16"}, {"op": "normalize"}]},
            "transforms[1].op",
            id="normalize after dtype",
        ),
        pytest.param(
            {"transforms": [{"op": "normalize"}, {"op": "dtype", "dtype": "uint8"}]},
            "transforms[1].dtype",
            id="normalize with uint8",
        ),
        pytest.param({"transforms": [{"op": "normalize", "std": [1, 0, 1]}]}, "transforms[0].std[1]", id="std zero"),
        pytest.param(
            {"transforms": [{"op": "color", "mode": "L"}, {"op": "normalize", "mean": [0, 0, 0]}]},
            "transforms[1].mean",
            id="mean for three channels on L",
        ),
        pytest.param(
            {"transforms": [{"op": "resize", "size": [8, 8], "fill": 0}]}, "transforms[0].fill", id="unknown key"
        ),
        pytest.param({"input": {"name": "image", "size": [8, 8]}}, "input.size", id="flat input with transforms"),
        pytest.param({"task": "captioning"}, "task", id="unknown task"),
        pytest.param({"task": "detection", "top_k": 2}, "top_k", id="top k for detection"),
        pytest.param(
            {"output": {"name": "p", "type": "probabilities", "top_k": 2}}, "output.top_k", id="top k in output"
        ),
        pytest.param({"code": "../x.py"}, "code", id="code with a path"),
        pytest.param({"code": "transforms.txt"}, "code", id="code not python"),
    ],
)
def test_a_wrong_transform_or_task_field_is_rejected_naming_its_path(changes: dict[str, Any], field: str) -> None:
    # given transforms with one wrong field
    document = with_transforms([{"op": "resize", "size": [8, 8]}])
    document.update(changes)

    # when it is parsed
    with pytest.raises(ModelConfigError) as caught:
        parse_spec(document, SOURCE)

    # then the error names the field path
    assert caught.value.details["field"] == field
    assert caught.value.message.startswith(f"{SOURCE}: {field} ")


def test_output_may_be_left_out_only_next_to_a_code_file() -> None:
    # given a spec without output, with and without code
    without = with_transforms(IMAGENET)
    del without["output"]

    # when each is parsed
    with pytest.raises(ModelConfigError) as caught:
        parse_spec(without, SOURCE)
    spec = parse_spec({**without, "code": "transforms.py"}, SOURCE)

    # then only the one with code parses, with no output config
    assert caught.value.details["field"] == "output"
    assert spec.output is None
