"""Build the benchmark model: a ResNet-18-shaped image classifier with fixed-seed random weights.

Its predictions mean nothing; its cost is that of a real ImageNet ResNet-18 (about 11.7 M parameters,
1.8 GFLOPs per 224x224 image), which is what the benchmarks need. Built with ``onnx.helper`` and numpy,
nothing is downloaded. Batch normalisation is taken as folded into the convolutions' biases.

Graph: conv 7x7/2 (64) + ReLU, max pool 3x3/2, four stages of two basic residual blocks (64, 128, 256,
512 channels; the first block of stages 2-4 halves the resolution and has a 1x1/2 projection shortcut),
global average pool, fully connected to 1000 classes, softmax.

Writes ``bench/models/resnet/1/{model.onnx,model.json}`` (not committed) and reports the file size, the
parameter count and the latency of one batch-1 inference through onnxruntime.

Usage: python scripts/build_bench_model.py [--out bench/models]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

REPO_ROOT = Path(__file__).resolve().parents[1]

MODEL_NAME = "resnet"
MODEL_VERSION = "1"
SEED = 20240518
OPSET = 17
IR_VERSION = 8
IMAGE_SIZE = 224
CLASSES = 1000
STAGES = ((64, 1), (128, 2), (256, 2), (512, 2))  # (channels, stride of the stage's first block)
BLOCKS_PER_STAGE = 2
TIMED_RUNS = 5


class GraphBuilder:
    """Collects nodes and He-initialised weights; each method returns the name of its output tensor."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.parameters = 0

    def _weight(self, name: str, array: np.ndarray) -> str:
        self.initializers.append(numpy_helper.from_array(array.astype(np.float32), name))
        self.parameters += array.size
        return name

    def conv(self, source: str, name: str, in_channels: int, out_channels: int, kernel: int, stride: int) -> str:
        fan_in = in_channels * kernel * kernel
        weight = self.rng.standard_normal((out_channels, in_channels, kernel, kernel), dtype=np.float32)
        weight *= np.float32(np.sqrt(2.0 / fan_in))
        inputs = [
            source,
            self._weight(f"{name}.weight", weight),
            self._weight(f"{name}.bias", np.zeros(out_channels, dtype=np.float32)),  # folded batch norm
        ]
        padding = kernel // 2
        self.nodes.append(
            helper.make_node(
                "Conv",
                inputs,
                [name],
                name=name,
                kernel_shape=[kernel, kernel],
                strides=[stride, stride],
                pads=[padding] * 4,
            )
        )
        return name

    def op(self, op_type: str, inputs: list[str], name: str, **attributes: Any) -> str:
        self.nodes.append(helper.make_node(op_type, inputs, [name], name=name, **attributes))
        return name

    def basic_block(self, source: str, name: str, in_channels: int, out_channels: int, stride: int) -> str:
        branch = self.conv(source, f"{name}.conv1", in_channels, out_channels, 3, stride)
        branch = self.op("Relu", [branch], f"{name}.relu1")
        branch = self.conv(branch, f"{name}.conv2", out_channels, out_channels, 3, 1)
        shortcut = source
        if stride != 1 or in_channels != out_channels:
            shortcut = self.conv(source, f"{name}.downsample", in_channels, out_channels, 1, stride)
        joined = self.op("Add", [branch, shortcut], f"{name}.add")
        return self.op("Relu", [joined], f"{name}.relu2")

    def classifier(self, source: str, in_features: int, classes: int) -> str:
        scale = np.float32(np.sqrt(1.0 / in_features))  # keeps the random logits in a moderate range
        weight = self.rng.standard_normal((in_features, classes), dtype=np.float32) * scale
        matmul = self.op("MatMul", [source, self._weight("fc.weight", weight)], "fc.matmul")
        return self.op("Add", [matmul, self._weight("fc.bias", np.zeros(classes, dtype=np.float32))], "fc.add")


def build_model(seed: int = SEED) -> tuple[onnx.ModelProto, int]:
    """The ResNet-18-shaped graph and its parameter count."""
    graph = GraphBuilder(seed)
    tensor = graph.conv("image", "stem.conv", 3, 64, 7, 2)
    tensor = graph.op("Relu", [tensor], "stem.relu")
    tensor = graph.op("MaxPool", [tensor], "stem.maxpool", kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    channels = 64
    for stage, (out_channels, first_stride) in enumerate(STAGES, start=1):
        for block in range(BLOCKS_PER_STAGE):
            stride = first_stride if block == 0 else 1
            tensor = graph.basic_block(tensor, f"stage{stage}.block{block}", channels, out_channels, stride)
            channels = out_channels
    tensor = graph.op("GlobalAveragePool", [tensor], "pool")
    tensor = graph.op("Flatten", [tensor], "flatten", axis=1)
    logits = graph.classifier(tensor, channels, CLASSES)
    graph.op("Softmax", [logits], "probabilities", axis=-1)

    onnx_graph = helper.make_graph(
        graph.nodes,
        "resnet18_random",
        inputs=[helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, IMAGE_SIZE, IMAGE_SIZE])],
        outputs=[helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", CLASSES])],
        initializer=graph.initializers,
    )
    model = helper.make_model(
        onnx_graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="modelrun scripts/build_bench_model.py",
        doc_string=f"ResNet-18-shaped benchmark model with random weights (seed {seed}); predictions are meaningless.",
    )
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    return model, graph.parameters


def model_spec() -> dict[str, object]:
    return {
        "name": MODEL_NAME,
        "version": MODEL_VERSION,
        "description": (
            "Benchmark model: ResNet-18-shaped CNN with random weights. Real ImageNet-sized cost, "
            "meaningless predictions."
        ),
        "input": {
            "name": "image",
            "layout": "NCHW",
            "size": [IMAGE_SIZE, IMAGE_SIZE],
            "color_mode": "RGB",
            "dtype": "float32",
            "scale": 1 / 255,
            "mean": [0.485, 0.456, 0.406],
            "std": [0.229, 0.224, 0.225],
            "resample": "bilinear",
        },
        "output": {"name": "probabilities", "type": "probabilities"},
        "labels": [f"class_{index}" for index in range(CLASSES)],
        "top_k": 5,
    }


def time_inference(model_path: Path) -> tuple[float, float]:
    """Milliseconds of the first batch-1 run, and the median of the next few."""
    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    image = np.random.default_rng(0).random((1, 3, IMAGE_SIZE, IMAGE_SIZE), dtype=np.float32)
    timings = []
    for _ in range(1 + TIMED_RUNS):
        started = time.perf_counter()
        (probabilities,) = session.run(["probabilities"], {"image": image})
        timings.append((time.perf_counter() - started) * 1000)
    if probabilities.shape != (1, CLASSES) or not np.all(np.isfinite(probabilities)):
        raise SystemExit(f"unexpected output: shape {probabilities.shape}, finite {np.all(np.isfinite(probabilities))}")
    return timings[0], float(np.median(timings[1:]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "bench" / "models", help="models root folder")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    model, parameters = build_model()
    model_dir = args.out / MODEL_NAME / MODEL_VERSION
    model_dir.mkdir(parents=True, exist_ok=True)
    model_path = model_dir / "model.onnx"
    model_path.write_bytes(model.SerializeToString())
    (model_dir / "model.json").write_text(json.dumps(model_spec(), indent=2) + "\n", encoding="utf-8")
    build_seconds = time.perf_counter() - started

    first_ms, median_ms = time_inference(model_path)
    size_mb = model_path.stat().st_size / 1e6
    print(f"wrote {model_path} ({size_mb:.1f} MB) and model.json in {build_seconds:.1f} s")
    print(f"parameters: {parameters:,}")
    print(f"batch-1 inference (onnxruntime): 1st run {first_ms:.1f} ms, median of {TIMED_RUNS} more {median_ms:.1f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
