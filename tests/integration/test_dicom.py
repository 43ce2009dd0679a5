"""DICOM end to end on the local stack: a batch over a folder of DICOM files, an upload trigger on a ``.dcm``, and
the CLI (``predict x.dcm``, ``batch submit DIR`` with extensionless files).

The files are written by :mod:`tests.dicomfactory`: CT-like slices (Hounsfield units through a rescale intercept,
the file's own window 40/400) with a bright disc in the upper-left quarter. The ``quadrants-dicom`` model (grey
16x16, the brightest quadrant wins, ``"frames": "all"``) answers ``top-left`` for them once the window is applied:
a file read with the wrong intensities (no Modality LUT, raw counts) would still have its disc there, so the tests
also compare the answer with what the same file gives as a windowed PNG.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
from PIL import Image
from pydicom.uid import generate_uid

from modelrun_cli.main import run
from modelrun_local.runtime import LocalRuntime
from tests.dicomfactory import ct_slice, dicom_bytes, write
from tests.integration.conftest import API_KEY, DICOM_MODEL, Api
from tests.integration.helpers import all_results, upload, wait_for
from tests.integration.test_tasks import png_pixels, results_file
from tests.integration.test_upload_triggers import put, unique, wait_for_result
from tests.quality import confusion_matrix, mean_iou

WINDOW = (40.0, 400.0)
TIMEOUT = ["--timeout", "120"]


def ct_file(*, seed: int = 0, frames: int = 1, study: str | None = None, series: str | None = None) -> bytes:
    pixels = ct_slice(seed=seed) if frames == 1 else np.stack([ct_slice(seed=seed + i) for i in range(frames)])
    return dicom_bytes(pixels, intercept=-1024, window=WINDOW, study_uid=study, series_uid=series, instance=seed + 1)


def uids(data: bytes) -> dict[str, str]:
    from pydicom import dcmread

    ds = dcmread(io.BytesIO(data))
    return {
        "study_instance_uid": ds.StudyInstanceUID,
        "series_instance_uid": ds.SeriesInstanceUID,
        "sop_instance_uid": ds.SOPInstanceUID,
    }


def windowed_png(seed: int = 0) -> bytes:
    """The slice as an 8-bit PNG after the same window (DICOM's linear function): what the model must see."""
    hu = ct_slice(seed=seed).astype(np.float64) - 1024
    center, width = WINDOW
    low, high = center - 0.5 - (width - 1) / 2, center - 0.5 + (width - 1) / 2
    ramp = ((hu - (center - 0.5)) / (width - 1) + 0.5) * 255
    values = np.where(hu <= low, 0, np.where(hu > high, 255, ramp))
    buffer = io.BytesIO()
    Image.fromarray(np.round(values).astype(np.uint8), mode="L").save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def series() -> dict[str, bytes]:
    """A series of four single-frame slices and one 3-frame file, sharing study and series UIDs."""
    study, series_uid = generate_uid(), generate_uid()
    files = {f"IM{index:04d}": ct_file(seed=index, study=study, series=series_uid) for index in range(4)}
    files["MULTIFRAME"] = ct_file(seed=10, frames=3, study=study, series=series_uid)
    return files


# -- batches -----------------------------------------------------------------------------------------------------
def test_a_batch_over_a_folder_of_dicom_files_predicts_each_and_each_frame_of_a_multi_frame_file(
    api: Api, s3: Any, images_bucket: str, series: dict[str, bytes]
) -> None:
    # Given a DICOM series in the images bucket, extensionless as a scanner exports it, plus a .dcm copy
    prefix = f"dicom-batch/{unique('series')}"
    files = {f"{prefix}/{name}": data for name, data in series.items()}
    files[f"{prefix}/IM0000.dcm"] = series["IM0000"]
    upload(s3, images_bucket, files)

    # When a batch of the prefix runs with the frames "all" model
    answer = api.post("/batches", json={"model": DICOM_MODEL, "s3_prefix": prefix + "/", "chunk_size": 2})
    assert answer.status_code == 202, answer.text
    job = wait_for(api, answer.json()["batch_id"])

    # Then every file is predicted, and each outcome carries the file's UIDs
    assert (job["status"], job["counts"]["predicted"]) == ("COMPLETED", len(files))
    outcomes = {Path(outcome["key"]).name: outcome for outcome in all_results(api, job["batch_id"])}
    assert set(outcomes) == {Path(key).name for key in files}
    for name, outcome in outcomes.items():
        source = series[name.removesuffix(".dcm")]
        assert {key: outcome["dicom"][key] for key in uids(source)} == uids(source), name
    # And the multi-frame file has one result per frame, in order, each the windowed image's answer
    frames = outcomes["MULTIFRAME"]["frames"]
    assert [frame["frame"] for frame in frames] == [0, 1, 2]
    assert {frame["label"] for frame in frames} == {"top-left"}
    # And a single-frame file with frames "all" answers as a one-frame list with the windowed PNG's label
    png_label = api.post(f"/predictions?model={DICOM_MODEL}", data=windowed_png(0), headers=png_headers()).json()
    assert [frame["label"] for frame in outcomes["IM0000"]["frames"]] == [png_label["frames"][0]["label"]]


def png_headers() -> dict[str, str]:
    return {"Content-Type": "image/png"}


# -- upload triggers ---------------------------------------------------------------------------------------------
def test_a_dcm_dropped_in_uploads_is_predicted_and_its_result_written_as_for_a_png(s3: Any, images_bucket: str) -> None:
    # Given a DICOM slice
    data = ct_file(seed=3)
    key = f"uploads/{DICOM_MODEL}/{unique('slice.dcm')}"

    # When it is put under uploads/<model>/
    etag = put(s3, images_bucket, key, data)

    # Then results/<key>.json holds the prediction, the object's ETag and the file's UIDs
    document = wait_for_result(s3, images_bucket, f"results/{key}.json", etag=etag)
    assert "error" not in document, document
    assert (document["key"], document["model"]) == (key, DICOM_MODEL)
    assert [frame["label"] for frame in document["frames"]] == ["top-left"]
    assert {name: document["dicom"][name] for name in uids(data)} == uids(data)


def test_a_damaged_dcm_dropped_in_uploads_gets_an_error_document_with_invalid_dicom(
    s3: Any, images_bucket: str
) -> None:
    data = ct_file(seed=4)
    key = f"uploads/{DICOM_MODEL}/{unique('damaged.dcm')}"
    etag = put(s3, images_bucket, key, data[: len(data) - 3000])
    document = wait_for_result(s3, images_bucket, f"results/{key}.json", etag=etag)
    assert document["error"]["code"] == "invalid_dicom"


# -- the CLI -----------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def flags(stack: LocalRuntime, images_bucket: str) -> list[str]:
    return ["--endpoint", stack.url, "--api-key", API_KEY, "--bucket", images_bucket]


@pytest.fixture
def cli_environment(monkeypatch: pytest.MonkeyPatch, aws_environment: dict[str, str], stack: LocalRuntime) -> None:
    for name in ("ENDPOINT", "API_KEY", "BUCKET", "AWS_ENDPOINT", "STACK", "LOCAL_STATE"):
        monkeypatch.delenv(f"MODELRUN_{name}", raising=False)
    for name, value in aws_environment.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("MODELRUN_AWS_ENDPOINT", stack.aws_endpoint)


def cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = run(list(argv), env=os.environ, cwd=Path.cwd(), out=out, err=err)
    return code, out.getvalue(), err.getvalue()


@pytest.mark.usefixtures("cli_environment")
def test_modelrun_predict_of_a_dcm_prints_each_frames_answer_and_the_uids(tmp_path: Path, flags: list[str]) -> None:
    # Given a 2-frame DICOM file on disk
    data = ct_file(seed=20, frames=2)
    path = write(tmp_path / "scan.dcm", data)

    # When `modelrun predict scan.dcm` runs
    code, out, err = cli("predict", str(path), "--model", DICOM_MODEL, *flags)

    # Then it prints both frames' answers and the file's UIDs
    assert code == 0, err
    lines = out.splitlines()
    assert lines[:2] == ["2 frames", "frame 0"]
    assert lines[2].split()[0] == "top-left"
    assert "frame 1" in lines
    ids = uids(data)
    assert f"  study    {ids['study_instance_uid']}" in lines
    assert f"  series   {ids['series_instance_uid']}" in lines
    assert f"  instance {ids['sop_instance_uid']}" in lines
    assert any(line.startswith("dicom CT 64x64") for line in lines)


@pytest.mark.usefixtures("cli_environment")
def test_modelrun_predict_of_a_large_dcm_goes_by_s3_and_answers_the_same(
    tmp_path: Path, flags: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from modelrun_cli import uploads

    monkeypatch.setattr(uploads, "DIRECT_BODY_LIMIT", 1024)  # the 8 KiB slice then takes the large-file path
    data = ct_file(seed=21)
    path = write(tmp_path / "IM0001", data)  # extensionless: the marker decides
    code, out, err = cli("predict", str(path), "--model", DICOM_MODEL, "--json", *flags)
    assert code == 0, err
    assert "uploading it through the API (POST /uploads) into this API key's space" in err
    answer = json.loads(out)
    assert answer["frames"][0]["label"] == "top-left"
    assert answer["dicom"]["sop_instance_uid"] == uids(data)["sop_instance_uid"]


@pytest.mark.usefixtures("cli_environment")
def test_modelrun_batch_submit_of_a_folder_finds_extensionless_dicom_files_by_their_bytes(
    tmp_path: Path, flags: list[str], series: dict[str, bytes]
) -> None:
    # Given a folder of extensionless DICOM files, a notes file and a PNG
    folder = tmp_path / "export"
    for name, data in series.items():
        write(folder / "SE1" / name, data)
    (folder / "notes.txt").write_text("not an image")

    # When the folder is submitted and waited for
    code, out, err = cli("batch", "submit", str(folder), "--model", DICOM_MODEL, "--wait", "--json", *TIMEOUT, *flags)

    # Then exactly the DICOM files were uploaded and predicted
    assert code == 0, err
    job = json.loads(out)
    assert (job["status"], job["total"], job["counts"]["predicted"]) == ("COMPLETED", len(series), len(series))
    code, out, err = cli("batch", "results", job["batch_id"], "--all", "--jsonl", *flags)
    assert code == 0, err
    results = [json.loads(line) for line in out.splitlines()]
    assert sorted(Path(result["key"]).name for result in results) == sorted(series)
    assert all(result["dicom"]["modality"] == "CT" for result in results)


# -- the medical demo ----------------------------------------------------------------------------------------------
CT_SAMPLES = Path(__file__).resolve().parents[2] / "samples" / "ct"
CT_CLASSES = 4
MIN_CT_MEAN_IOU = 0.85


def test_a_batch_of_the_demo_ct_series_reaches_its_held_out_quality_and_links_every_frames_mask(
    api: Api, s3: Any, images_bucket: str, record_property: Any
) -> None:
    # Given the committed CT series (several transfer syntaxes, MONOCHROME1, a 4-frame RLE file) in the bucket
    truth = json.loads((CT_SAMPLES / "ground_truth.json").read_text(encoding="utf-8"))["files"]
    prefix = f"dicom-ct/{unique('series')}"
    upload(s3, images_bucket, {f"{prefix}/{name}": (CT_SAMPLES / name).read_bytes() for name in truth})

    # When the ct model (its own window, every frame) runs over the prefix
    answer = api.post("/batches", json={"model": "ct", "s3_prefix": prefix + "/", "chunk_size": 4})
    assert answer.status_code == 202, answer.text
    job = wait_for(api, answer.json()["batch_id"], timeout=180)

    # Then every file is predicted, with one mask per frame in S3 that matches the ground truth
    assert (job["status"], job["counts"]["predicted"]) == ("COMPLETED", len(truth)), job
    matrix = np.zeros((CT_CLASSES, CT_CLASSES), dtype=np.int64)
    entries = results_file(job)
    assert sorted(Path(entry["key"]).name for entry in entries) == sorted(truth)
    for entry in entries:
        expected = truth[Path(entry["key"]).name]["frames"]
        assert [frame["frame"] for frame in entry["frames"]] == [frame["frame"] for frame in expected]
        for frame, wanted in zip(entry["frames"], expected, strict=True):
            key = frame["mask"]["s3_key"]
            assert key == f"results/{job['batch_id']}/masks/{entry['item']}.f{frame['frame']}.png"
            stored = s3.get_object(Bucket=images_bucket, Key=key)["Body"].read()
            reference = np.asarray(Image.open(CT_SAMPLES / wanted["mask"]))
            matrix += confusion_matrix(reference, png_pixels(stored), CT_CLASSES)
    ct_iou = mean_iou(matrix)
    assert ct_iou >= MIN_CT_MEAN_IOU

    # And the results listing links each frame's mask for the caller to download
    multi = next(item for item in all_results(api, job["batch_id"]) if len(item["frames"]) > 1)
    linked = [frame["mask"]["url"] for frame in multi["frames"]]
    assert len(set(linked)) == len(multi["frames"])
    first = requests.get(linked[0], timeout=30)
    assert first.status_code == 200
    assert first.content.startswith(b"\x89PNG")
    record_property("ct_mean_iou", round(ct_iou, 4))
