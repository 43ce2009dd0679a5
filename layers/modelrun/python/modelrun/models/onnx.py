"""The ONNX Runtime side of a model: the session, its thread settings, and the check of model.json against the graph.

Loading checks model.json against the graph so a mismatch fails at load with the field named, not later with a shape
error from ONNX Runtime.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any, Final, NoReturn

import numpy as np
import onnxruntime as ort
from onnxruntime.capi import onnxruntime_pybind11_state as ort_state

from modelrun.errors import ModelConfigError
from modelrun.inference import softmax
from modelrun.models.spec import ModelSpec, load_spec

MODEL_FILE: Final = "model.onnx"
SPEC_FILE: Final = "model.json"

LAMBDA_MB_PER_VCPU: Final = 1769
"""Lambda gives one full vCPU per 1,769 MB of memory, up to 6 vCPUs at 10,240 MB."""
LAMBDA_MAX_VCPUS: Final = 6

_ORT_TYPES: Final = {"float32": "tensor(float)", "float16": "tensor(float16)", "uint8": "tensor(uint8)"}
_NUMPY_TYPES: Final = {"float32": np.float32, "float16": np.float16, "uint8": np.uint8}
_ORT_LOAD_ERRORS: Final = (
    ort_state.Fail,
    ort_state.InvalidArgument,
    ort_state.InvalidGraph,
    ort_state.InvalidProtobuf,
    ort_state.NoSuchFile,
    ort_state.NotImplemented,
    ort_state.RuntimeException,
    RuntimeError,
    ValueError,
)

Dim = int | str | None


def default_threads() -> int:
    """Intra-op threads matched to the vCPUs the Lambda function gets.

    From ``AWS_LAMBDA_FUNCTION_MEMORY_SIZE`` (MB): ``ceil(mem / 1769)`` clamped to 1..6 and capped by
    ``os.cpu_count()``. Outside Lambda (variable unset or not a positive integer): ``os.cpu_count()``.
    """
    cpus = os.cpu_count() or 1
    raw = os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "").strip()
    if not raw.isdigit() or int(raw) == 0:
        return cpus
    vcpus = min(max(math.ceil(int(raw) / LAMBDA_MB_PER_VCPU), 1), LAMBDA_MAX_VCPUS)
    return min(vcpus, cpus)


class LoadedModel:
    """A model ready to run: its spec, its ONNX Runtime session and the graph's batch size."""

    def __init__(self, spec: ModelSpec, session: ort.InferenceSession, *, folder: Path, load_ms: float) -> None:
        self.spec = spec
        self.session = session
        self.folder = folder
        self.load_ms = load_ms
        self.batch_size = _static(session_input(session, spec.input.name).shape[0])

    def __repr__(self) -> str:
        return f"LoadedModel({self.spec.name!r}, {self.spec.version!r}, batch_size={self.batch_size})"

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Run a batch of preprocessed images and return class probabilities.

        Args:
            batch: shape ``[N, *spec.input.image_shape]``; cast to the model's dtype if needed.

        Returns:
            float array ``[N, len(labels)]``; softmax is applied when ``output.type`` is ``logits``. A graph
            with a fixed batch of 1 is run image by image; a fixed batch ``B > 1`` is run in chunks of ``B``,
            the last one zero-padded and trimmed.

        Raises:
            ValueError: the batch does not have the spec's image shape (a caller bug).
            ModelConfigError: the graph returned a number of scores per image other than the label count.
        """
        spec = self.spec
        expected = spec.input.image_shape
        if batch.ndim != 4 or tuple(batch.shape[1:]) != expected:
            raise ValueError(f"batch shape {list(batch.shape)} does not match [N, {', '.join(map(str, expected))}]")
        batch = batch.astype(_NUMPY_TYPES[spec.input.dtype], copy=False)
        count = batch.shape[0]
        classes = len(spec.labels)
        if count == 0:
            return np.zeros((0, classes), dtype=np.float32)

        step = self.batch_size or count
        chunks = []
        for start in range(0, count, step):
            chunk = batch[start : start + step]
            real = chunk.shape[0]
            if real < step:
                padding = np.zeros((step - real, *expected), dtype=chunk.dtype)
                chunk = np.concatenate([chunk, padding])
            (scores,) = self.session.run([spec.output.name], {spec.input.name: chunk})
            chunks.append(np.asarray(scores).reshape(step, -1)[:real])
        out = np.concatenate(chunks).astype(np.float32, copy=False)

        if out.shape[1] != classes:
            raise ModelConfigError(
                f"{self.folder / SPEC_FILE}: labels has {classes} entries but output "
                f'"{spec.output.name}" returned {out.shape[1]} scores per image',
                field="labels",
            )
        if spec.output.type == "logits":
            out = softmax(out)
        return out


def load_model(folder: Path, *, intra_op_threads: int) -> LoadedModel:
    """Load one ``<name>/<version>`` folder: validate model.json, open the session, check them against each other.

    Raises:
        ModelConfigError: invalid model.json, missing or corrupt model.onnx, or a spec/graph mismatch.
    """
    started = time.perf_counter()
    spec = load_spec(folder / SPEC_FILE)
    onnx_path = folder / MODEL_FILE
    if not onnx_path.is_file():
        raise ModelConfigError(f"{onnx_path}: {MODEL_FILE} is missing next to {SPEC_FILE}", source=str(onnx_path))

    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    try:
        session = ort.InferenceSession(str(onnx_path), sess_options=options, providers=["CPUExecutionProvider"])
    except _ORT_LOAD_ERRORS as exc:
        raise ModelConfigError(
            f"{onnx_path}: ONNX Runtime cannot load the model ({_first_line(exc)})", source=str(onnx_path)
        ) from exc

    check_against_graph(spec, session, source=str(folder / SPEC_FILE))
    load_ms = (time.perf_counter() - started) * 1000
    return LoadedModel(spec, session, folder=folder, load_ms=load_ms)


def check_against_graph(spec: ModelSpec, session: ort.InferenceSession, *, source: str) -> None:
    """Check model.json against the graph's inputs and outputs.

    Raises:
        ModelConfigError: naming the field that disagrees with the graph.
    """

    def fail(field: str, problem: str) -> NoReturn:
        raise ModelConfigError(f"{source}: {field} {problem}", source=source, field=field)

    inputs = {node.name: node for node in session.get_inputs()}
    wanted = spec.input
    if wanted.name not in inputs:
        fail(
            "input.name", f"{_quote(wanted.name)} is not an input of the graph; graph inputs: {_listing(list(inputs))}"
        )
    others = [name for name in inputs if name != wanted.name]
    if others:
        fail("input.name", f"the graph needs inputs besides {_quote(wanted.name)}: {_listing(others)}")

    node = inputs[wanted.name]
    shape: list[Dim] = list(node.shape)
    where = f"the graph input {_quote(wanted.name)} shape {_show_shape(shape)}"
    if len(shape) != 4:
        fail("input.layout", f'"{wanted.layout}" needs a rank-4 input, but {where} has rank {len(shape)}')
    if not _layout_matches(shape, wanted.layout, wanted.channels, wanted.size):
        other = "NHWC" if wanted.layout == "NCHW" else "NCHW"
        if _layout_matches(shape, other, wanted.channels, wanted.size):
            fail("input.layout", f'"{wanted.layout}" does not match {where}; it looks like "{other}"')
    channel_dim, height_dim, width_dim = _dims(shape, wanted.layout)
    if isinstance(channel_dim, int) and channel_dim != wanted.channels:
        fail(
            "input.color_mode",
            f'"{wanted.color_mode}" ({wanted.channels} channel(s)) does not match {where} (layout {wanted.layout})',
        )
    for dim, expected in ((height_dim, wanted.height), (width_dim, wanted.width)):
        if isinstance(dim, int) and dim != expected:
            fail("input.size", f"{list(wanted.size)} does not match {where} (layout {wanted.layout})")
    expected_type = _ORT_TYPES[wanted.dtype]
    if node.type != expected_type:
        fail("input.dtype", f'"{wanted.dtype}" does not match the graph input {_quote(wanted.name)} type {node.type}')

    outputs = {out.name: out for out in session.get_outputs()}
    if spec.output.name not in outputs:
        fail(
            "output.name",
            f"{_quote(spec.output.name)} is not an output of the graph; graph outputs: {_listing(list(outputs))}",
        )
    out_shape: list[Dim] = list(outputs[spec.output.name].shape)
    per_image = out_shape[1:]
    if per_image and all(isinstance(dim, int) for dim in per_image):
        classes = math.prod(dim for dim in per_image if isinstance(dim, int))
        if classes != len(spec.labels):
            fail(
                "labels",
                f"has {len(spec.labels)} entries but the graph output {_quote(spec.output.name)} shape "
                f"{_show_shape(out_shape)} has {classes} classes",
            )


def session_input(session: ort.InferenceSession, name: str) -> Any:
    """The session's input node called ``name``."""
    for node in session.get_inputs():
        if node.name == name:
            return node
    raise KeyError(name)


def _dims(shape: list[Dim], layout: str) -> tuple[Dim, Dim, Dim]:
    """(channels, height, width) dims of a rank-4 shape."""
    if layout == "NCHW":
        return shape[1], shape[2], shape[3]
    return shape[3], shape[1], shape[2]


def _layout_matches(shape: list[Dim], layout: str, channels: int, size: tuple[int, int]) -> bool:
    actual = _dims(shape, layout)
    expected = (channels, size[0], size[1])
    return all(not isinstance(dim, int) or dim == want for dim, want in zip(actual, expected, strict=True))


def _static(dim: Dim) -> int | None:
    return dim if isinstance(dim, int) and dim > 0 else None


def _show_shape(shape: list[Dim]) -> str:
    return "[" + ", ".join(str(dim) if isinstance(dim, int) else f'"{dim}"' for dim in shape) + "]"


def _quote(text: str) -> str:
    return f'"{text}"'


def _listing(items: list[str]) -> str:
    return ", ".join(_quote(item) for item in items) if items else "none"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__
