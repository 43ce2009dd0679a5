"""Datasets on the local stack, end to end: a 2,000-image prefix registered by the worker, a batch over the dataset,
its results read by image id, one image predicted by id, that image's two predictions, the audit trail of each step;
and another tenant, which finds none of it and cannot register it."""

from __future__ import annotations

import csv
import io
import json
import random
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import requests
from PIL import Image

from modelrun_cli.main import run
from modelrun_local.runtime import LocalRuntime
from tests.integration.conftest import Api, sample
from tests.integration.helpers import all_results, upload, wait_for

IMAGES = 2000


def png(seed: int) -> bytes:
    """A distinct 8x8 grey PNG: light strokes on dark, as the digits model sees its inputs."""
    generator = random.Random(seed)
    image = Image.new("L", (8, 8))
    image.putdata([generator.choice((0, 0, 0, 128, 255)) for _ in range(64)])
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def wait_ready(api: Api, dataset_id: str, timeout: float = 180) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        dataset: dict[str, Any] = api.get(f"/datasets/{dataset_id}").json()
        if dataset["status"] != "REGISTERING":
            return dataset
        time.sleep(0.25)
    raise AssertionError(f"dataset {dataset_id} still REGISTERING after {timeout} s: {dataset}")


def every_image(api: Api, dataset_id: str) -> list[dict[str, Any]]:
    images: list[dict[str, Any]] = []
    token = None
    while True:
        page = api.get(f"/datasets/{dataset_id}/images", params={"limit": "700", "next_token": token or ""}).json()
        images += page["images"]
        token = page["next_token"]
        if not token:
            return images


@pytest.fixture(scope="module")
def prefix(s3: Any, images_bucket: str) -> str:
    """2,000 small PNGs of tenant A under one prefix, uploaded on threads."""
    root = f"tenants/tenant-a/datasets-test/{uuid.uuid4().hex[:8]}/"
    upload(s3, images_bucket, {f"{root}{n:04d}.png": png(n) for n in range(IMAGES)})
    return root


@pytest.fixture(scope="module")
def registered(a: Api, prefix: str) -> dict[str, Any]:
    created = a.post("/datasets", json={"name": f"scans {prefix}", "s3_prefix": prefix})
    assert created.status_code == 202, created.text
    assert created.json()["status"] == "REGISTERING"
    return wait_ready(a, created.json()["dataset_id"])


@pytest.fixture(scope="module")
def images(a: Api, registered: dict[str, Any]) -> dict[str, str]:
    """{image id: key} of the registered dataset."""
    return {image["image_id"]: image["key"] for image in every_image(a, registered["dataset_id"])}


@pytest.fixture(scope="module")
def batch(a: Api, registered: dict[str, Any]) -> dict[str, Any]:
    submitted = a.post(
        "/batches", json={"dataset_id": registered["dataset_id"], "chunk_size": 250, "max_concurrency": 8}
    )
    assert submitted.status_code == 202, submitted.text
    assert submitted.json()["dataset_id"] == registered["dataset_id"]
    return wait_for(a, submitted.json()["batch_id"], timeout=600)


@pytest.fixture(scope="module")
def single(a: Api, registered: dict[str, Any], images: dict[str, str], batch: dict[str, Any]) -> dict[str, Any]:
    """One image predicted by id, after the batch."""
    image_id = sorted(images)[7]
    answer = a.post("/predictions", json={"dataset_id": registered["dataset_id"], "image_id": image_id})
    assert answer.status_code == 200, answer.text
    result: dict[str, Any] = answer.json()
    return result


def test_a_prefix_is_registered_ready_with_its_counts(registered: dict[str, Any], images: dict[str, str]) -> None:
    assert registered["status"] == "READY"
    assert (registered["images"], registered["keys_read"]) == (IMAGES, IMAGES)
    assert len(images) == IMAGES


def test_registering_the_prefix_again_keeps_every_image_id(
    a: Api, registered: dict[str, Any], prefix: str, images: dict[str, str]
) -> None:
    again = a.post("/datasets", json={"name": registered["name"], "s3_prefix": prefix})

    assert again.status_code == 202
    assert again.json()["dataset_id"] == registered["dataset_id"]
    ready = wait_ready(a, registered["dataset_id"])
    assert ready["images"] == IMAGES
    assert {image["image_id"] for image in every_image(a, registered["dataset_id"])} == set(images)


def test_a_batch_over_the_dataset_has_every_result_under_its_image_id(
    a: Api, batch: dict[str, Any], registered: dict[str, Any], images: dict[str, str]
) -> None:
    results = all_results(a, batch["batch_id"])

    assert batch["status"] == "COMPLETED"
    assert batch["dataset_id"] == registered["dataset_id"]
    by_id = {result["image_id"]: result for result in results}
    assert len(by_id) == IMAGES
    assert {image_id: result["key"] for image_id, result in by_id.items()} == images
    assert all(result["dataset_id"] == registered["dataset_id"] and "label" in result for result in results)


def test_the_results_file_carries_the_image_ids_too(a: Api, batch: dict[str, Any], images: dict[str, str]) -> None:
    link = a.get(f"/batches/{batch['batch_id']}").json()["links"]["results_file"]

    lines = requests.get(link, timeout=60).text.splitlines()

    assert len(lines) == IMAGES
    assert all('"image_id":"i-' in line for line in lines)


def test_an_image_predicted_by_id_answers_its_dataset_image_and_key(
    single: dict[str, Any], registered: dict[str, Any], images: dict[str, str]
) -> None:
    assert single["dataset_id"] == registered["dataset_id"]
    assert single["key"] == images[single["image_id"]]
    assert single["model"] == "digits"
    assert "label" in single


def test_the_image_lists_its_two_predictions_newest_first(
    a: Api, single: dict[str, Any], batch: dict[str, Any], registered: dict[str, Any]
) -> None:
    answer = a.get(f"/datasets/{registered['dataset_id']}/images/{single['image_id']}/predictions")

    assert answer.status_code == 200, answer.text
    entries = answer.json()["predictions"]
    assert [entry["batch_id"] for entry in entries] == ["single", batch["batch_id"]]
    assert entries[0]["prediction_id"] == single["prediction_id"]
    assert entries[0]["summary"]["label"] == single["label"]
    assert entries[1]["status"] == "predicted"
    assert (entries[1]["model"], entries[1]["version"]) == ("digits", "1")
    assert answer.json()["key"] == single["key"]


def test_a_batch_of_some_image_ids_runs_those_and_names_unknown_ones(
    a: Api, registered: dict[str, Any], images: dict[str, str]
) -> None:
    chosen = sorted(images)[:3]
    unknown = "i-" + "0" * 24

    refused = a.post("/batches", json={"dataset_id": registered["dataset_id"], "image_ids": [*chosen, unknown, "x"]})
    submitted = a.post("/batches", json={"dataset_id": registered["dataset_id"], "image_ids": chosen})

    assert refused.status_code == 404
    assert refused.json()["error"]["code"] == "image_not_found"
    assert refused.json()["error"]["details"]["image_ids"] == [unknown, "x"]
    assert submitted.status_code == 202, submitted.text
    finished = wait_for(a, submitted.json()["batch_id"])
    assert [result["image_id"] for result in all_results(a, finished["batch_id"])] == chosen


def test_the_error_report_of_a_dataset_batch_names_the_image_ids(
    a: Api, s3: Any, images_bucket: str, prefix: str
) -> None:
    keys = upload(s3, images_bucket, {f"{prefix}bad/x.png": b"not an image", f"{prefix}bad/y.png": png(1)})
    created = a.post("/datasets", json={"name": f"mixed {prefix}", "images": keys})
    assert created.status_code == 201, created.text
    dataset_id = created.json()["dataset_id"]

    submitted = a.post("/batches", json={"dataset_id": dataset_id})
    job = wait_for(a, submitted.json()["batch_id"])
    report = a.get(f"/batches/{job['batch_id']}/errors").json()

    [entry] = report["errors"]
    assert (entry["key"], entry["dataset_id"], entry["code"]) == (keys[0], dataset_id, "invalid_image")
    rows = list(csv.DictReader(io.StringIO(requests.get(report["links"]["csv"], timeout=60).text)))
    assert rows[0]["image_id"] == entry["image_id"]
    history = a.get(f"/datasets/{dataset_id}/images/{entry['image_id']}/predictions").json()["predictions"]
    assert [(h["status"], h["error"]["code"]) for h in history] == [("failed", "invalid_image")]


def test_uploads_named_for_a_dataset_are_predicted_by_their_ids(a: Api) -> None:
    created = a.post("/datasets", json={"name": f"uploads {uuid.uuid4().hex[:6]}"})
    assert created.status_code == 201, created.text
    dataset_id = created.json()["dataset_id"]
    data = sample(7).read_bytes()
    files = [{"name": "seven.png", "content_type": "image/png", "size": len(data)}]

    signed = a.post("/uploads", json={"files": files, "dataset_id": dataset_id}).json()
    [upload_entry] = signed["uploads"]
    put = requests.put(upload_entry["url"], data=data, headers=upload_entry["headers"], timeout=60)
    predicted = a.post("/predictions", json={"dataset_id": dataset_id, "image_id": upload_entry["image_id"]})

    assert put.status_code == 200
    assert a.get(f"/datasets/{dataset_id}").json()["images"] == 1
    assert predicted.status_code == 200, predicted.text
    assert predicted.json()["label"] == "7"


def test_the_audit_trail_of_the_dataset_shows_each_step_for_its_tenant_only(
    a: Api, b: Api, registered: dict[str, Any], batch: dict[str, Any], single: dict[str, Any]
) -> None:
    dataset_id = registered["dataset_id"]
    a.get(f"/datasets/{dataset_id}/images/{single['image_id']}/predictions")
    b.get(f"/datasets/{dataset_id}")

    mine = a.get("/audit", params={"resource": dataset_id, "limit": "1000"}).json()["records"]
    theirs = b.get("/audit", params={"resource": dataset_id, "limit": "1000"}).json()["records"]

    steps = {(record["action"], record["outcome"]) for record in mine}
    for action in (
        "POST /datasets",
        "GET /datasets/{dataset_id}",
        "GET /datasets/{dataset_id}/images",
        "POST /batches",
        "POST /predictions",
        "GET /datasets/{dataset_id}/images/{image_id}/predictions",
    ):
        assert (action, "ok") in steps, action
    submitted = [record["resources"] for record in mine if record["action"] == "POST /batches"]
    assert {"batch_id": batch["batch_id"], "dataset_id": dataset_id} in submitted
    predicted = next(record for record in mine if record["action"] == "POST /predictions")
    assert predicted["resources"] == {"dataset_id": dataset_id, "image_id": single["image_id"]}
    assert {record["outcome"] for record in theirs} == {"dataset_not_found"}
    assert "datasets-test/" not in a.get("/audit", params={"limit": "1000"}).text  # no S3 key in any record


def test_another_tenant_finds_none_of_it_and_cannot_register_it(
    b: Api, registered: dict[str, Any], prefix: str, images: dict[str, str], single: dict[str, Any]
) -> None:
    dataset_id, image_id = registered["dataset_id"], single["image_id"]
    missing = "d-20260101T000000-000000000000"

    for path in ("/datasets/{}", "/datasets/{}/images", "/datasets/{}/images/" + image_id + "/predictions"):
        theirs, nothing = b.get(path.format(dataset_id)), b.get(path.format(missing))
        assert theirs.status_code == nothing.status_code == 404
        assert theirs.json()["error"]["code"] == nothing.json()["error"]["code"] == "dataset_not_found"
    assert b.delete(f"/datasets/{dataset_id}").status_code == 404
    predicted = b.post("/predictions", json={"dataset_id": dataset_id, "image_id": image_id})
    assert predicted.json()["error"]["code"] == "dataset_not_found"
    batched = b.post("/batches", json={"dataset_id": dataset_id})
    assert batched.json()["error"]["code"] == "dataset_not_found"
    files = [{"name": "a.png", "content_type": "image/png", "size": 9}]
    uploads = b.post("/uploads", json={"files": files, "dataset_id": dataset_id})
    assert uploads.status_code == 404
    for source in ({"s3_prefix": prefix}, {"s3_prefix": "tenants/"}, {"images": [images[image_id]]}):
        refused = b.post("/datasets", json={"name": "theirs", **source})
        assert refused.status_code == 404, (source, refused.text)
        assert refused.json()["error"]["code"] == "image_not_found"
    assert dataset_id not in b.get("/datasets", params={"limit": "1000"}).text


def test_a_listing_shows_the_callers_own_datasets_newest_first(a: Api, registered: dict[str, Any]) -> None:
    listed = a.get("/datasets", params={"limit": "1000"}).json()["datasets"]

    ids = [dataset["dataset_id"] for dataset in listed]
    assert registered["dataset_id"] in ids
    assert ids == sorted(ids, reverse=True)


def test_deleting_keeps_the_objects_and_the_batch_results(
    a: Api, s3: Any, images_bucket: str, prefix: str, registered: dict[str, Any], batch: dict[str, Any]
) -> None:
    # Last in this module: the dataset goes.
    deleted = a.delete(f"/datasets/{registered['dataset_id']}")

    assert deleted.status_code == 200, deleted.text
    assert deleted.json() == {
        "dataset_id": registered["dataset_id"],
        "name": registered["name"],
        "deleted": True,
        "images": IMAGES,
    }
    assert a.get(f"/datasets/{registered['dataset_id']}").status_code == 404
    assert a.get(f"/datasets/{registered['dataset_id']}/images").status_code == 404
    assert s3.head_object(Bucket=images_bucket, Key=f"{prefix}0000.png")["ContentLength"] > 0
    kept = a.get(f"/batches/{batch['batch_id']}/results", params={"limit": "5"}).json()["results"]
    assert all(result["dataset_id"] == registered["dataset_id"] for result in kept)


def cli(stack: LocalRuntime, key: str, *argv: str) -> tuple[int, str, str]:
    """``modelrun ...`` in-process against the local stack with a tenant's key (no AWS credentials needed)."""
    out, err = io.StringIO(), io.StringIO()
    code = run([*argv, "--endpoint", stack.url, "--api-key", key], env={}, cwd=Path.cwd(), out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def test_the_cli_uploads_a_folder_into_a_dataset_and_predicts_it_by_ids(
    stack: LocalRuntime, a: Api, tmp_path: Path
) -> None:
    for label in (3, 7):
        shutil.copyfile(sample(label), tmp_path / f"digit-{label}.png")
    name = f"cli {uuid.uuid4().hex[:6]}"

    code, out, err = cli(stack, a.key, "datasets", "create", name, str(tmp_path), "--json")
    assert code == 0, err
    dataset = json.loads(out)
    assert (dataset["status"], dataset["images"]) == ("READY", 2)
    code, out, err = cli(stack, a.key, "datasets", "images", dataset["dataset_id"], "--json")
    images = {image["key"].rsplit("/", 1)[-1]: image["image_id"] for image in json.loads(out)}
    code, out, err = cli(
        stack, a.key, "predict", "--dataset", dataset["dataset_id"], "--image", images["digit-7.png"], "--json"
    )
    assert code == 0, err
    assert json.loads(out)["label"] == "7"
    code, out, err = cli(
        stack, a.key, "batch", "submit", "--dataset", dataset["dataset_id"], "--image", images["digit-3.png"], "--wait"
    )
    assert code == 0, err
    code, out, err = cli(stack, a.key, "datasets", "predictions", dataset["dataset_id"], images["digit-7.png"])
    assert code == 0, err
    assert "single" in out
    assert "7 0.9" in out
    code, listed, _ = cli(stack, a.key, "datasets", "list")
    assert dataset["dataset_id"] in listed
    code, shown, _ = cli(stack, a.key, "datasets", "show", dataset["dataset_id"])
    assert shown.splitlines()[0] == dataset["dataset_id"]
    assert cli(stack, a.key, "datasets", "delete", dataset["dataset_id"])[0] == 0
    code, _, err = cli(stack, a.key, "datasets", "show", dataset["dataset_id"])
    assert code == 1
    assert "dataset_not_found" in err


def test_the_cli_registers_a_prefix_and_waits_for_it(stack: LocalRuntime, a: Api, prefix: str) -> None:
    code, out, err = cli(stack, a.key, "datasets", "create", f"cli prefix {prefix}", "--prefix", prefix, "--wait")

    assert code == 0, err
    assert "READY" in out
    images = next(line for line in out.splitlines() if line.startswith("  images"))
    assert int(images.split()[1]) >= IMAGES  # the module's other tests add a few under the prefix
