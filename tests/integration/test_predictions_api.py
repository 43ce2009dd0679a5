"""POST /predictions over HTTP against the local stack: every request form, every bad input, the model catalogue."""

from __future__ import annotations

import base64
import io
import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from PIL import Image

from tests.integration.conftest import MAX_IMAGE_BYTES, Api, sample


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def error_of(response: Any) -> dict[str, Any]:
    error: dict[str, Any] = response.json()["error"]
    return error


def test_a_raw_png_body_gets_the_label_its_file_name_carries(api: Api) -> None:
    path = sample(7)
    response = api.post("/predictions", data=path.read_bytes(), headers={"Content-Type": "image/png"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["label"] == "7"
    assert body["model"] == "digits"
    assert body["version"] == "1"
    assert body["top_k"][0] == {"label": "7", "score": body["score"]}
    assert set(body["timings_ms"]) == {"preprocess", "inference", "total"}


def test_a_base64_json_body_gets_the_same_prediction_as_the_raw_body(api: Api) -> None:
    data = sample(3, 1).read_bytes()
    raw = api.post("/predictions", data=data, headers={"Content-Type": "image/png"}).json()
    as_json = api.post("/predictions", json={"model": "digits", "image": base64.b64encode(data).decode()}).json()
    assert as_json["label"] == raw["label"] == "3"
    assert as_json["top_k"] == raw["top_k"]


def test_an_s3_reference_in_the_images_bucket_is_predicted(api: Api, s3: Any, images_bucket: str) -> None:
    s3.put_object(Bucket=images_bucket, Key="uploads/digits/five.png", Body=sample(5).read_bytes())
    response = api.post("/predictions", json={"image_s3": {"bucket": images_bucket, "key": "uploads/digits/five.png"}})
    assert response.status_code == 200, response.text
    assert response.json()["label"] == "5"


def test_the_stage_prefix_of_the_deployed_url_works_too(api: Api) -> None:
    response = api.post("/v1/predictions", data=sample(1).read_bytes(), headers={"Content-Type": "image/png"})
    assert response.status_code == 200
    assert response.json()["label"] == "1"


def test_every_sample_of_each_digit_is_served_correctly_under_concurrent_requests(api: Api) -> None:
    paths = [sample(label, nth) for label in range(10) for nth in range(3)]

    def predict(path: Any) -> tuple[str, str]:
        response = api.post("/predictions", data=path.read_bytes(), headers={"Content-Type": "image/png"})
        return path.name.split("-")[1], response.json()["label"]

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(predict, paths))
    correct = sum(truth == label for truth, label in results)
    assert correct >= 28, results


def test_a_user_model_with_nhwc_rgb_input_predicts_from_its_model_json(api: Api) -> None:
    green = png_bytes(Image.new("RGB", (40, 30), (10, 200, 20)))
    response = api.post("/predictions?model=colours-nhwc", data=green, headers={"Content-Type": "image/png"})
    assert response.status_code == 200, response.text
    assert response.json()["label"] == "green"


def test_a_user_model_with_a_fixed_batch_of_one_predicts_from_its_model_json(api: Api) -> None:
    image = Image.new("L", (32, 32), 0)
    image.paste(255, (0, 16, 16, 32))  # bottom-left quadrant bright
    response = api.post(
        "/predictions", json={"model": "quadrants-b1", "image": base64.b64encode(png_bytes(image)).decode()}
    )
    assert response.status_code == 200, response.text
    assert response.json()["label"] == "bottom-left"


BAD_UPLOADS = {
    "empty": (b"", "image/png", 400, "invalid_json"),
    "not an image": (b"hello, I am text", "image/png", 400, "invalid_image"),
    "truncated": (None, "image/png", 400, "invalid_image"),
    "corrupt": (None, "image/png", 400, "invalid_image"),
    "oversized": (b"\x89PNG\r\n\x1a\n" + b"\0" * (MAX_IMAGE_BYTES + 1), "image/png", 413, "image_too_large"),
    "decompression bomb": (None, "image/png", 413, "image_too_large"),
    "wrong content type": (b"{}", "text/plain", 415, "unsupported_media_type"),
}


def bad_upload(case: str) -> tuple[bytes, str, int, str]:
    data, content_type, status, code = BAD_UPLOADS[case]
    good = sample(4).read_bytes()
    if case == "truncated":
        data = good[: len(good) // 2]
    elif case == "corrupt":
        middle = len(good) // 2
        data = good[:middle] + bytes(b ^ 0xFF for b in good[middle : middle + 16]) + good[middle + 16 :]
    elif case == "decompression bomb":
        data = png_bytes(Image.new("1", (3000, 3000)))  # 9 Mpx in a few KB
        assert len(data) < 20_000
    assert data is not None
    return data, content_type, status, code


@pytest.mark.parametrize("case", sorted(BAD_UPLOADS))
def test_a_bad_upload_gets_a_4xx_with_a_stable_code_and_the_server_keeps_answering(api: Api, case: str) -> None:
    data, content_type, status, code = bad_upload(case)
    if case == "empty":
        # An empty body with an image type is no image at all.
        status, code = 400, "invalid_image"
    response = api.post("/predictions", data=data, headers={"Content-Type": content_type})
    assert (response.status_code, error_of(response)["code"]) == (status, code), response.text
    assert error_of(response)["message"]
    follow_up = api.post("/predictions", data=sample(2).read_bytes(), headers={"Content-Type": "image/png"})
    assert follow_up.json()["label"] == "2"


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ("{not json", 400, "invalid_json"),
        ("[1, 2]", 400, "invalid_json"),
        ("", 400, "invalid_json"),
        ('{"model": "digits"}', 400, "invalid_request"),
        ('{"image": "!!!not base64!!!"}', 400, "invalid_request"),
        ('{"image": "aGVsbG8=", "image_s3": {"bucket": "b", "key": "k"}}', 400, "invalid_request"),
        ('{"image_s3": {"bucket": 1}}', 400, "invalid_request"),
        ('{"model": 5, "image": "aGVsbG8="}', 400, "invalid_request"),
        ('{"model": "no-such-model", "image": "aGVsbG8="}', 404, "unknown_model"),
    ],
)
def test_a_malformed_json_request_gets_a_4xx_naming_the_problem(api: Api, body: str, status: int, code: str) -> None:
    response = api.post("/predictions", data=body, headers={"Content-Type": "application/json"})
    assert (response.status_code, error_of(response)["code"]) == (status, code), response.text


def test_an_unknown_model_version_is_a_404_listing_what_exists(api: Api) -> None:
    data = base64.b64encode(sample(0).read_bytes()).decode()
    response = api.post("/predictions", json={"model": "digits", "version": "9", "image": data})
    assert response.status_code == 404
    assert error_of(response)["code"] == "unknown_model"
    assert "1" in error_of(response)["message"]


def test_an_s3_reference_to_a_missing_object_is_a_404(api: Api, images_bucket: str) -> None:
    response = api.post("/predictions", json={"image_s3": {"bucket": images_bucket, "key": "nope.png"}})
    assert (response.status_code, error_of(response)["code"]) == (404, "image_not_found")


def test_an_s3_reference_outside_the_stack_bucket_is_refused(api: Api) -> None:
    response = api.post("/predictions", json={"image_s3": {"bucket": "someone-elses", "key": "x.png"}})
    assert (response.status_code, error_of(response)["code"]) == (400, "invalid_request")


def test_a_request_without_the_api_key_is_forbidden(api: Api) -> None:
    response = api.session.post(
        api.base + "/predictions", data=b"x", headers={"Content-Type": "image/png", "x-api-key": "wrong"}, timeout=10
    )
    assert (response.status_code, error_of(response)["code"]) == (403, "invalid_api_key")


def test_an_unknown_route_is_a_404(api: Api) -> None:
    response = api.get("/nothing-here")
    assert (response.status_code, error_of(response)["code"]) == (404, "route_not_found")


def test_the_model_catalogue_lists_every_model_with_its_description(api: Api) -> None:
    body = api.get("/models").json()
    names = {model["name"] for model in body["models"]}
    assert {"digits", "colours-nhwc", "quadrants-b1"} <= names
    assert body["default_model"] == "digits"
    digits = api.get("/models/digits").json()
    assert digits["latest"] == "1"
    assert digits["versions"][0]["labels"] == [str(i) for i in range(10)]


def test_an_unknown_model_in_the_catalogue_is_a_404(api: Api) -> None:
    response = api.get("/models/nope")
    assert (response.status_code, error_of(response)["code"]) == (404, "unknown_model")


def test_error_bodies_are_json_with_code_and_message(api: Api) -> None:
    response = api.post("/predictions", data=b"junk", headers={"Content-Type": "image/jpeg"})
    assert response.headers["Content-Type"].startswith("application/json")
    assert set(json.loads(response.text)["error"]) >= {"code", "message"}
