"""Decoder fixtures: a model.json ``fail`` that raises, and tiny ONNX graphs whose outputs are known exactly."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from modelrun.errors import ModelConfigError

OPSET = 17
IR_VERSION = 8


def raise_config_error(field: str, problem: str) -> NoReturn:
    raise ModelConfigError(f"model.json: {field} {problem}", field=field)


@pytest.fixture
def fail() -> Callable[[str, str], NoReturn]:
    """The ``fail`` a loader passes to a decoder: raises ModelConfigError with the field in its details."""
    return raise_config_error


@dataclass(frozen=True)
class GraphRun:
    """What a decoder sees of a graph: one image's outputs (batch removed) and the output shapes at load."""

    outputs: dict[str, np.ndarray]
    shapes: dict[str, list[Any]]


RunGraph = Callable[..., GraphRun]


@pytest.fixture
def run_graph() -> RunGraph:
    """Build a graph whose outputs are constants and run it with ONNX Runtime.

    Call it with ``{output name: array}`` (each array with its batch dimension of 1), and optionally
    ``transpose={name: perm}`` to emit that output through a Transpose node. ONNX Runtime reports the shapes it
    infers from the constants, so every dim is static; a test of symbolic dims passes its own shapes.
    """

    def build(
        tensors: Mapping[str, np.ndarray],
        *,
        transpose: Mapping[str, Sequence[int]] | None = None,
    ) -> GraphRun:
        transpose = transpose or {}
        nodes: list[onnx.NodeProto] = []
        outputs: list[onnx.ValueInfoProto] = []
        for name, array in tensors.items():
            value = np.asarray(array, dtype=np.float32)
            nodes.append(helper.make_node("Constant", [], [f"{name}_const"], value=numpy_helper.from_array(value)))
            perm = transpose.get(name)
            if perm is None:
                nodes.append(helper.make_node("Identity", [f"{name}_const"], [name]))
                shape = list(value.shape)
            else:
                nodes.append(helper.make_node("Transpose", [f"{name}_const"], [name], perm=list(perm)))
                shape = [value.shape[axis] for axis in perm]
            outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, shape))
        image = helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", 3, "H", "W"])
        graph = helper.make_graph(nodes, "decoder-test", [image], outputs)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
        model.ir_version = IR_VERSION
        onnx.checker.check_model(model)
        session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        names = [node.name for node in session.get_outputs()]
        results = session.run(names, {"images": np.zeros((1, 3, 4, 4), dtype=np.float32)})
        return GraphRun(
            outputs={name: np.asarray(result)[0] for name, result in zip(names, results, strict=True)},
            shapes={node.name: list(node.shape) for node in session.get_outputs()},
        )

    return build
