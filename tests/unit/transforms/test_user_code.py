"""A model folder's own code: run through Predictor.predict, and every way it can be broken."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from PIL import Image

from modelrun.errors import ModelCodeError, ModelConfigError
from modelrun.images.decode import Limits
from modelrun.models.registry import ModelRegistry
from modelrun.predict import Predictor
from tests.modelfactory import make_model

PRE_AND_POST = """
import numpy as np
from modelrun.transforms import Geometry


def preprocess(image, spec):
    if image.width == 13:
        raise RuntimeError("cannot read a 13-pixel-wide image")
    rgb = np.asarray(image.convert("RGB").resize((16, 16)), dtype=np.float64) / 255.0
    scale = (16 / image.height, 16 / image.width)
    geometry = Geometry.identity(image.height, image.width).then(scale, (0, 0), (16, 16))
    return rgb.transpose(2, 0, 1), geometry


def postprocess(outputs, spec, geometry):
    scores = outputs["probabilities"]
    best = int(scores.argmax())
    return {"colour": spec.labels[best], "input_size": list(geometry.input_size)}
"""


def png(colour: str, size: tuple[int, int] = (24, 24)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, "PNG")
    return buffer.getvalue()


def model_with_code(root: Path, code: str, *, keep_output: bool = True) -> Path:
    folder = make_model(root, name="coded")
    (folder / "transforms.py").write_text(code, encoding="utf-8")
    spec = json.loads((folder / "model.json").read_text(encoding="utf-8"))
    spec["code"] = "transforms.py"
    if not keep_output:
        del spec["output"]
    (folder / "model.json").write_text(json.dumps(spec), encoding="utf-8")
    return folder


def predictor(root: Path) -> Predictor:
    return Predictor(ModelRegistry(root), Limits(), "coded")


def test_a_model_with_its_own_preprocess_and_postprocess_predicts_through_them(tmp_path: Path) -> None:
    # given a model whose code prepares the tensor and writes the result
    model_with_code(tmp_path, PRE_AND_POST, keep_output=False)

    # when a green image is predicted
    result = predictor(tmp_path).predict(png("lime"))

    # then the result is the postprocess's, beside the usual envelope
    assert result["colour"] == "green"
    assert result["input_size"] == [16, 16]
    assert set(result) == {"prediction_id", "model", "version", "colour", "input_size", "timings_ms"}


def test_a_preprocess_alone_hands_its_tensor_to_the_task_decoder(tmp_path: Path) -> None:
    # given code with only a preprocess, and the model.json's classification output
    code = PRE_AND_POST.split("def postprocess")[0]
    model_with_code(tmp_path, code)

    # when a blue image is predicted
    result = predictor(tmp_path).predict(png("blue"))

    # then the classification decoder answered
    assert result["label"] == "blue"
    assert result["top_k"][0]["label"] == "blue"


def test_code_that_raises_on_one_image_fails_that_image_only(tmp_path: Path) -> None:
    # given a model whose preprocess raises on 13-pixel-wide images
    model_with_code(tmp_path, PRE_AND_POST, keep_output=False)
    predict = predictor(tmp_path)

    # when that image is predicted, then another
    with pytest.raises(ModelCodeError) as caught:
        predict.predict(png("red", (13, 20)))
    after = predict.predict(png("red"))

    # then the first is a model_code_error with the exception's type and message, and the model keeps working
    assert caught.value.code == "model_code_error"
    assert caught.value.status == 500
    assert caught.value.message == (
        "preprocess in transforms.py raised RuntimeError: cannot read a 13-pixel-wide image"
    )
    assert "Traceback" not in json.dumps(caught.value.to_dict())
    assert after["colour"] == "red"


def test_a_postprocess_that_returns_something_unusable_is_a_model_code_error(tmp_path: Path) -> None:
    # given a postprocess that returns a set
    model_with_code(tmp_path, "def postprocess(outputs, spec, geometry):\n    return {'labels': {1, 2}}\n")

    # when an image is predicted
    with pytest.raises(ModelCodeError, match="not JSON-ready"):
        predictor(tmp_path).predict(png("red"))


@pytest.mark.parametrize(
    ("code", "fragment"),
    [
        pytest.param(
            "import numpy as np\n\ndef preprocess(image, spec)\n    return None\n",
            ", line 3: syntax error",
            id="syntax",
        ),
        pytest.param(
            "import numpy\nimport no_such_module_here\n",
            ", line 2: importing it raised ModuleNotFoundError",
            id="import",
        ),
        pytest.param(
            "x = 1\n\n\ny = 1 / 0\n", ", line 4: importing it raised ZeroDivisionError", id="raises at import"
        ),
        pytest.param("def prepare(image, spec):\n    return image\n", "defines neither preprocess", id="no function"),
        pytest.param(
            "\n\ndef preprocess(image):\n    return image\n",
            ", line 3: preprocess(image) must take 2 parameters",
            id="signature",
        ),
        pytest.param(
            "def postprocess(outputs, spec, geometry, extra):\n    return {}\n",
            ", line 1: postprocess(outputs, spec, geometry, extra)",
            id="too many",
        ),
        pytest.param("preprocess = 3\n", "preprocess must be a function", id="not callable"),
    ],
)
def test_broken_code_fails_the_load_naming_the_file_and_line(tmp_path: Path, code: str, fragment: str) -> None:
    # given a model whose code file is broken
    folder = model_with_code(tmp_path, code)

    # when it is loaded
    with pytest.raises(ModelConfigError) as caught:
        ModelRegistry(tmp_path).get("coded")

    # then the error names the file (and line) and the code field
    assert caught.value.message.startswith(str(folder / "transforms.py"))
    assert fragment in caught.value.message
    assert caught.value.details["field"] == "code"


def test_a_missing_code_file_fails_the_load(tmp_path: Path) -> None:
    # given model.json naming a file that is not there
    folder = model_with_code(tmp_path, "")
    (folder / "transforms.py").unlink()

    # when it is loaded
    with pytest.raises(ModelConfigError, match="is missing"):
        ModelRegistry(tmp_path).get("coded")


def test_without_output_the_code_must_define_postprocess(tmp_path: Path) -> None:
    # given code with only a preprocess and no output section
    model_with_code(tmp_path, PRE_AND_POST.split("def postprocess")[0], keep_output=False)

    # when it is loaded
    with pytest.raises(ModelConfigError) as caught:
        ModelRegistry(tmp_path).get("coded")

    # then output is named
    assert caught.value.details["field"] == "output"


def test_two_models_with_the_same_code_file_name_keep_their_own_module(tmp_path: Path) -> None:
    # given two models whose transforms.py define different constants
    for name, value in (("one", 1), ("two", 2)):
        folder = make_model(tmp_path, name=name)
        (folder / "transforms.py").write_text(
            f"VALUE = {value}\n\ndef postprocess(outputs, spec, geometry):\n    return {{'value': VALUE}}\n"
        )
        spec = json.loads((folder / "model.json").read_text())
        (folder / "model.json").write_text(json.dumps({**spec, "code": "transforms.py"}))
    registry = ModelRegistry(tmp_path)

    # when both predict
    results = [Predictor(registry, Limits(), name).predict(png("red"))["value"] for name in ("one", "two")]

    # then each ran its own code
    assert results == [1, 2]
