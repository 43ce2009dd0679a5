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


PATIENT_NAME = "SECRET^PATIENT"
"""A patient name every built DICOM file carries, so tests can prove it never leaves the decoder."""


def dicom_bytes(
    stored: Any,
    *,
    photometric: str = "MONOCHROME2",
    slope: float | None = None,
    intercept: float | None = None,
    window: tuple[float, float] | None = None,
    transfer_syntax: str = "1.2.840.10008.1.2.1",
    sop_class: str = "1.2.840.10008.5.1.4.1.1.2",
    **attributes: Any,
) -> bytes:
    """A DICOM Part 10 file (preamble, ``DICM``, file meta) holding ``stored`` as its native pixel data.

    Args:
        stored: the stored values, ``[rows, columns]``, ``[frames, rows, columns]`` or ``[rows, columns, 3]`` for RGB;
            uint8 or (u)int16.
        photometric: the photometric interpretation.
        slope, intercept: Rescale Slope and Intercept (left out when None).
        window: the file's first window as (centre, width) (left out when None).
        transfer_syntax: the file meta's transfer syntax UID; for a compressed one, each frame's stored bytes are
            encapsulated as they are (not a valid codestream: pixel data a decoder refuses).
        sop_class: the SOP Class UID (CT Image Storage by default).
        attributes: any other attribute by keyword.
    """
    import io

    import numpy as np
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import UID, generate_uid

    array = np.asarray(stored)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(sop_class)
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = UID(transfer_syntax)
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = UID(sop_class)
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.PatientName = PATIENT_NAME
    ds.PatientID = "SECRET-ID-4242"
    ds.Modality = "CT"
    colour = photometric not in ("MONOCHROME1", "MONOCHROME2")
    frames = array.shape[0] if array.ndim == 3 and not colour else 1
    ds.Rows, ds.Columns = array.shape[-3:-1] if colour else array.shape[-2:]
    if frames > 1:
        ds.NumberOfFrames = frames
    ds.SamplesPerPixel = 3 if colour else 1
    if colour:
        ds.PlanarConfiguration = 0
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = array.dtype.itemsize * 8
    ds.BitsStored = ds.BitsAllocated
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 1 if array.dtype.kind == "i" else 0
    if slope is not None:
        ds.RescaleSlope = slope
    if intercept is not None:
        ds.RescaleIntercept = intercept
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    little = transfer_syntax != "1.2.840.10008.1.2.2"
    native = array.astype(array.dtype.newbyteorder("<" if little else ">")).tobytes()
    if UID(transfer_syntax).is_encapsulated:
        from pydicom.encaps import encapsulate

        ds.PixelData = encapsulate([native[i::frames] for i in range(frames)])
        ds["PixelData"].VR = "OB"
    else:
        ds.PixelData = native
    buffer = io.BytesIO()
    implicit = transfer_syntax == "1.2.840.10008.1.2"
    ds.save_as(buffer, enforce_file_format=True, little_endian=little, implicit_vr=implicit)
    return buffer.getvalue()
