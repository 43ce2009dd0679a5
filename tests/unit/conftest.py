"""Fixtures shared by the unit tests: model folders around tiny ONNX graphs whose outputs are known exactly, and the
batch path's AWS services on moto (``aws``)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import onnx
import pytest
from onnx import TensorProto, helper

from modelrun.models.onnx import LoadedModel
from modelrun.models.registry import ModelRegistry

if TYPE_CHECKING:
    from tests.batchfixtures import BatchAws

OPSET = 17
IR_VERSION = 8
ONNX_TYPES = {"float32": TensorProto.FLOAT, "float16": TensorProto.FLOAT16, "uint8": TensorProto.UINT8}

IdentityModel = Callable[..., LoadedModel]

IDENTITY_CODE = """
def postprocess(outputs, spec, geometry):
    return {}
"""


def identity_graph(dims: list[int | str], dtype: str = "float32") -> onnx.ModelProto:
    """``out = Identity(images)``: the output IS the input tensor."""
    node = helper.make_node("Identity", ["images"], ["out"])
    graph = helper.make_graph(
        [node],
        "identity",
        [helper.make_tensor_value_info("images", ONNX_TYPES[dtype], dims)],
        [helper.make_tensor_value_info("out", ONNX_TYPES[dtype], ["n", "d1", "d2", "d3"][: len(dims)])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    return model


def write_model_folder(root: Path, graph: onnx.ModelProto, spec: dict[str, Any], name: str = "ident") -> Path:
    folder = root / name / "1"
    folder.mkdir(parents=True, exist_ok=True)
    onnx.save(graph, str(folder / "model.onnx"))
    (folder / "model.json").write_text(json.dumps({"name": name, "version": "1", **spec}), encoding="utf-8")
    return folder


@pytest.fixture
def identity_model(tmp_path: Path) -> IdentityModel:
    """Load an Identity model taking ``dims`` (default ``["N", 3, "H", "W"]``) with the given transforms.

    No task decoder fits an output that is an image, so the model's code has a ``postprocess`` (returning ``{}``)
    instead of an ``output`` section; the tests read the outputs of :meth:`LoadedModel.infer` directly.
    """

    def load(
        transforms: list[dict[str, Any]],
        dims: list[int | str] | None = None,
        dtype: str = "float32",
        **spec: Any,
    ) -> LoadedModel:
        document = {
            "input": {"name": "images"},
            "transforms": transforms,
            "labels": ["a", "b", "c"],
            "code": "identity.py",
            **spec,
        }
        folder = write_model_folder(tmp_path, identity_graph(dims or ["N", 3, "H", "W"], dtype), document)
        (folder / "identity.py").write_text(IDENTITY_CODE, encoding="utf-8")
        return ModelRegistry(tmp_path).get("ident")

    return load


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[BatchAws]:
    """The batch path's tables, buckets, queues and state machine on moto (``tests.batchfixtures``), per test.

    Imported here, not at the top: the model path's tests that need no AWS do not load moto."""
    from tests.batchfixtures import batch_aws

    with batch_aws(monkeypatch) as services:
        yield services
