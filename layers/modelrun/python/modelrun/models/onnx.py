"""The ONNX Runtime side of a model: the session, its threads, the check of model.json against the graph, and the
per-image steps of a prediction (prepare, infer, decode).

Loading checks model.json against the graph so a mismatch fails at load with the field named, not later with a shape
error from ONNX Runtime. Spatial dims of the input may be symbolic (or -1) when the transforms fix or bound the size;
rank, channels, dtype and every static dim are still checked.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final, NoReturn

import numpy as np
import onnxruntime as ort
from onnxruntime.capi import onnxruntime_pybind11_state as ort_state
from PIL import Image

from modelrun.config import int_env
from modelrun.decoders import Dim, Mask, decoder_for
from modelrun.decoders.classification import softmax
from modelrun.decoders.common import static
from modelrun.errors import ModelConfigError
from modelrun.images.image import Frame
from modelrun.models.spec import ModelSpec, load_spec
from modelrun.transforms.geometry import Geometry
from modelrun.transforms.pipeline import Extent, Pipeline
from modelrun.transforms.user_code import UserCode, load_user_code

MODEL_FILE: Final = "model.onnx"
SPEC_FILE: Final = "model.json"

LAMBDA_MB_PER_VCPU: Final = 1769
"""Lambda gives one full vCPU per 1,769 MB of memory, up to 6 vCPUs at 10,240 MB."""
LAMBDA_MAX_VCPUS: Final = 6

_ORT_TYPES: Final = {"float32": "tensor(float)", "float16": "tensor(float16)", "uint8": "tensor(uint8)"}
_NUMPY_OF_ORT: Final = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(uint8)": np.uint8,
    "tensor(int8)": np.int8,
    "tensor(int32)": np.int32,
    "tensor(int64)": np.int64,
    "tensor(bool)": np.bool_,
}
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

Feeds = dict[str, np.ndarray]
"""One image's graph inputs by name, without the batch dimension."""
Outputs = dict[str, np.ndarray]
"""One image's graph outputs by name, without the batch dimension."""


INTRA_OP_THREADS_ENV: Final = "INTRA_OP_THREADS"
"""Sets the intra-op threads outright. Unset on AWS; the local runtime sets it for its sandboxes, processes that
share the machine's cores (``modelrun_local.lambdas.sandbox_threads``)."""


def default_threads() -> int:
    """Intra-op threads matched to the vCPUs the Lambda function gets.

    ``INTRA_OP_THREADS`` when it is set. Otherwise from ``AWS_LAMBDA_FUNCTION_MEMORY_SIZE`` (MB): ``ceil(mem /
    1769)`` clamped to 1..6 and capped by ``os.cpu_count()``; outside Lambda (variable unset or not a positive
    integer): ``os.cpu_count()``.

    Raises:
        ConfigurationError: ``INTRA_OP_THREADS`` is set but not a positive integer.
    """
    configured = int_env(INTRA_OP_THREADS_ENV, default=0)
    if configured:
        return configured
    cpus = os.cpu_count() or 1
    raw = os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "").strip()
    if not raw.isdigit() or int(raw) == 0:
        return cpus
    vcpus = min(max(math.ceil(int(raw) / LAMBDA_MB_PER_VCPU), 1), LAMBDA_MAX_VCPUS)
    return min(vcpus, cpus)


class LoadedModel:
    """A model ready to run: its spec, session, transforms, task decoder and optional user code.

    A prediction is :meth:`prepare` (one image to its inputs and geometry), :meth:`infer` (many images' inputs to
    their outputs, batched) and :meth:`decode` (one image's outputs to its result). All three are thread-safe.
    """

    def __init__(
        self,
        spec: ModelSpec,
        session: ort.InferenceSession,
        *,
        folder: Path,
        load_ms: float,
        code: UserCode | None = None,
    ) -> None:
        self.spec = spec
        self.session = session
        self.folder = folder
        self.load_ms = load_ms
        self.code = code
        self.pipeline = Pipeline(spec.transforms)
        self.decoder = decoder_for(spec.task)
        self.inputs = {node.name: node for node in session.get_inputs()}
        self.batch_size = static(self.inputs[spec.input_name].shape[0])
        graph_outputs = [node.name for node in session.get_outputs()]
        if spec.output is None or (code is not None and code.postprocess is not None):
            # User postprocess gets every output; the decoder reads only its own.
            self.fetch: tuple[str, ...] = tuple(graph_outputs)
        else:
            self.fetch = self.decoder.output_names(spec.output)

    def __repr__(self) -> str:
        return f"LoadedModel({self.spec.name!r}, {self.spec.version!r}, batch_size={self.batch_size})"

    def prepare(self, image: Image.Image | Frame) -> tuple[Feeds, Geometry]:
        """One decoded image's (or frame's) graph inputs (no batch dimension) and where its pixels came from.

        The model's ``preprocess`` when its code defines one, else its transforms. ``preprocess`` gets the image after
        the VOI (:meth:`Pipeline.intensities`): a DICOM greyscale frame as an ``F`` image in 0..255, a raster image as
        decoded unless the model declares a window.

        Raises:
            ModelCodeError: user ``preprocess`` raised, or returned something that does not fit the graph inputs.
            UnsupportedMediaType: the transforms cannot convert the image's colour mode.
        """
        if self.code is None or self.code.preprocess is None:
            tensor, geometry = self.pipeline.run(image)
            return {self.spec.input_name: tensor}, geometry
        image = self.pipeline.intensities(image if isinstance(image, Frame) else Frame(image))
        width, height = image.size
        result = self.code.call("preprocess", image, self.spec)
        geometry = Geometry.identity(height, width)
        if isinstance(result, tuple):
            if len(result) != 2 or not isinstance(result[1], Geometry):
                raise self.code.fail("preprocess", "returned a tuple that is not (inputs, Geometry)")
            result, geometry = result
        if isinstance(result, np.ndarray):
            result = {self.spec.input_name: result}
        if not isinstance(result, Mapping):
            raise self.code.fail(
                "preprocess", f"returned {type(result).__name__}, not a numpy array or a dict of input name to array"
            )
        if set(result) != set(self.inputs):
            raise self.code.fail(
                "preprocess",
                f"returned inputs {_listing(sorted(map(str, result)))}; the graph takes "
                f"{_listing(sorted(self.inputs))}",
            )
        return {name: self._fit(name, array) for name, array in result.items()}, geometry

    def infer(self, feeds: Sequence[Mapping[str, np.ndarray]]) -> list[Outputs]:
        """Run many images' inputs and return each image's outputs, in input order, without the batch dimension.

        Images whose inputs have equal shapes run together: in one call for a dynamic batch dimension, one by one
        for a fixed batch of 1, in chunks for a fixed batch B (the last chunk filled with zero images whose outputs
        are dropped). Images are never padded spatially to make a group.
        """
        results: list[Outputs | None] = [None] * len(feeds)
        groups: dict[tuple[tuple[str, tuple[int, ...], str], ...], list[int]] = {}
        for index, feed in enumerate(feeds):
            key = tuple(sorted((name, tuple(array.shape), array.dtype.str) for name, array in feed.items()))
            groups.setdefault(key, []).append(index)
        for members in groups.values():
            step = self.batch_size or len(members)
            for start in range(0, len(members), step):
                chunk = members[start : start + step]
                if len(chunk) == 1:
                    # A batch of one is a view of the image's own array (np.stack would copy it).
                    batch = {name: np.ascontiguousarray(array[np.newaxis]) for name, array in feeds[chunk[0]].items()}
                else:
                    batch = {name: np.stack([feeds[index][name] for index in chunk]) for name in feeds[chunk[0]]}
                if len(chunk) < step:
                    batch = {
                        name: np.concatenate([array, np.zeros((step - len(chunk), *array.shape[1:]), array.dtype)])
                        for name, array in batch.items()
                    }
                arrays = self.session.run(list(self.fetch), batch)
                for row, index in enumerate(chunk):
                    results[index] = {
                        name: np.asarray(array)[row] for name, array in zip(self.fetch, arrays, strict=True)
                    }
        return [result for result in results if result is not None]

    def decode(self, outputs: Mapping[str, np.ndarray], geometry: Geometry) -> dict[str, Any]:
        """One image's result: the model's ``postprocess`` when its code defines one, else the task decoder's.

        A segmentation result holds a :class:`~modelrun.decoders.Mask` under ``"mask"``; the caller inlines or
        stores it.

        Raises:
            ModelCodeError: user ``postprocess`` raised, or returned something other than a JSON-ready dict.
            ModelConfigError: an output whose dynamic shape does not fit the output config.
        """
        if self.code is None or self.code.postprocess is None:
            return self.decoder.decode(outputs, self.spec.output, self.spec.labels, geometry)
        result = self.code.call("postprocess", dict(outputs), self.spec, geometry)
        if not isinstance(result, dict):
            raise self.code.fail("postprocess", f"returned {type(result).__name__}, not a dict")
        try:
            json.dumps(result, default=_mask_only)
        except (TypeError, ValueError) as exc:
            raise self.code.fail("postprocess", f"returned a result that is not JSON-ready ({exc})") from exc
        return result

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Run a batch of preprocessed images through a classification model and return class probabilities.

        Args:
            batch: shape ``[N, *image_shape]`` as the transforms make it; cast to the model's dtype if needed.

        Returns:
            float array ``[N, len(labels)]``; softmax is applied when ``output.type`` is ``logits``. Batched as
            :meth:`infer` batches.

        Raises:
            ValueError: not a classification model, or the batch does not have the transforms' image shape (a
                caller bug).
            ModelConfigError: the graph returned a number of scores per image other than the label count.
        """
        spec = self.spec
        if spec.task != "classification" or spec.output is None:
            raise ValueError(f"run() predicts classification models only; {spec.name} is {spec.task}")
        expected = self.pipeline.image_shape()
        actual = tuple(batch.shape[1:])
        if batch.ndim != len(expected) + 1 or any(
            want is not None and want != got for want, got in zip(expected, actual, strict=True)
        ):
            shown = ", ".join("?" if dim is None else str(dim) for dim in expected)
            raise ValueError(f"batch shape {list(batch.shape)} does not match [N, {shown}]")
        batch = batch.astype(self.pipeline.dtype, copy=False)
        classes = len(spec.labels)
        if batch.shape[0] == 0:
            return np.zeros((0, classes), dtype=np.float32)
        outputs = self.infer([{spec.input_name: row} for row in batch])
        out = np.stack([np.asarray(result[spec.output.name]).reshape(-1) for result in outputs])
        out = out.astype(np.float32, copy=False)
        if out.shape[1] != classes:
            raise ModelConfigError(
                f"{self.folder / SPEC_FILE}: labels has {classes} entries but output "
                f'"{spec.output.name}" returned {out.shape[1]} scores per image',
                field="labels",
            )
        if spec.output.type == "logits":
            out = softmax(out)
        return out

    def _fit(self, name: str, array: Any) -> np.ndarray:
        """User preprocess's array for input ``name``, checked against the graph and cast to its element type."""
        assert self.code is not None
        node = self.inputs[name]
        per_image: list[Dim] = list(node.shape)[1:]
        if not isinstance(array, np.ndarray):
            raise self.code.fail("preprocess", f'returned {type(array).__name__} for input "{name}", not an array')
        fits = array.ndim == len(per_image) and all(
            static(want) is None or want == got for want, got in zip(per_image, array.shape, strict=True)
        )
        if not fits:
            raise self.code.fail(
                "preprocess",
                f'returned shape {list(array.shape)} for input "{name}"; the graph takes {_show_shape(per_image)} '
                "per image (no batch dimension)",
            )
        wanted = _NUMPY_OF_ORT.get(node.type)
        return array if wanted is None else array.astype(wanted, copy=False)


def load_model(folder: Path, *, intra_op_threads: int) -> LoadedModel:
    """Load one ``<name>/<version>`` folder: validate model.json, import its code, open the session, check them
    against each other.

    Raises:
        ModelConfigError: invalid model.json, broken user code, missing or corrupt model.onnx, or a spec/graph
            mismatch.
    """
    started = time.perf_counter()
    spec = load_spec(folder / SPEC_FILE)
    source = str(folder / SPEC_FILE)
    code = load_user_code(folder / spec.code) if spec.code is not None else None
    if spec.output is None and (code is None or code.postprocess is None):
        raise ModelConfigError(
            f"{source}: output is required unless the code file defines postprocess", source=source, field="output"
        )
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

    check_against_graph(spec, session, source=source, user_preprocess=code is not None and code.preprocess is not None)
    load_ms = (time.perf_counter() - started) * 1000
    return LoadedModel(spec, session, folder=folder, load_ms=load_ms, code=code)


def check_against_graph(
    spec: ModelSpec, session: ort.InferenceSession, *, source: str, user_preprocess: bool = False
) -> None:
    """Check model.json against the graph's inputs and outputs.

    The input against the transforms (unless user ``preprocess`` makes the inputs: then only ``input.name`` is
    checked), the outputs by the task's decoder (when model.json has an ``output``).

    Raises:
        ModelConfigError: naming the field that disagrees with the graph.
    """

    def fail(field: str, problem: str) -> NoReturn:
        raise ModelConfigError(f"{source}: {field} {problem}", source=source, field=field)

    inputs = {node.name: node for node in session.get_inputs()}
    wanted = spec.input_name
    if wanted not in inputs:
        fail("input.name", f"{_quote(wanted)} is not an input of the graph; graph inputs: {_listing(list(inputs))}")
    if not user_preprocess:
        others = [name for name in inputs if name != wanted]
        if others:
            fail("input.name", f"the graph needs inputs besides {_quote(wanted)}: {_listing(others)}")
        _check_input(Pipeline(spec.transforms), inputs[wanted], fail)

    if spec.output is not None:
        outputs = {node.name: list(node.shape) for node in session.get_outputs()}
        decoder_for(spec.task).check_graph(spec.output, outputs, spec.labels, fail)


def _check_input(pipeline: Pipeline, node: Any, fail: Any) -> None:
    """The transforms' array against the graph input: rank, layout, channels, static sizes, dtype."""
    shape: list[Dim] = list(node.shape)
    layout = pipeline.layout
    layout_field = pipeline.layout_step.origin.field("layout") if pipeline.layout_step else "transforms"
    where = f"the graph input {_quote(node.name)} shape {_show_shape(shape)}"
    if len(shape) != 4:
        fail(layout_field, f'"{layout}" needs a rank-4 input, but {where} has rank {len(shape)}')
    height, width = pipeline.extents()
    size = (height.fixed, width.fixed)
    if not _layout_matches(shape, layout, pipeline.channels, size):
        other = "NHWC" if layout == "NCHW" else "NCHW"
        if _layout_matches(shape, other, pipeline.channels, size):
            fail(layout_field, f'"{layout}" does not match {where}; it looks like "{other}"')
    channel_dim, height_dim, width_dim = _dims(shape, layout)
    if static(channel_dim) is not None and channel_dim != pipeline.channels:
        color_field = pipeline.color.origin.field("mode") if pipeline.color else "transforms"
        fail(
            color_field,
            f'"{pipeline.color_mode}" ({pipeline.channels} channel(s)) does not match {where} (layout {layout})',
        )
    for dim, extent, side in ((height_dim, height, "height"), (width_dim, width, "width")):
        _check_side(dim, extent, side, size, where, layout, fail)
    expected_type = _ORT_TYPES[pipeline.dtype]
    if node.type != expected_type:
        dtype_field = pipeline.dtype_step.origin.field("dtype") if pipeline.dtype_step else "transforms"
        fail(dtype_field, f'"{pipeline.dtype}" does not match the graph input {_quote(node.name)} type {node.type}')


def _check_side(
    dim: Dim, extent: Extent, side: str, size: tuple[int | None, int | None], where: str, layout: str, fail: Any
) -> None:
    fixed = static(dim)
    if fixed is not None and extent.fixed is None:
        fail(
            "transforms",
            f"give images of varying {side}, but {where} has a fixed {side} {fixed} (layout {layout}); end them with "
            'a "resize" to a "size", a "center_crop" or a "letterbox"',
        )
    if fixed is not None and extent.fixed != fixed:
        shown = "[" + ", ".join("?" if value is None else str(value) for value in size) + "]"
        fail(extent.by, f"{shown} does not match {where} (layout {layout})")
    if fixed is None and extent.bound is None:
        fail(
            "transforms",
            f"must fix or bound the image {side}: {where} takes any {side} (layout {layout}), and an unbounded one "
            'would take any memory; add a "resize" ("size", "longer" or "keep_aspect"), a "center_crop" or a '
            '"letterbox"',
        )


def _mask_only(value: Any) -> Any:
    """``json.dumps`` default: a Mask passes (the caller turns it into JSON), anything else is not JSON-ready."""
    if isinstance(value, Mask):
        return None
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _dims(shape: list[Dim], layout: str) -> tuple[Dim, Dim, Dim]:
    """(channels, height, width) dims of a rank-4 shape."""
    if layout == "NCHW":
        return shape[1], shape[2], shape[3]
    return shape[3], shape[1], shape[2]


def _layout_matches(shape: list[Dim], layout: str, channels: int, size: tuple[int | None, int | None]) -> bool:
    actual = _dims(shape, layout)
    expected = (channels, size[0], size[1])
    return all(static(dim) is None or want is None or dim == want for dim, want in zip(actual, expected, strict=True))


def _show_shape(shape: Sequence[Dim]) -> str:
    return "[" + ", ".join(str(dim) if isinstance(dim, int) else f'"{dim}"' for dim in shape) + "]"


def _quote(text: str) -> str:
    return f'"{text}"'


def _listing(items: list[str]) -> str:
    return ", ".join(_quote(item) for item in items) if items else "none"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__
