"""Small ONNX test models with a predictable answer, written as real model folders.

Each model scores simple image features, so a test can assert the label, not just a shape:

- colour models (``RGB``/``BGR``): the features are the mean of each tensor channel, so the brightest
  channel wins. The default labels name the channel in tensor order: ``red, green, blue`` for RGB and
  ``blue, green, red`` for BGR, so a red image is "red" for both.
- grey models (``L``): the features are the mean of each quadrant (top-left, top-right, bottom-left,
  bottom-right), so the brightest quadrant wins.

Feature ``i`` drives class ``i`` (weight :data:`GAIN`); classes beyond the features get a large negative bias.
Whatever the dtype, the graph first brings pixels to 0..1 (a ``uint8`` graph casts and divides by 255; a
float graph expects the default ``scale`` of 1/255), so the answer does not depend on the dtype.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

GAIN = 10.0
OPSET = 17
IR_VERSION = 8
DELETE = object()
"""Pass as a value to :func:`write_spec` to remove that key."""

CHANNEL_LABELS = {"RGB": ["red", "green", "blue"], "BGR": ["blue", "green", "red"]}
QUADRANT_LABELS = ["top-left", "top-right", "bottom-left", "bottom-right"]

_ONNX_TYPES = {"float32": TensorProto.FLOAT, "float16": TensorProto.FLOAT16, "uint8": TensorProto.UINT8}


def default_labels(color_mode: str, classes: int) -> list[str]:
    """Labels that name what each class means (see the module docstring), padded with ``class-<i>``."""
    named = CHANNEL_LABELS.get(color_mode, QUADRANT_LABELS)
    return [named[index] if index < len(named) else f"class-{index}" for index in range(classes)]


def spec_dict(
    *,
    name: str = "tiny",
    version: str = "1",
    layout: str = "NCHW",
    color_mode: str = "RGB",
    size: tuple[int, int] = (16, 16),
    classes: int = 3,
    output_type: str = "probabilities",
    dtype: str = "float32",
) -> dict[str, Any]:
    """A valid model.json document for the graph :func:`make_model` builds with the same arguments."""
    return {
        "name": name,
        "version": version,
        "description": "test model",
        "input": {
            "name": "image",
            "layout": layout,
            "size": list(size),
            "color_mode": color_mode,
            "dtype": dtype,
        },
        "output": {"name": _output_name(output_type), "type": output_type},
        "labels": default_labels(color_mode, classes),
    }


def make_model(
    root: Path,
    name: str = "tiny",
    version: str = "1",
    layout: str = "NCHW",
    color_mode: str = "RGB",
    size: tuple[int, int] = (16, 16),
    batch: int | None = None,
    classes: int = 3,
    output_type: str = "probabilities",
    dtype: str = "float32",
    **spec_overrides: Any,
) -> Path:
    """Write ``root/name/version/{model.onnx,model.json}`` and return that folder.

    Args:
        batch: None for a dynamic batch dimension (symbolic ``"N"``), or a fixed batch size.
        spec_overrides: changes applied to model.json as by :func:`write_spec` (e.g. ``top_k=2`` or
            ``input={"resample": "nearest"}``).
    """
    folder = root / name / version
    folder.mkdir(parents=True, exist_ok=True)
    graph = build_graph(
        layout=layout,
        channels=3 if color_mode in CHANNEL_LABELS else 1,
        size=size,
        batch=batch,
        classes=classes,
        output_type=output_type,
        dtype=dtype,
    )
    onnx.save(graph, str(folder / "model.onnx"))
    spec = spec_dict(
        name=name,
        version=version,
        layout=layout,
        color_mode=color_mode,
        size=size,
        classes=classes,
        output_type=output_type,
        dtype=dtype,
    )
    (folder / "model.json").write_text(json.dumps(merge(spec, spec_overrides), indent=2), encoding="utf-8")
    return folder


def write_spec(folder: Path, **changes: Any) -> Path:
    """Rewrite ``folder/model.json`` with ``changes``; a dict value is merged into that section, :data:`DELETE`
    removes a key. Returns the model.json path."""
    path = folder / "model.json"
    spec = json.loads(path.read_text(encoding="utf-8"))
    path.write_text(json.dumps(merge(spec, changes), indent=2), encoding="utf-8")
    return path


def build_graph(
    *,
    layout: str,
    channels: int,
    size: tuple[int, int],
    batch: int | None,
    classes: int,
    output_type: str,
    dtype: str,
) -> onnx.ModelProto:
    """The ONNX model described in the module docstring."""
    height, width = size
    batch_dim: int | str = batch if batch is not None else "N"
    dims = [batch_dim, channels, height, width] if layout == "NCHW" else [batch_dim, height, width, channels]
    nodes: list[onnx.NodeProto] = []
    initializers: list[onnx.TensorProto] = []
    current = "image"

    def add(op: str, inputs: list[str], **attrs: Any) -> None:
        nonlocal current
        out = f"t{len(nodes)}"
        nodes.append(helper.make_node(op, inputs, [out], **attrs))
        current = out

    if dtype != "float32":
        add("Cast", [current], to=TensorProto.FLOAT)
    if dtype == "uint8":
        initializers.append(numpy_helper.from_array(np.array(1 / 255, dtype=np.float32), "inv255"))
        add("Mul", [current, "inv255"])
    if layout == "NHWC":
        add("Transpose", [current], perm=[0, 3, 1, 2])

    if channels == 3:
        add("GlobalAveragePool", [current])  # [N, 3, 1, 1]: mean of each channel
        features = 3
    else:
        kernel = [max(height // 2, 1), max(width // 2, 1)]
        add("AveragePool", [current], kernel_shape=kernel, strides=kernel)  # [N, 1, 2, 2]: quadrant means
        features = 4
    add("Flatten", [current], axis=1)

    weights = np.zeros((features, classes), dtype=np.float32)
    bias = np.zeros(classes, dtype=np.float32)
    for index in range(min(features, classes)):
        weights[index, index] = GAIN
    bias[features:] = -1000.0
    initializers += [numpy_helper.from_array(weights, "weights"), numpy_helper.from_array(bias, "bias")]
    add("MatMul", [current, "weights"])
    add("Add", [current, "bias"])
    if output_type == "probabilities":
        add("Softmax", [current], axis=-1)
    nodes[-1].output[0] = _output_name(output_type)

    graph = helper.make_graph(
        nodes,
        "modelfactory",
        [helper.make_tensor_value_info("image", _ONNX_TYPES[dtype], dims)],
        [helper.make_tensor_value_info(_output_name(output_type), TensorProto.FLOAT, [batch_dim, classes])],
        initializer=initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="modelfactory")
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    return model


def _output_name(output_type: str) -> str:
    return "logits" if output_type == "logits" else "probabilities"


def merge(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``changes``: dict values merge into dict sections, :data:`DELETE` removes a key."""
    merged = dict(base)
    for key, value in changes.items():
        if value is DELETE:
            merged.pop(key, None)
        elif isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged
