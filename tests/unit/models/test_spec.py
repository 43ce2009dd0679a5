"""model.json validation: every wrong field is named, unknown keys are rejected, defaults are filled in."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from modelrun.errors import ModelConfigError
from modelrun.models.spec import ModelSpec, load_spec, parse_spec
from tests.modelfactory import DELETE, merge, spec_dict

SOURCE = "/models/tiny/1/model.json"


def with_changes(**changes: Any) -> dict[str, Any]:
    return merge(spec_dict(), changes)


def test_a_valid_spec_parses_into_typed_fields() -> None:
    # given a complete model.json
    data = with_changes(input={"size": [8, 12], "scale": 0.5, "mean": [1, 2, 3], "std": [4, 5, 6]}, top_k=2)

    # when it is parsed
    spec = parse_spec(data, SOURCE)

    # then every field is typed and kept
    assert spec.name == "tiny"
    assert spec.version == "1"
    assert spec.input.size == (8, 12)
    assert (spec.input.height, spec.input.width) == (8, 12)
    assert spec.input.scale == 0.5
    assert spec.input.mean == (1.0, 2.0, 3.0)
    assert spec.input.std == (4.0, 5.0, 6.0)
    assert spec.labels == ("red", "green", "blue")
    assert spec.top_k == 2
    assert spec.channels == 3


def test_optional_fields_get_their_defaults() -> None:
    # given a spec without the optional fields
    data = with_changes(description=DELETE, top_k=DELETE)

    # when it is parsed
    spec = parse_spec(data, SOURCE)

    # then the documented defaults apply
    assert spec.description is None
    assert spec.input.scale == pytest.approx(1 / 255)
    assert spec.input.mean == (0.0, 0.0, 0.0)
    assert spec.input.std == (1.0, 1.0, 1.0)
    assert spec.input.resample == "bilinear"
    assert spec.top_k == 3


def test_default_top_k_is_at_most_five() -> None:
    # given a spec with ten labels and no top_k
    data = with_changes(labels=[str(digit) for digit in range(10)])

    # when it is parsed
    spec = parse_spec(data, SOURCE)

    # then top_k is five
    assert spec.top_k == 5


def test_a_grey_model_has_one_channel_of_mean_and_std() -> None:
    # given a grey model spec without mean and std
    data = with_changes(input={"color_mode": "L"})

    # when it is parsed
    spec = parse_spec(data, SOURCE)

    # then mean and std default to one value each
    assert spec.channels == 1
    assert spec.input.mean == (0.0,)
    assert spec.input.std == (1.0,)


def test_a_uint8_model_uses_raw_pixels() -> None:
    # given a uint8 model spec
    data = with_changes(input={"dtype": "uint8"})

    # when it is parsed
    spec = parse_spec(data, SOURCE)

    # then the normalisation is the identity
    assert (spec.input.scale, spec.input.mean, spec.input.std) == (1.0, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))


def test_to_dict_round_trips_through_parse_spec() -> None:
    # given a parsed spec
    spec = parse_spec(with_changes(input={"resample": "box"}), SOURCE)

    # when its dict form is parsed again
    again = parse_spec(json.loads(json.dumps(spec.to_dict())), SOURCE)

    # then it is the same spec
    assert again == spec


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        pytest.param({"name": DELETE}, "name", id="name missing"),
        pytest.param({"name": "Tiny"}, "name", id="name upper case"),
        pytest.param({"name": "../etc"}, "name", id="name with a path"),
        pytest.param({"name": 7}, "name", id="name not a string"),
        pytest.param({"version": 1}, "version", id="version a number"),
        pytest.param({"version": ".."}, "version", id="version dots"),
        pytest.param({"description": 3}, "description", id="description not a string"),
        pytest.param({"input": DELETE}, "input", id="input missing"),
        pytest.param({"input": [1]}, "input", id="input not an object"),
        pytest.param({"input": {"name": DELETE}}, "input.name", id="input name missing"),
        pytest.param({"input": {"name": ""}}, "input.name", id="input name empty"),
        pytest.param({"input": {"layout": "NCWH"}}, "input.layout", id="layout unknown"),
        pytest.param({"input": {"layout": DELETE}}, "input.layout", id="layout missing"),
        pytest.param({"input": {"size": [8]}}, "input.size", id="size one value"),
        pytest.param({"input": {"size": "8x8"}}, "input.size", id="size a string"),
        pytest.param({"input": {"size": [0, 8]}}, "input.size[0]", id="size height zero"),
        pytest.param({"input": {"size": [8, 2.5]}}, "input.size[1]", id="size width fractional"),
        pytest.param({"input": {"size": [True, 8]}}, "input.size[0]", id="size a boolean"),
        pytest.param({"input": {"color_mode": "RGBA"}}, "input.color_mode", id="color mode unknown"),
        pytest.param({"input": {"dtype": "float64"}}, "input.dtype", id="dtype unknown"),
        pytest.param({"input": {"scale": 0}}, "input.scale", id="scale zero"),
        pytest.param({"input": {"scale": "1/255"}}, "input.scale", id="scale a string"),
        pytest.param({"input": {"mean": [0.5]}}, "input.mean", id="mean wrong length"),
        pytest.param({"input": {"mean": [0, 0, "x"]}}, "input.mean[2]", id="mean not a number"),
        pytest.param({"input": {"std": [1, 0, 1]}}, "input.std[1]", id="std zero"),
        pytest.param({"input": {"std": [1, 1, -2]}}, "input.std[2]", id="std negative"),
        pytest.param({"input": {"dtype": "uint8", "mean": [0, 0, 0]}}, "input.mean", id="mean with uint8"),
        pytest.param({"input": {"resample": "cubic"}}, "input.resample", id="resample unknown"),
        pytest.param({"input": {"colour_mode": "RGB"}}, "input.colour_mode", id="input key misspelt"),
        pytest.param({"output": DELETE}, "output", id="output missing"),
        pytest.param({"output": {"name": DELETE}}, "output.name", id="output name missing"),
        pytest.param({"output": {"type": "scores"}}, "output.type", id="output type unknown"),
        pytest.param({"output": {"activation": "softmax"}}, "output.activation", id="output key unknown"),
        pytest.param({"labels": DELETE}, "labels", id="labels missing"),
        pytest.param({"labels": []}, "labels", id="labels empty"),
        pytest.param({"labels": "red,green"}, "labels", id="labels a string"),
        pytest.param({"labels": ["a", "b", "a"]}, "labels[2]", id="labels duplicated"),
        pytest.param({"labels": ["a", 2]}, "labels[1]", id="label not a string"),
        pytest.param({"top_k": 0}, "top_k", id="top k zero"),
        pytest.param({"top_k": 4}, "top_k", id="top k above label count"),
        pytest.param({"top_k": "3"}, "top_k", id="top k a string"),
        pytest.param({"topk": 3}, "topk", id="top level key misspelt"),
    ],
)
def test_a_wrong_field_is_rejected_naming_the_field(changes: dict[str, Any], field: str) -> None:
    # given a spec with one wrong field
    data = with_changes(**changes)

    # when it is parsed
    with pytest.raises(ModelConfigError) as caught:
        parse_spec(data, SOURCE)

    # then the error names the source and the field
    assert caught.value.details["field"] == field
    assert caught.value.message.startswith(f"{SOURCE}: {field} ")
    assert caught.value.code == "invalid_model_config"


def test_the_layout_error_says_what_is_allowed_and_what_was_given() -> None:
    # given a misspelt layout
    data = with_changes(input={"layout": "NCWH"})

    # when it is parsed
    with pytest.raises(ModelConfigError) as caught:
        parse_spec(data, SOURCE)

    # then the message reads as documented
    assert caught.value.message == f'{SOURCE}: input.layout must be "NCHW" or "NHWC", got "NCWH"'


def test_a_document_that_is_not_an_object_is_rejected() -> None:
    # given a JSON list instead of an object
    # when it is parsed
    with pytest.raises(ModelConfigError, match=r"model\.json must be a JSON object"):
        parse_spec([1, 2], SOURCE)


def write_model_json(root: Path, data: Any, name: str = "tiny", version: str = "1") -> Path:
    folder = root / name / version
    folder.mkdir(parents=True)
    path = folder / "model.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def test_load_spec_reads_a_model_json_file(tmp_path: Path) -> None:
    # given a model.json in its name/version folder
    path = write_model_json(tmp_path, spec_dict())

    # when it is loaded, by file or by folder
    by_file = load_spec(path)
    by_folder = load_spec(path.parent)

    # then both give the spec
    assert isinstance(by_file, ModelSpec)
    assert by_file == by_folder


def test_load_spec_requires_the_name_to_match_its_folder(tmp_path: Path) -> None:
    # given a model.json whose name differs from its folder
    path = write_model_json(tmp_path, spec_dict(name="other"))

    # when it is loaded
    with pytest.raises(ModelConfigError) as caught:
        load_spec(path)

    # then the name field is blamed and the file is named
    assert caught.value.details["field"] == "name"
    assert str(path) in caught.value.message


def test_load_spec_requires_the_version_to_match_its_folder(tmp_path: Path) -> None:
    # given a model.json whose version differs from its folder
    path = write_model_json(tmp_path, spec_dict(version="2"))

    # when it is loaded
    with pytest.raises(ModelConfigError) as caught:
        load_spec(path)

    # then the version field is blamed
    assert caught.value.details["field"] == "version"


def test_load_spec_rejects_invalid_json_with_its_position(tmp_path: Path) -> None:
    # given a model.json with a syntax error
    path = write_model_json(tmp_path, {})
    path.write_text('{"name": "tiny",\n  "version": }', encoding="utf-8")

    # when it is loaded
    with pytest.raises(ModelConfigError, match=r"not valid JSON \(line 2"):
        load_spec(path)


def test_load_spec_reports_a_missing_file(tmp_path: Path) -> None:
    # given no model.json
    path = tmp_path / "tiny" / "1" / "model.json"

    # when it is loaded
    with pytest.raises(ModelConfigError, match=r"cannot read model\.json"):
        load_spec(path)
