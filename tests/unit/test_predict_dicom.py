"""DICOM through the real predict handler (functions/predict/app.py) with API Gateway events: every file pydicom
bundles gets its real HTTP status (200, or a 4xx with its code, never a 5xx), in raw, base64 JSON and S3 forms."""

from __future__ import annotations

import base64
import importlib.util
import json
import logging
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import boto3
import numpy as np
import pytest
from moto import mock_aws
from pydicom.data import get_testdata_file

from tests.batchfixtures import AUDIT_TABLE, STACK_KEY_ID, create_table, from_stack_key
from tests.modelfactory import QUADRANT_LABELS, make_model
from tests.unit.conftest import PATIENT_NAME, dicom_bytes

REPO = Path(__file__).resolve().parents[2]
HANDLER = REPO / "functions" / "predict" / "app.py"
RAW_EVENT = REPO / "events" / "predict" / "raw-png-body.json"
BUCKET = "modelrun-test-images"
TEST_FILES = Path(get_testdata_file("MR_small.dcm") or "").parent
MR_SMALL_FAMILY = [
    "MR_small.dcm",
    "MR_small_implicit.dcm",
    "MR_small_bigendian.dcm",
    "MR_small_RLE.dcm",
    "MR_small_jpeg_ls_lossless.dcm",
    "MR_small_jp2klossless.dcm",
]
# Bundled files the installed decoders cannot give an image from, with the code each gets (and why).
REFUSED = {
    # Not Part 10 files: no preamble and no DICM marker, so not recognised as DICOM at all (nor any other format).
    "ExplVR_BigEndNoMeta.dcm": "invalid_image",
    "ExplVR_LitEndNoMeta.dcm": "invalid_image",
    "no_meta.dcm": "invalid_image",
    "rtstruct.dcm": "invalid_image",
    # Lossy JPEG and JPEG 2000 codestreams pylibjpeg refuses (pydicom's own tests need GDCM for them).
    "JPEG-lossy.dcm": "invalid_dicom",
    "JPEG2000-embedded-sequence-delimiter.dcm": "invalid_dicom",
    # Damaged: pixel data shorter than its header promises, a frame count of "1A", no transfer syntax, no Bits
    # Allocated.
    "MR_truncated.dcm": "invalid_dicom",
    "badVR.dcm": "invalid_dicom",
    "meta_missing_tsyntax.dcm": "invalid_dicom",
    "nested_priv_SQ.dcm": "invalid_dicom",
    # Objects that hold no image: structured reports, an RT plan (rtplan_truncated ends cleanly between two
    # elements, so it reads as a shorter RT plan), a waveform, bare test datasets.
    "rtplan.dcm": "dicom_without_pixel_data",
    "rtplan_truncated.dcm": "dicom_without_pixel_data",
    "reportsi.dcm": "dicom_without_pixel_data",
    "reportsi_with_empty_number_tags.dcm": "dicom_without_pixel_data",
    "test-SR.dcm": "dicom_without_pixel_data",
    "waveform_ecg.dcm": "dicom_without_pixel_data",
    "empty_charset_LEI.dcm": "dicom_without_pixel_data",
    # Image objects (an image SOP class in their meta) without pixel data: read as cut before it.
    "UN_sequence.dcm": "invalid_dicom",
    "no_meta_group_length.dcm": "invalid_dicom",
    "priv_SQ.dcm": "invalid_dicom",
}
NOT_DICOM = (".txt", ".json", ".dump", ".gz", ".icc")


@dataclass
class Context:
    function_name: str = "PredictFunction"
    memory_limit_in_mb: int = 1024
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:123456789012:function:PredictFunction"
    aws_request_id: str = "c0ffee00-0000-4000-8000-000000000001"


@dataclass
class Answer:
    status: int
    body: dict[str, Any]

    @property
    def code(self) -> str | None:
        error = self.body.get("error")
        return str(error["code"]) if isinstance(error, dict) else None


def write_grey_model(root: Path, name: str, **changes: Any) -> None:
    """A grey 16x16 classifier (the test factory's graph) that windows, resizes and normalises."""
    folder = make_model(root, name=name, color_mode="L", classes=4)
    spec = json.loads((folder / "model.json").read_text())
    spec["input"] = {"name": "image"}
    spec["transforms"] = [
        {"op": "color", "mode": "L"},
        {"op": "window", "center": 600, "width": 1200},
        {"op": "resize", "size": [16, 16]},
        {"op": "normalize", "scale": 1 / 255},
        {"op": "layout", "layout": "NCHW"},
    ]
    spec.update(changes)
    (folder / "model.json").write_text(json.dumps(spec), encoding="utf-8")


@pytest.fixture(scope="module")
def handler(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModuleType]:
    """The handler module imported as Lambda would, with a grey model (first frame) and one of every frame."""
    root = tmp_path_factory.mktemp("models")
    write_grey_model(root, "ct")
    write_grey_model(root, "ct-all", frames="all")
    make_model(root, name="colour", color_mode="RGB")
    env = {
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "POWERTOOLS_TRACE_DISABLED": "true",
        "POWERTOOLS_SERVICE_NAME": "modelrun",
        "POWERTOOLS_METRICS_NAMESPACE": "modelrun",
        "MODEL_ROOT": str(root),
        "DEFAULT_MODEL": "ct",
        "IMAGES_BUCKET": BUCKET,
        "MAX_IMAGE_BYTES": str(10 * 1024 * 1024),
        "MAX_IMAGE_PIXELS": "50000000",
        "CORS_ALLOW_ORIGIN": "*",
        "AUDIT_TABLE": AUDIT_TABLE,
        "API_KEY_ID": STACK_KEY_ID,
        "DATASETS_TABLE": "unit-datasets",
    }
    with pytest.MonkeyPatch.context() as patch, mock_aws():
        for name, value in env.items():
            patch.setenv(name, value)
        patch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
        boto3.client("s3").create_bucket(Bucket=BUCKET)
        create_table(boto3.resource("dynamodb"), "AuditTable", AUDIT_TABLE)
        create_table(boto3.resource("dynamodb"), "DatasetsTable", "unit-datasets")
        spec = importlib.util.spec_from_file_location("predict_dicom_under_test", HANDLER)
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        patch.setitem(sys.modules, spec.name, module)
        spec.loader.exec_module(module)
        yield module


def call(handler: ModuleType, body: bytes | dict[str, Any], *, content_type: str, **query: str) -> Answer:
    event = from_stack_key(json.loads(RAW_EVENT.read_text()))
    if isinstance(body, dict):
        event["body"], event["isBase64Encoded"] = json.dumps(body), False
    else:
        event["body"], event["isBase64Encoded"] = base64.b64encode(body).decode("ascii"), True
    event["headers"]["Content-Type"] = content_type
    event["multiValueHeaders"]["Content-Type"] = [content_type]
    event["queryStringParameters"] = query or None
    event["multiValueQueryStringParameters"] = {key: [value] for key, value in query.items()} or None
    response = handler.lambda_handler(event, Context())
    return Answer(response["statusCode"], json.loads(response["body"]))


def bundled_files() -> list[str]:
    return sorted(
        name
        for name in os.listdir(TEST_FILES)
        if (TEST_FILES / name).is_file() and not name.lower().endswith(NOT_DICOM)
    )


@pytest.mark.parametrize("name", bundled_files())
def test_every_bundled_file_gets_200_or_its_4xx_code_never_a_5xx(handler: ModuleType, name: str) -> None:
    # given one of pydicom's own test files, sent raw as application/dicom
    data = (TEST_FILES / name).read_bytes()

    # when it is predicted with the grey model
    answer = call(handler, data, content_type="application/dicom")

    # then it is a prediction, or the client error this file is known for
    if name in REFUSED:
        assert (answer.status, answer.code) == (_status(REFUSED[name]), REFUSED[name]), answer.body
    else:
        assert answer.status == 200, answer.body
        assert answer.body["label"] in QUADRANT_LABELS
        assert answer.body["dicom"]["rows"] > 0


def _status(code: str) -> int:
    return {"invalid_image": 400, "invalid_dicom": 400, "dicom_without_pixel_data": 422}[code]


@pytest.mark.parametrize("name", [name for name in bundled_files() if name not in REFUSED])
def test_every_decodable_colour_or_grey_file_also_predicts_with_a_colour_model(handler: ModuleType, name: str) -> None:
    answer = call(handler, (TEST_FILES / name).read_bytes(), content_type="application/dicom", model="colour")
    assert answer.status == 200, answer.body


def test_the_mr_small_family_gives_identical_predictions(handler: ModuleType) -> None:
    # given the same MR image in six transfer syntaxes
    answers = [
        call(handler, (TEST_FILES / name).read_bytes(), content_type="application/dicom") for name in MR_SMALL_FAMILY
    ]

    # then every prediction is the same, label and scores
    assert all(answer.status == 200 for answer in answers)
    assert {json.dumps(answer.body["top_k"]) for answer in answers} == {json.dumps(answers[0].body["top_k"])}
    assert {answer.body["dicom"]["sop_instance_uid"] for answer in answers} == {
        answers[0].body["dicom"]["sop_instance_uid"]
    }


def test_a_dicom_file_is_taken_whatever_content_type_or_form_names_it(handler: ModuleType) -> None:
    # given MR_small sent raw as octet-stream, as base64 JSON, and from S3 under a key without an extension
    data = (TEST_FILES / "MR_small.dcm").read_bytes()
    boto3.client("s3").put_object(Bucket=BUCKET, Key="scans/0001", Body=data)
    answers = [
        call(handler, data, content_type="application/octet-stream"),
        call(handler, data, content_type="image/png"),
        call(handler, {"image": base64.b64encode(data).decode("ascii")}, content_type="application/json"),
        call(handler, {"image_s3": {"bucket": BUCKET, "key": "scans/0001"}}, content_type="application/json"),
    ]

    # then each is the same prediction
    assert [answer.status for answer in answers] == [200] * 4
    assert len({json.dumps(answer.body["top_k"]) for answer in answers}) == 1


def test_a_transfer_syntax_without_a_decoder_is_415_naming_it(handler: ModuleType) -> None:
    data = dicom_bytes(np.zeros((4, 4), np.uint8), transfer_syntax="1.2.840.10008.1.2.4.100")
    answer = call(handler, data, content_type="application/dicom")
    assert (answer.status, answer.code) == (415, "unsupported_transfer_syntax")
    assert "1.2.840.10008.1.2.4.100" in answer.body["error"]["message"]


def test_too_many_pixels_across_frames_is_413(handler: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(handler.predictor, "limits", type(handler.predictor.limits)(max_pixels=100))
    answer = call(handler, dicom_bytes(np.zeros((2, 8, 8), np.uint16)), content_type="application/dicom")
    assert (answer.status, answer.code) == (413, "image_too_large")


def test_a_model_of_every_frame_returns_one_result_per_frame(handler: ModuleType) -> None:
    # given three frames, bright in their top-left, top-right and bottom-left quadrant
    frames = np.zeros((3, 4, 4), np.uint16)
    frames[0, :2, :2] = frames[1, :2, 2:] = frames[2, 2:, :2] = 1200
    data = dicom_bytes(frames)

    # when the model of every frame predicts it
    answer = call(handler, data, content_type="application/dicom", model="ct-all")

    # then each frame has its own result and index
    assert answer.status == 200, answer.body
    assert [entry["frame"] for entry in answer.body["frames"]] == [0, 1, 2]
    assert [entry["label"] for entry in answer.body["frames"]] == ["top-left", "top-right", "bottom-left"]
    assert "label" not in answer.body
    assert answer.body["dicom"]["number_of_frames"] == 3


def test_a_model_of_the_first_frame_says_which_frame_it_predicted(handler: ModuleType) -> None:
    frames = np.zeros((3, 4, 4), np.uint16)
    frames[0, 2:, :2] = 1200
    answer = call(handler, dicom_bytes(frames), content_type="application/dicom")
    assert answer.status == 200
    assert (answer.body["frame"], answer.body["label"]) == (0, "bottom-left")
    assert "frames" not in answer.body


def test_no_patient_data_or_uid_reaches_the_logs(handler: ModuleType, capsys: pytest.CaptureFixture[str]) -> None:
    # given a good file and a damaged one, both carrying the patient name
    good = dicom_bytes(np.full((4, 4), 1200, np.uint16))
    damaged = good[:-10]
    logging.getLogger().setLevel(logging.DEBUG)

    # when both are predicted (Powertools logs to stdout)
    answers = [call(handler, data, content_type="application/dicom") for data in (good, damaged)]

    # then the responses carry the UIDs but no log line names the patient or a UID
    assert [answer.status for answer in answers] == [200, 400]
    uid = answers[0].body["dicom"]["sop_instance_uid"]
    logged = capsys.readouterr()
    assert PATIENT_NAME not in logged.out + logged.err
    assert "SECRET" not in json.dumps(answers[1].body)
    assert uid not in logged.out + logged.err
