"""Batch prediction through the real state machine on the local stack: outcomes, counts, idempotency, results."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import boto3
import pytest
import requests

from modelrun_local.runtime import LocalRuntime
from tests.integration.conftest import SAMPLES, Api
from tests.integration.helpers import all_results, outcomes_in_table, upload, wait_for


@pytest.fixture(scope="module")
def thousand_images(s3: Any, images_bucket: str) -> dict[str, Path]:
    """1,000 distinct keys over the 450 committed samples (each sample under two or three keys)."""
    samples = sorted(SAMPLES.glob("digit-*.png"))
    keys = {
        f"batches-test/thousand/{index:04d}-{samples[index % len(samples)].name}": samples[index % len(samples)]
        for index in range(1000)
    }
    upload(s3, images_bucket, {key: path.read_bytes() for key, path in keys.items()})
    return keys


@pytest.fixture(scope="module")
def thousand_batch(api: Api, thousand_images: dict[str, Path]) -> dict[str, Any]:
    response = api.post(
        "/batches", json={"model": "digits", "images": list(thousand_images), "chunk_size": 50, "max_concurrency": 8}
    )
    assert response.status_code == 202, response.text
    return wait_for(api, response.json()["batch_id"])


def test_a_thousand_image_batch_completes_with_counts_that_add_up(thousand_batch: dict[str, Any]) -> None:
    assert thousand_batch["status"] == "COMPLETED"
    assert thousand_batch["total"] == 1000
    assert thousand_batch["counts"] == {"predicted": 1000, "failed": 0, "pending": 0}
    assert thousand_batch["percent"] == 100.0
    assert thousand_batch["chunks"] == 20


def test_every_image_of_the_batch_has_exactly_one_outcome_in_the_items_table(
    stack: LocalRuntime, thousand_batch: dict[str, Any], thousand_images: dict[str, Path]
) -> None:
    records = outcomes_in_table(stack, thousand_batch["batch_id"])
    assert sorted(int(record["item"]) for record in records) == list(range(1000))
    assert Counter(record["key"] for record in records) == Counter(list(thousand_images))


def test_each_batch_prediction_equals_the_single_prediction_of_the_same_image(
    api: Api, thousand_batch: dict[str, Any], thousand_images: dict[str, Path]
) -> None:
    results = {result["key"]: result for result in all_results(api, thousand_batch["batch_id"])}
    assert len(results) == 1000

    def single(path: Path) -> dict[str, Any]:
        response = api.post("/predictions", data=path.read_bytes(), headers={"Content-Type": "image/png"})
        body: dict[str, Any] = response.json()
        return body

    distinct = sorted(set(thousand_images.values()))
    with ThreadPoolExecutor(max_workers=4) as pool:
        singles = dict(zip(distinct, pool.map(single, distinct), strict=True))
    for key, path in thousand_images.items():
        assert (results[key]["label"], results[key]["top_k"]) == (singles[path]["label"], singles[path]["top_k"]), key


def test_the_results_file_holds_every_outcome_and_its_link_works(thousand_batch: dict[str, Any]) -> None:
    link = thousand_batch["links"]["results_file"]
    lines = requests.get(link, timeout=30).text.splitlines()
    assert len(lines) == 1000


def test_a_batch_of_good_and_corrupt_images_lists_each_corrupt_one_with_its_code(
    api: Api, s3: Any, images_bucket: str
) -> None:
    good = {f"batches-test/mixed/good-{path.name}": path.read_bytes() for path in sorted(SAMPLES.glob("*.png"))[:40]}
    png = next(iter(good.values()))
    bad = {
        "batches-test/mixed/bad-truncated.png": png[: len(png) // 2],
        "batches-test/mixed/bad-text.png": b"not an image at all",
        "batches-test/mixed/bad-empty.png": b"",
        "batches-test/mixed/bad-pdf.png": b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\n",
    }
    keys = [*upload(s3, images_bucket, {**good, **bad}), "batches-test/mixed/bad-missing.png"]
    response = api.post("/batches", json={"model": "digits", "images": keys, "chunk_size": 7})
    job = wait_for(api, response.json()["batch_id"])
    assert job["status"] == "COMPLETED_WITH_ERRORS"
    assert job["counts"] == {"predicted": 40, "failed": 5, "pending": 0}
    failures = {result["key"]: result["error"]["code"] for result in all_results(api, job["batch_id"], "failed")}
    assert failures == {
        "batches-test/mixed/bad-truncated.png": "invalid_image",
        "batches-test/mixed/bad-text.png": "invalid_image",
        "batches-test/mixed/bad-empty.png": "invalid_image",
        "batches-test/mixed/bad-pdf.png": "unsupported_media_type",
        "batches-test/mixed/bad-missing.png": "image_not_found",
    }


def test_an_s3_prefix_batch_and_a_manifest_file_batch_each_predict_their_images(
    api: Api, s3: Any, images_bucket: str
) -> None:
    files = {
        f"batches-test/prefix/{path.name}": path.read_bytes() for path in sorted(SAMPLES.glob("digit-9-*.png"))[:12]
    }
    upload(s3, images_bucket, files)
    by_prefix = wait_for(api, api.post("/batches", json={"s3_prefix": "batches-test/prefix/"}).json()["batch_id"])
    lines = "key\n" + "\n".join(files) + "\n"
    s3.put_object(Bucket=images_bucket, Key="batches-test/lists/nines.csv", Body=lines.encode())
    by_file = wait_for(api, api.post("/batches", json={"manifest": "batches-test/lists/nines.csv"}).json()["batch_id"])
    singles = {
        key: api.post("/predictions", data=data, headers={"Content-Type": "image/png"}).json()["label"]
        for key, data in files.items()
    }
    for job in (by_prefix, by_file):
        assert (job["status"], job["total"], job["counts"]["predicted"]) == ("COMPLETED", 12, 12)
        assert {result["key"]: result["label"] for result in all_results(api, job["batch_id"])} == singles


def test_submitting_twice_with_the_same_idempotency_key_starts_one_execution(
    api: Api, stack: LocalRuntime, s3: Any, images_bucket: str
) -> None:
    keys = upload(s3, images_bucket, {"batches-test/idem/a.png": sorted(SAMPLES.glob("*.png"))[0].read_bytes()})
    headers = {"Idempotency-Key": f"test-{uuid.uuid4()}"}
    first = api.post("/batches", json={"images": keys}, headers=headers)
    second = api.post("/batches", json={"images": keys}, headers=headers)
    assert first.status_code == second.status_code == 202
    assert first.json()["batch_id"] == second.json()["batch_id"]
    sfn = boto3.client("stepfunctions", region_name=stack.region)
    assert stack.stack is not None
    executions = sfn.list_executions(stateMachineArn=stack.stack.ref("BatchStateMachine"))["executions"]
    assert [execution["name"] for execution in executions].count(first.json()["batch_id"]) == 1
    wait_for(api, first.json()["batch_id"])


def test_the_same_idempotency_key_with_another_body_is_refused(api: Api) -> None:
    headers = {"Idempotency-Key": f"test-{uuid.uuid4()}"}
    api.post("/batches", json={"images": ["batches-test/idem/a.png"]}, headers=headers)
    response = api.post("/batches", json={"images": ["batches-test/idem/other.png"]}, headers=headers)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "idempotency_key_reused"


BAD_SUBMITS: list[tuple[dict[str, Any] | str, int, str]] = [
    ("{not json", 400, "invalid_json"),
    ({}, 400, "invalid_request"),
    ({"images": [], "s3_prefix": "x/"}, 400, "invalid_request"),
    ({"images": []}, 400, "invalid_request"),
    ({"images": "one.png"}, 400, "invalid_request"),
    ({"images": [3]}, 400, "invalid_request"),
    ({"images": ["a.png"], "chunk_size": 0}, 400, "invalid_request"),
    ({"images": ["a.png"], "max_concurrency": "many"}, 400, "invalid_request"),
    ({"images": ["a.png"], "model": "no-such-model"}, 404, "unknown_model"),
    ({"images": ["a.png"], "version": "99"}, 404, "unknown_model"),
    ({"manifest": "batches-test/lists/none.jsonl"}, 404, "image_not_found"),
    ({"s3_prefix": "nothing-under-here/"}, 400, "invalid_request"),
    ({"images": ["a.png"], "colour": "blue"}, 400, "invalid_request"),
]


@pytest.mark.parametrize(("body", "status", "code"), BAD_SUBMITS, ids=[str(case[0])[:40] for case in BAD_SUBMITS])
def test_a_bad_batch_request_gets_a_4xx_with_a_stable_code(
    api: Api, body: dict[str, Any] | str, status: int, code: str
) -> None:
    if isinstance(body, str):
        response = api.post("/batches", data=body, headers={"Content-Type": "application/json"})
    else:
        response = api.post("/batches", json=body)
    assert (response.status_code, response.json()["error"]["code"]) == (status, code), response.text


def test_an_unknown_batch_is_a_404_and_a_bad_results_query_is_a_400(api: Api) -> None:
    assert api.get("/batches/b-nope").json()["error"]["code"] == "not_found"
    assert api.get("/batches/b-nope").status_code == 404
    probes: list[Callable[[], requests.Response]] = [
        lambda: api.get("/batches/b-nope/results", params={"limit": "0"}),
        lambda: api.get("/batches/b-nope/results", params={"status": "weird"}),
        lambda: api.get("/batches/b-nope/results", params={"next_token": "%%%"}),
    ]
    for probe in probes:
        response = probe()
        assert response.status_code == 400, response.text
        assert response.json()["error"]["code"] == "invalid_request"
