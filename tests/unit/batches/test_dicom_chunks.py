"""DICOM in batches: a model of every frame stores one result (and mask) per frame, a bad DICOM file is that image's
permanent failure with its code, and a prefix lists DICOM keys with or without ``.dcm``."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from pydicom.data import get_testdata_file

from modelrun.batches.chunks import Chunk, ChunkPredictor
from modelrun.batches.keys import BatchKeys
from modelrun.batches.manifest import prefix_keys
from modelrun.models.registry import ModelRegistry
from tests.batchfixtures import BUCKET, DEFAULT, BatchAws
from tests.unit.batches.test_task_chunks import (  # the chunk predictor fixture too
    BATCH,
    predictor,
    results_file,
    s3_bytes,
    shown,
    write_segmenter,
)
from tests.unit.conftest import PATIENT_NAME, dicom_bytes

__all__ = ["predictor"]


@pytest.fixture
def registry(tmp_path: Path) -> ModelRegistry:
    """The bright-pixel segmenter of the chunk tests, predicting every frame."""
    write_segmenter(tmp_path, "halves-all")
    spec_path = tmp_path / "halves-all" / "1" / "model.json"
    spec = json.loads(spec_path.read_text())
    spec["frames"] = "all"
    spec_path.write_text(json.dumps(spec))
    return ModelRegistry(tmp_path, intra_op_threads=1)


def run(aws: BatchAws, predictor: ChunkPredictor, files: dict[str, bytes]) -> dict[str, Any]:
    for key, data in files.items():
        aws.put(key, data)
    aws.store.for_tenant(DEFAULT).create(
        {"batch_id": BATCH, "model": "halves-all", "version": "1", "total": len(files)}
    )
    chunk = Chunk(
        batch_id=BATCH,
        index=0,
        items=list(enumerate(files)),
        bucket=BUCKET,
        model="halves-all",
        version="1",
        tenant=DEFAULT,
    )
    return predictor.run(chunk)


def test_a_chunk_of_dicom_files_keeps_per_frame_results_and_fails_only_the_bad_files(
    aws: BatchAws, predictor: ChunkPredictor
) -> None:
    # given two frames (the first bright on its left half, the second dark), a cut file, an RT plan and a PNG
    frames = np.zeros((2, 8, 8), np.uint8)
    frames[0, :, :4] = 255
    two_frames = dicom_bytes(frames, window=(127.5, 256.0))
    rtplan = Path(get_testdata_file("rtplan.dcm") or "").read_bytes()
    buffer = io.BytesIO()
    Image.new("L", (8, 8), 0).save(buffer, "PNG")
    files = {
        "scans/two-frames.dcm": two_frames,
        "scans/cut": two_frames[:-40],
        "scans/plan.dcm": rtplan,
        "scans/blank.png": buffer.getvalue(),
    }

    # when the chunk is predicted
    summary = run(aws, predictor, files)
    outcomes = shown(aws)

    # then the good files are predicted, each frame with its own mask, and each bad one failed with its code
    assert (summary["predicted"], summary["failed"]) == (2, 2)
    first = outcomes[0]["frames"]
    assert [entry["frame"] for entry in first] == [0, 1]
    assert [entry["mask"]["s3_key"] for entry in first] == [
        BatchKeys(DEFAULT, BATCH).mask(0, 0),
        BatchKeys(DEFAULT, BATCH).mask(0, 1),
    ]
    mask = np.asarray(Image.open(io.BytesIO(s3_bytes(aws, BatchKeys(DEFAULT, BATCH).mask(0, 0)))))
    assert mask[:, :4].all()
    assert not mask[:, 4:].any()
    assert not np.asarray(Image.open(io.BytesIO(s3_bytes(aws, BatchKeys(DEFAULT, BATCH).mask(0, 1))))).any()
    assert outcomes[0]["dicom"]["number_of_frames"] == 2
    assert (outcomes[1]["status"], outcomes[1]["error"]["code"]) == ("failed", "invalid_dicom")
    assert outcomes[2]["error"]["code"] == "dicom_without_pixel_data"
    assert [entry["frame"] for entry in outcomes[3]["frames"]] == [0]
    # and the results file has the same frames, and no patient data anywhere
    entries = results_file(aws)
    assert [entry["frame"] for entry in entries[0]["frames"]] == [0, 1]
    assert PATIENT_NAME not in json.dumps(entries)


def test_a_prefix_lists_dicom_keys_with_or_without_an_extension(aws: BatchAws) -> None:
    for key in ("study/a.dcm", "study/b", "study/c.DCM", "study/d.png", "study/folder/"):
        aws.put(key, b"x")
    assert list(prefix_keys(aws.s3, BUCKET, "study/")) == ["study/a.dcm", "study/b", "study/c.DCM", "study/d.png"]
