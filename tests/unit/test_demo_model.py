"""The committed demo model (models/digits/1) and its held-out sample images, run through the platform's own
registry, preprocessing and prediction code."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import load_digits

from modelrun.images.decode import Limits
from modelrun.inference import predict_arrays
from modelrun.models.onnx import LoadedModel
from modelrun.models.registry import ModelRegistry
from modelrun.transforms.pipeline import preprocess

REPO_ROOT = Path(__file__).resolve().parents[2]
MODELS_ROOT = REPO_ROOT / "models"
MODEL_DIR = MODELS_ROOT / "digits" / "1"
SAMPLES_DIR = REPO_ROOT / "samples" / "digits"
TRAIN_SCRIPT = REPO_ROOT / "scripts" / "train_demo_model.py"
SAMPLE_NAME = re.compile(r"digit-(?P<label>[0-9])-(?P<row>[0-9]{4})\.png")
MIN_ACCURACY = 0.95


def sample_paths() -> list[Path]:
    return sorted(SAMPLES_DIR.glob("*.png"))


def label_and_row(name: str) -> tuple[str, int]:
    match = SAMPLE_NAME.fullmatch(name)
    assert match is not None, f"{name} is not named digit-<label>-<NNNN>.png"
    return match["label"], int(match["row"])


@pytest.fixture(scope="module")
def digits_model() -> LoadedModel:
    return ModelRegistry(MODELS_ROOT).get("digits")


@pytest.fixture(scope="module")
def preprocessed_samples(digits_model: LoadedModel) -> dict[str, np.ndarray]:
    return {path.name: preprocess(path.read_bytes(), digits_model.spec, Limits()) for path in sample_paths()}


def test_model_json_has_exactly_the_contract_keys() -> None:
    spec = json.loads((MODEL_DIR / "model.json").read_text(encoding="utf-8"))

    assert set(spec) == {"name", "version", "description", "input", "output", "labels", "top_k"}
    assert set(spec["input"]) == {"name", "layout", "size", "color_mode", "dtype", "scale", "mean", "std", "resample"}
    assert spec["output"] == {"name": "probabilities", "type": "probabilities"}
    assert (spec["name"], spec["version"]) == ("digits", "1")
    assert spec["labels"] == [str(digit) for digit in range(10)]
    assert spec["input"]["size"] == [8, 8]
    assert spec["input"]["scale"] == pytest.approx(16 / 255)


def test_registry_loads_the_demo_model_with_a_dynamic_batch(digits_model: LoadedModel) -> None:
    assert digits_model.spec.input.image_shape == (1, 8, 8)
    assert digits_model.batch_size is None


def test_sample_files_are_named_by_label_and_load_digits_row() -> None:
    names = [path.name for path in sample_paths()]

    assert len(names) >= 400
    assert [name for name in names if not SAMPLE_NAME.fullmatch(name)] == []
    labels = {label_and_row(name)[0] for name in names}
    assert labels == {str(digit) for digit in range(10)}


def test_sample_file_labels_are_the_true_load_digits_labels() -> None:
    digits = load_digits()

    for path in sample_paths():
        label, row = label_and_row(path.name)
        assert int(label) == digits.target[row], path.name


def test_platform_preprocessing_of_a_sample_gives_back_the_digit_values(
    preprocessed_samples: dict[str, np.ndarray],
) -> None:
    digits = load_digits()

    for name, tensor in preprocessed_samples.items():
        expected = digits.images[label_and_row(name)[1]][np.newaxis, :, :]
        np.testing.assert_allclose(tensor, expected, atol=0.04, err_msg=name)


def test_demo_model_classifies_the_held_out_samples_accurately(
    digits_model: LoadedModel, preprocessed_samples: dict[str, np.ndarray]
) -> None:
    names = list(preprocessed_samples)
    predictions = predict_arrays(digits_model, [preprocessed_samples[name] for name in names])

    wrong = [
        (name, prediction.label)
        for name, prediction in zip(names, predictions, strict=True)
        if prediction.label != label_and_row(name)[0]
    ]
    accuracy = 1 - len(wrong) / len(names)
    assert accuracy >= MIN_ACCURACY, f"accuracy {accuracy:.4f} on {len(names)} samples; wrong: {wrong}"
    assert all(len(prediction.top_k) == 3 for prediction in predictions)


@pytest.mark.slow
def test_training_script_is_deterministic_and_reproduces_the_committed_samples(tmp_path: Path) -> None:
    outputs = []
    for run in ("first", "second"):
        out, samples = tmp_path / run / "models", tmp_path / run / "samples"
        subprocess.run(
            [sys.executable, str(TRAIN_SCRIPT), "--out", str(out), "--samples", str(samples)],
            check=True,
            capture_output=True,
            timeout=120,
        )
        outputs.append((out / "digits" / "1", samples))
    (first_model, first_samples), (second_model, second_samples) = outputs

    assert (first_model / "model.onnx").read_bytes() == (second_model / "model.onnx").read_bytes()
    assert (first_model / "model.json").read_bytes() == (MODEL_DIR / "model.json").read_bytes()
    assert {path.name: path.read_bytes() for path in first_samples.glob("*.png")} == {
        path.name: path.read_bytes() for path in sample_paths()
    }
    assert {path.name: path.read_bytes() for path in second_samples.glob("*.png")} == {
        path.name: path.read_bytes() for path in sample_paths()
    }
