"""A named tenant's S3 space on the local stack: its batches' outputs, its upload triggers' results and audit records,
and its CLI uploads all stay under tenants/<tenant>/, where no other tenant can reach them by any route.

Two named tenants (tenant-a, tenant-b, tests/integration/conftest.py) and the default tenant (the stack's key).
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from modelrun_cli.main import run
from modelrun_local.runtime import LocalRuntime
from tests.integration.conftest import REPO, Api, sample
from tests.integration.helpers import all_results, upload, wait_for
from tests.integration.test_upload_triggers import on_upload, put, read_json, wait_for_result

CELLS = sorted(path for path in (REPO / "samples" / "cells").glob("cells-*.png") if not path.name.endswith(".mask.png"))
A_SPACE = "tenants/tenant-a/"


def keys_under(s3: Any, bucket: str, prefix: str = "") -> list[str]:
    keys: list[str] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys += [entry["Key"] for entry in page.get("Contents", [])]
    return keys


@pytest.fixture(scope="module")
def a_segmentation(a: Api, s3: Any, images_bucket: str) -> dict[str, Any]:
    """A finished segmentation batch of tenant A's (two cells images and one that is not an image): its job."""
    run_id = uuid.uuid4().hex[:8]
    files = {f"{A_SPACE}scans/{run_id}/{path.name}": path.read_bytes() for path in CELLS[:2]}
    files[f"{A_SPACE}scans/{run_id}/broken.png"] = b"not an image"
    keys = upload(s3, images_bucket, files)
    submitted = a.post("/batches", json={"images": keys, "model": "cells"})
    assert submitted.status_code == 202, submitted.text
    job = wait_for(a, submitted.json()["batch_id"])
    assert job["status"] == "COMPLETED_WITH_ERRORS", job
    return job


# -- a named tenant's batch outputs ------------------------------------------------------------------------------


def test_every_object_of_a_named_tenants_batch_is_under_its_prefix(
    a: Api, a_segmentation: dict[str, Any], s3: Any, images_bucket: str
) -> None:
    # Given tenant A's finished segmentation batch
    batch_id = a_segmentation["batch_id"]

    # When the bucket is searched for every object of that batch
    everywhere = [key for key in keys_under(s3, images_bucket) if batch_id in key]

    # Then its keys file, manifest, masks, results file and error report are all there, all under A's prefix
    assert sorted(everywhere) == sorted(
        [
            f"{A_SPACE}jobs/{batch_id}/keys.jsonl",
            f"{A_SPACE}jobs/{batch_id}/manifest.json",
            f"{A_SPACE}results/{batch_id}/masks/0.png",
            f"{A_SPACE}results/{batch_id}/masks/1.png",
            f"{A_SPACE}results/{batch_id}/results-1.jsonl",
            f"{A_SPACE}results/{batch_id}/errors-1.csv",
            f"{A_SPACE}results/{batch_id}/errors-1.jsonl",
        ]
    )
    # and the masks the API names, with their presigned links, are those
    masks = [result["mask"] for result in all_results(a, batch_id, "predicted")]
    assert {mask["s3_key"] for mask in masks} == {
        f"{A_SPACE}results/{batch_id}/masks/0.png",
        f"{A_SPACE}results/{batch_id}/masks/1.png",
    }
    assert all(f"/{mask['s3_key']}?" in mask["url"] for mask in masks)


def test_the_owners_links_point_into_its_space(a: Api, a_segmentation: dict[str, Any]) -> None:
    job = a.get(f"/batches/{a_segmentation['batch_id']}").json()

    links = [job["links"]["results_file"], *job["links"]["errors_files"].values()]
    assert all(f"/{A_SPACE}results/{job['batch_id']}/" in link for link in links)


@pytest.mark.parametrize("who", ["b", "api"])
def test_no_other_tenant_reads_a_named_tenants_outputs_by_any_route(
    who: str, request: pytest.FixtureRequest, a_segmentation: dict[str, Any], images_bucket: str
) -> None:
    # Given tenant A's batch outputs, and another tenant (B, or the default tenant)
    other: Api = request.getfixturevalue(who)
    batch_id = a_segmentation["batch_id"]
    mask = f"{A_SPACE}results/{batch_id}/masks/0.png"
    results_file = f"{A_SPACE}results/{batch_id}/results-1.jsonl"
    errors_file = f"{A_SPACE}results/{batch_id}/errors-1.jsonl"
    keys_file = f"{A_SPACE}jobs/{batch_id}/keys.jsonl"

    # When the other tenant names them to every route that reads S3, and asks for the batch by its id
    answers = {
        "predict a mask": other.post("/predictions", json={"image_s3": {"bucket": images_bucket, "key": mask}}),
        "batch of a mask": other.post("/batches", json={"images": [mask]}),
        "results file as a list": other.post("/batches", json={"manifest": results_file}),
        "error report as a list": other.post("/batches", json={"manifest": errors_file}),
        "keys file as a list": other.post("/batches", json={"manifest": keys_file}),
        "the batch": other.get(f"/batches/{batch_id}"),
        "its results": other.get(f"/batches/{batch_id}/results"),
        "its errors": other.get(f"/batches/{batch_id}/errors"),
    }

    # Then every one is 404, and no answer carries a link (a presigned URL) or a key the caller did not name
    assert {name: answer.status_code for name, answer in answers.items()} == dict.fromkeys(answers, 404)
    assert all("Signature=" not in answer.text for answer in answers.values())
    assert all("masks/1.png" not in answer.text and "errors-1.csv" not in answer.text for answer in answers.values())


def test_the_owner_may_name_its_own_outputs_again(a: Api, a_segmentation: dict[str, Any], images_bucket: str) -> None:
    # Given A's mask, under its prefix
    mask = f"{A_SPACE}results/{a_segmentation['batch_id']}/masks/0.png"

    # When A predicts it (a PNG like any other), then it is read: A's space is A's
    answer = a.post("/predictions", json={"image_s3": {"bucket": images_bucket, "key": mask}, "model": "digits"})
    assert answer.status_code == 200, answer.text


# -- upload triggers in a named tenant's space --------------------------------------------------------------------


def test_an_image_dropped_into_a_tenants_uploads_is_predicted_into_its_space_and_audited_for_it_only(
    a: Api, b: Api, api: Api, s3: Any, images_bucket: str
) -> None:
    # Given a seven dropped into tenant A's uploads/digits/
    key = f"{A_SPACE}uploads/digits/{uuid.uuid4().hex[:8]}-patient-jane.png"
    etag = put(s3, images_bucket, key, sample(7).read_bytes())

    # When its result appears, then it is under A's results/, with the model's answer
    result = wait_for_result(s3, images_bucket, f"{A_SPACE}results/{key.removeprefix(A_SPACE)}.json", etag=etag)
    assert (result["key"], result["model"], result["label"]) == (key, "digits", "7")
    # and A's audit trail has the triggered prediction (by its id and the key's hash, never the key), no one else's
    digest = hashlib.sha256(key.encode()).hexdigest()
    records = a.get("/audit", params={"limit": 1000}).json()["records"]
    mine = [record for record in records if record["resources"].get("prediction_id") == result["prediction_id"]]
    assert [(r["action"], r["outcome"], r["model"], r["version"]) for r in mine] == [("s3:upload", "ok", "digits", "1")]
    assert mine[0]["resources"] == {"prediction_id": result["prediction_id"], "key_sha256": digest}
    assert "patient-jane" not in a.get("/audit", params={"limit": 1000}).text
    for other in (b, api):
        assert digest not in other.get("/audit", params={"limit": 1000}).text


def test_a_list_dropped_into_a_tenants_batches_starts_its_batch(a: Api, b: Api, s3: Any, images_bucket: str) -> None:
    # Given A's images and a list of them dropped into A's batches/digits/
    run_id = uuid.uuid4().hex[:8]
    keys = upload(s3, images_bucket, {f"{A_SPACE}lists/{run_id}/{n}.png": sample(n).read_bytes() for n in (1, 2)})
    list_key = f"{A_SPACE}batches/digits/{run_id}.jsonl"
    etag = put(s3, images_bucket, list_key, "\n".join(json.dumps(key) for key in keys).encode())

    # When the submitted document appears in A's results/
    submitted = wait_for_result(
        s3, images_bucket, f"{A_SPACE}results/batches/digits/{run_id}.jsonl.submitted.json", etag=etag
    )

    # Then the batch is A's (B cannot see it), and it ends with its outputs in A's space
    batch_id = submitted["batch_id"]
    assert b.get(f"/batches/{batch_id}").status_code == 404
    job = wait_for(a, batch_id)
    assert (job["status"], job["total"]) == ("COMPLETED", 2)
    assert f"/{A_SPACE}results/{batch_id}/results-1.jsonl?" in job["links"]["results_file"]
    records = a.get("/audit", params={"resource": batch_id}).json()["records"]
    assert ("s3:batch-list", "ok") in {(record["action"], record["outcome"]) for record in records}


@pytest.mark.parametrize(
    "key",
    [
        "tenants/tenant-a/../tenant-b/uploads/digits/{id}.png",
        "tenants//uploads/digits/{id}.png",
        "tenants/Tenant-A/uploads/digits/{id}.png",
        "tenants/ghost/uploads/digits/{id}.png",
        "tenants/tenant-a/results/uploads/digits/{id}.png",
        "tenants/tenant-a/inputs/{id}.png",
    ],
)
def test_a_hostile_or_odd_key_under_tenants_is_ignored_and_the_trigger_keeps_working(
    stack: LocalRuntime, s3: Any, images_bucket: str, key: str
) -> None:
    # Given the trigger function's error count
    function = on_upload(stack)
    errors = sum(function.errors.values())
    before = set(keys_under(s3, images_bucket, "tenants/"))
    hostile = key.format(id=uuid.uuid4().hex[:8])

    # When an image is dropped at the odd key, and then a good one into A's uploads/
    put(s3, images_bucket, hostile, sample(4).read_bytes())
    good = f"{A_SPACE}uploads/digits/{uuid.uuid4().hex[:8]}.png"
    etag = put(s3, images_bucket, good, sample(4).read_bytes())

    # Then the good one is predicted (no crash loop, no backlog), the odd one wrote nothing anywhere, and no
    # invocation failed
    wait_for_result(s3, images_bucket, f"{A_SPACE}results/{good.removeprefix(A_SPACE)}.json", etag=etag)
    time.sleep(1.0)  # the odd key's event was delivered before the good one's; give its invocation time to end
    new = set(keys_under(s3, images_bucket, "tenants/")) - before - {hostile, good}
    assert new == {f"{A_SPACE}results/{good.removeprefix(A_SPACE)}.json"}, new
    assert read_json(s3, images_bucket, f"results/{hostile}.json") is None
    assert sum(function.errors.values()) == errors


# -- the CLI with a named tenant's key ---------------------------------------------------------------------------


def test_cli_batch_submit_of_a_folder_with_a_named_tenants_key_uploads_into_its_space_and_runs(
    stack: LocalRuntime, a: Api, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a folder of three samples and tenant A's key (the local stack's state file names the default key)
    for label in (1, 5, 7):
        shutil.copyfile(sample(label), tmp_path / sample(label).name)
    flags = ["--endpoint", stack.url, "--api-key", a.key]
    for name in ("ENDPOINT", "API_KEY", "BUCKET", "AWS_ENDPOINT", "STACK", "LOCAL_STATE"):
        monkeypatch.delenv(f"MODELRUN_{name}", raising=False)

    # When the CLI submits it and waits (no bucket, no AWS credentials: only the API key)
    out, err = io.StringIO(), io.StringIO()
    argv = ["batch", "submit", str(tmp_path), "--wait", "--json", "--timeout", "120", *flags]
    code = run(argv, env={}, cwd=tmp_path, out=out, err=err)

    # Then it completes as A's batch, its images staged in A's inputs/
    assert code == 0, err.getvalue()
    job = json.loads(out.getvalue())
    assert (job["status"], job["total"]) == ("COMPLETED", 3)
    results = all_results(a, job["batch_id"])
    assert all(result["key"].startswith(f"{A_SPACE}inputs/") for result in results), results
    assert sorted(result["label"] for result in results) == ["1", "5", "7"]
