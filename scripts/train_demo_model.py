"""Train the demo digits classifier and export it, by hand, as an ONNX model folder.

Data: scikit-learn's bundled ``load_digits`` (8x8 images, values 0..16); nothing is downloaded.
A small MLP (one hidden ReLU layer) is trained on a stratified 75 % split with a fixed seed; the
held-out 25 % is written as sample PNGs that a person can look at and the API can be tried with.

The sample images and ``model.json`` are built so that the platform's preprocessing gives back
the training features: a digit value ``v`` becomes the 8-bit pixel ``round(v * 255 / 16)``, the
8x8 image is upscaled 4x with NEAREST, and the platform box-downsamples it to 8x8 (exact on 4x4
blocks of equal pixels) and multiplies by ``scale = 16 / 255``. The script checks that round trip
for every held-out image and measures the exported model on the PNGs through onnxruntime.

Usage: python scripts/train_demo_model.py [--out models] [--samples samples/digits]
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from numpy.typing import NDArray
from onnx import TensorProto, helper, numpy_helper
from PIL import Image
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier

REPO_ROOT = Path(__file__).resolve().parents[1]

MODEL_NAME = "digits"
MODEL_VERSION = "1"
SEED = 0
TEST_FRACTION = 0.25
HIDDEN_UNITS = 64
MIN_ACCURACY = 0.95
MAX_VALUE = 16  # load_digits pixel values are 0..16
SCALE = MAX_VALUE / 255  # what the platform multiplies 8-bit pixels by: 0..255 -> 0..16
UPSCALE = 4  # sample PNGs are 32x32 so that a person can see them
ROUND_TRIP_TOLERANCE = 0.04  # half an 8-bit step is 0.031 in feature units
OPSET = 17
IR_VERSION = 8  # the IR version that goes with opset 17; every supported onnxruntime loads it
LABELS = [str(digit) for digit in range(10)]


@dataclass(frozen=True)
class Split:
    """Row indices into ``load_digits`` and the data they select."""

    features: NDArray[np.float64]  # (n, 64), values 0..16
    images: NDArray[np.float64]  # (n, 8, 8), values 0..16
    labels: NDArray[np.int64]  # (n,)
    train_rows: NDArray[np.int64]
    test_rows: NDArray[np.int64]


def load_split() -> Split:
    digits = load_digits()
    rows = np.arange(len(digits.target))
    train_rows, test_rows = train_test_split(rows, test_size=TEST_FRACTION, stratify=digits.target, random_state=SEED)
    return Split(
        features=digits.data,
        images=digits.images,
        labels=digits.target,
        train_rows=np.sort(train_rows),
        test_rows=np.sort(test_rows),
    )


def train(split: Split) -> MLPClassifier:
    """Fit on features divided by 16; the division is folded into the exported first layer."""
    classifier = MLPClassifier(
        hidden_layer_sizes=(HIDDEN_UNITS,),
        activation="relu",
        solver="adam",
        alpha=1e-3,
        max_iter=500,
        random_state=SEED,
    )
    classifier.fit(split.features[split.train_rows] / MAX_VALUE, split.labels[split.train_rows])
    return classifier


def export_onnx(classifier: MLPClassifier) -> onnx.ModelProto:
    """Flatten -> MatMul/Add/Relu -> MatMul/Add -> Softmax, from the learnt weights."""
    hidden_weights = (classifier.coefs_[0] / MAX_VALUE).astype(np.float32)  # takes 0..16 input directly
    hidden_bias = classifier.intercepts_[0].astype(np.float32)
    output_weights = classifier.coefs_[1].astype(np.float32)
    output_bias = classifier.intercepts_[1].astype(np.float32)
    initializers = [
        numpy_helper.from_array(hidden_weights, "hidden.weight"),
        numpy_helper.from_array(hidden_bias, "hidden.bias"),
        numpy_helper.from_array(output_weights, "output.weight"),
        numpy_helper.from_array(output_bias, "output.bias"),
    ]
    nodes = [
        helper.make_node("Flatten", ["image"], ["flat"], name="flatten", axis=1),
        helper.make_node("MatMul", ["flat", "hidden.weight"], ["hidden.matmul"], name="hidden_matmul"),
        helper.make_node("Add", ["hidden.matmul", "hidden.bias"], ["hidden.pre"], name="hidden_add"),
        helper.make_node("Relu", ["hidden.pre"], ["hidden"], name="hidden_relu"),
        helper.make_node("MatMul", ["hidden", "output.weight"], ["output.matmul"], name="output_matmul"),
        helper.make_node("Add", ["output.matmul", "output.bias"], ["logits"], name="output_add"),
        helper.make_node("Softmax", ["logits"], ["probabilities"], name="softmax", axis=-1),
    ]
    graph = helper.make_graph(
        nodes,
        "digits_mlp",
        inputs=[helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 1, 8, 8])],
        outputs=[helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", len(LABELS)])],
        initializer=initializers,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="modelrun scripts/train_demo_model.py",
        doc_string="8x8 grayscale digit classifier (pixel values 0..16) trained on scikit-learn's load_digits.",
    )
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model, full_check=True)
    return model


def model_spec() -> dict[str, object]:
    return {
        "name": MODEL_NAME,
        "version": MODEL_VERSION,
        "description": (
            "Handwritten digit classifier (0-9) trained on scikit-learn's bundled 8x8 digits data. "
            "Send a dark-background grayscale image of one digit; it is reduced to 8x8."
        ),
        "input": {
            "name": "image",
            "layout": "NCHW",
            "size": [8, 8],
            "color_mode": "L",
            "dtype": "float32",
            "scale": SCALE,
            "mean": [0.0],
            "std": [1.0],
            "resample": "box",
        },
        "output": {"name": "probabilities", "type": "probabilities"},
        "labels": LABELS,
        "top_k": 3,
    }


def encode_sample_png(image: NDArray[np.float64]) -> bytes:
    """8x8 values 0..16 -> 8-bit grayscale, upscaled with NEAREST; PNG with no metadata chunks."""
    pixels = np.rint(image * 255 / MAX_VALUE).astype(np.uint8)
    height, width = pixels.shape
    picture = Image.fromarray(pixels, mode="L").resize((width * UPSCALE, height * UPSCALE), Image.Resampling.NEAREST)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def preprocess_like_platform(png: bytes, spec: dict[str, object]) -> NDArray[np.float32]:
    """The platform's documented steps for this spec: decode, to L, resize BOX, *scale, -mean, /std, NCHW."""
    input_spec = spec["input"]
    assert isinstance(input_spec, dict)
    height, width = input_spec["size"]
    with Image.open(io.BytesIO(png)) as decoded:
        picture = decoded.convert(input_spec["color_mode"]).resize((width, height), Image.Resampling.BOX)
    array = np.asarray(picture, dtype=np.float32) * np.float32(input_spec["scale"])
    array = (array - np.float32(input_spec["mean"][0])) / np.float32(input_spec["std"][0])
    return array[np.newaxis, :, :]  # (1, H, W): channel axis of NCHW


def sample_name(label: int, row: int) -> str:
    return f"digit-{label}-{row:04d}.png"


def write_samples(split: Split, samples_dir: Path) -> dict[int, bytes]:
    """Write one PNG per held-out row, removing stale samples from earlier runs."""
    samples_dir.mkdir(parents=True, exist_ok=True)
    pngs = {int(row): encode_sample_png(split.images[row]) for row in split.test_rows}
    wanted = {sample_name(int(split.labels[row]), row): png for row, png in pngs.items()}
    for stale in samples_dir.glob("digit-*.png"):
        if stale.name not in wanted:
            stale.unlink()
    for name, png in wanted.items():
        (samples_dir / name).write_bytes(png)
    return pngs


def write_model(model: onnx.ModelProto, spec: dict[str, object], model_dir: Path) -> Path:
    model_dir.mkdir(parents=True, exist_ok=True)
    onnx_path = model_dir / "model.onnx"
    onnx_path.write_bytes(model.SerializeToString())
    (model_dir / "model.json").write_text(json.dumps(spec, indent=2) + "\n", encoding="utf-8")
    return onnx_path


def check_round_trip(split: Split, pngs: dict[int, bytes], spec: dict[str, object]) -> NDArray[np.float32]:
    """Preprocess every sample PNG as the platform would; it must give back the training features."""
    batch = np.stack([preprocess_like_platform(pngs[int(row)], spec) for row in split.test_rows])
    expected = split.images[split.test_rows][:, np.newaxis, :, :]
    worst = float(np.max(np.abs(batch - expected)))
    if worst > ROUND_TRIP_TOLERANCE:
        raise SystemExit(f"round trip PNG -> preprocessing differs from the features by {worst:.4f}")
    return batch


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "models", help="models root folder")
    parser.add_argument("--samples", type=Path, default=REPO_ROOT / "samples" / "digits", help="sample PNG folder")
    args = parser.parse_args(argv)

    split = load_split()
    classifier = train(split)
    test_labels = split.labels[split.test_rows]
    sklearn_accuracy = float(np.mean(classifier.predict(split.features[split.test_rows] / MAX_VALUE) == test_labels))

    model = export_onnx(classifier)
    spec = model_spec()
    onnx_path = write_model(model, spec, args.out / MODEL_NAME / MODEL_VERSION)
    pngs = write_samples(split, args.samples)
    batch = check_round_trip(split, pngs, spec)

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    (probabilities,) = session.run(["probabilities"], {"image": batch})
    onnx_accuracy = float(np.mean(np.argmax(probabilities, axis=1) == test_labels))
    reference = classifier.predict_proba(split.features[split.test_rows] / MAX_VALUE)
    largest_gap = float(np.max(np.abs(probabilities - reference)))

    total = len(split.test_rows)
    sizes = [len(png) for png in pngs.values()]
    print(f"trained MLP (64 -> {HIDDEN_UNITS} ReLU -> 10) on {len(split.train_rows)} images, seed {SEED}")
    print(f"held-out accuracy (sklearn on features): {sklearn_accuracy:.4f} on {total} images")
    print(f"held-out accuracy (onnx on sample PNGs): {onnx_accuracy:.4f} on {total} images")
    print(f"largest |onnx on PNGs - sklearn| probability gap: {largest_gap:.2e}")
    print(f"wrote {onnx_path} ({onnx_path.stat().st_size} bytes) and model.json")
    print(f"wrote {total} sample PNGs to {args.samples} ({min(sizes)}-{max(sizes)} bytes each)")
    if onnx_accuracy < MIN_ACCURACY or sklearn_accuracy < MIN_ACCURACY:
        print(f"accuracy below the required {MIN_ACCURACY}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
