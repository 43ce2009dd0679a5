"""Tenants on the local stack: another tenant's resources answer 404 exactly as missing ones, listings show only the
caller's own, S3 references name only the caller's objects, and the audit trail is per tenant.

The routes are read from openapi.yaml: every operation whose path takes an id is tried with another tenant's id, so a
route added to the document later (datasets, ...) is covered without touching this file.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
import websocket
import yaml

from modelrun_local.runtime import LocalRuntime
from tests.integration.conftest import REPO, Api, sample
from tests.integration.helpers import upload, wait_for

SPEC = yaml.safe_load((REPO / "openapi.yaml").read_text(encoding="utf-8"))
METHODS = ("get", "post", "put", "patch", "delete")
OPERATIONS = [(method.upper(), path) for path, item in SPEC["paths"].items() for method in METHODS if method in item]
WITH_ID = [(method, path) for method, path in OPERATIONS if "{" in path]
# Listings of tenant-owned records: GET routes without an id whose answer is the caller's (not the model catalogue).
CATALOGUE = {"/models"}
LISTINGS = [path for method, path in OPERATIONS if method == "GET" and "{" not in path and path not in CATALOGUE]


def fill(path: str, ids: dict[str, str]) -> str:
    """The path with each ``{name}`` replaced by the owner's id of that name."""
    return re.sub(r"\{(\w+)\}", lambda found: ids[found.group(1)], path)


@pytest.fixture(scope="module")
def a_keys(s3: Any, images_bucket: str) -> list[str]:
    files = {f"tenants/tenant-a/scans/{n}.png": sample(n).read_bytes() for n in (3, 7)}
    return upload(s3, images_bucket, files)


@pytest.fixture(scope="module")
def a_batch(a: Api, a_keys: list[str]) -> str:
    """A finished batch of tenant A."""
    submitted = a.post("/batches", json={"images": a_keys})
    assert submitted.status_code == 202, submitted.text
    batch_id: str = submitted.json()["batch_id"]
    wait_for(a, batch_id)
    return batch_id


@pytest.fixture(scope="module")
def a_dataset(a: Api, a_keys: list[str]) -> dict[str, str]:
    """A dataset of tenant A and one of its images."""
    created = a.post("/datasets", json={"name": "tenants-test", "images": a_keys})
    assert created.status_code in (200, 201), created.text
    dataset_id = created.json()["dataset_id"]
    image = a.get(f"/datasets/{dataset_id}/images").json()["images"][0]
    return {"dataset_id": dataset_id, "image_id": image["image_id"]}


@pytest.fixture(scope="module")
def a_ids(a_batch: str, a_dataset: dict[str, str]) -> dict[str, str]:
    return {"batch_id": a_batch, "name": "digits", **a_dataset}


@pytest.mark.parametrize(("method", "path"), WITH_ID, ids=[f"{m} {p}" for m, p in WITH_ID])
def test_another_tenants_resource_answers_404_as_a_missing_one(
    b: Api, a: Api, a_ids: dict[str, str], method: str, path: str
) -> None:
    if path.startswith("/models/"):
        pytest.skip("the model catalogue is the stack's, shared by every tenant")
    # Given tenant A's resource, and an id nobody has
    theirs = fill(path, a_ids)
    missing = fill(path, {name: f"{value}-missing" for name, value in a_ids.items()})

    # When tenant B asks for A's, and for the missing one
    answer = b.session.request(method, b.base + theirs, timeout=60)
    nothing = b.session.request(method, b.base + missing, timeout=60)

    # Then both are 404 with the same code (not_found, dataset_not_found), alike but for the id they name; A still
    # reads its own
    assert answer.status_code == 404, answer.text
    assert nothing.status_code == 404
    assert answer.json()["error"]["code"] == nothing.json()["error"]["code"]
    assert answer.json()["error"]["code"] in ("not_found", "dataset_not_found")
    assert a.get(fill("/batches/{batch_id}", a_ids)).status_code == 200
    assert a.get(fill("/datasets/{dataset_id}/images/{image_id}/predictions", a_ids)).status_code == 200


@pytest.mark.parametrize("path", LISTINGS)
def test_a_listing_shows_only_the_callers_own(a: Api, api: Api, a_ids: dict[str, str], path: str) -> None:
    # Given tenant A's batch and dataset (and its requests)
    a.get(fill("/batches/{batch_id}", a_ids))
    a.get(fill("/datasets/{dataset_id}", a_ids))

    # When another tenant lists (the default one, which never named A's ids: B's own attempts are B's records)
    answer = api.get(path, params={"limit": "1000"})

    # Then nothing of A's is in it
    assert answer.status_code == 200, answer.text
    for name in ("batch_id", "dataset_id", "image_id"):
        assert a_ids[name] not in answer.text


def test_image_s3_naming_another_tenants_object_is_not_found(b: Api, a_keys: list[str], images_bucket: str) -> None:
    answer = b.post("/predictions", json={"image_s3": {"bucket": images_bucket, "key": a_keys[0]}})

    assert answer.status_code == 404
    assert answer.json()["error"]["code"] == "image_not_found"


def test_the_default_tenant_cannot_read_under_tenants(api: Api, a_keys: list[str], images_bucket: str) -> None:
    answer = api.post("/predictions", json={"image_s3": {"bucket": images_bucket, "key": a_keys[0]}})

    assert answer.status_code == 404


def test_a_batch_of_another_tenants_keys_is_refused(b: Api, a_keys: list[str]) -> None:
    answer = b.post("/batches", json={"images": a_keys})

    assert answer.status_code == 404
    assert answer.json()["error"]["code"] == "image_not_found"


def test_a_prefix_over_another_tenants_objects_names_no_images(b: Api, a_keys: list[str]) -> None:
    for prefix in ("tenants/tenant-a/", "tenants/", ""):
        answer = b.post("/batches", json={"s3_prefix": prefix or "t"})
        assert answer.status_code == 400, (prefix, answer.text)


def test_another_tenants_list_file_does_not_exist(b: Api, s3: Any, images_bucket: str, a_keys: list[str]) -> None:
    key = "tenants/tenant-a/lists/mine.jsonl"
    s3.put_object(Bucket=images_bucket, Key=key, Body="\n".join(json.dumps(k) for k in a_keys).encode())
    own = "tenants/tenant-b/lists/theirs.jsonl"
    s3.put_object(Bucket=images_bucket, Key=own, Body="\n".join(json.dumps(k) for k in a_keys).encode())

    assert b.post("/batches", json={"manifest": key}).status_code == 404
    # A list file of B's own naming A's keys is refused too
    assert b.post("/batches", json={"manifest": own}).status_code == 404


def test_presigned_links_are_made_for_the_owner_only(a: Api, b: Api, a_batch: str) -> None:
    mine = a.get(f"/batches/{a_batch}").json()

    assert "results_file" in mine["links"]
    assert b.get(f"/batches/{a_batch}").status_code == 404
    assert b.get(f"/batches/{a_batch}/errors").status_code == 404


def test_uploads_are_signed_in_the_callers_space(a: Api, api: Api) -> None:
    files = {"files": [{"name": "x.png", "content_type": "image/png", "size": 10}]}

    theirs = a.post("/uploads", json=files).json()["uploads"][0]["key"]
    default = api.post("/uploads", json=files).json()["uploads"][0]["key"]

    assert theirs.startswith("tenants/tenant-a/inputs/")
    assert default.startswith("inputs/")


def test_the_audit_trail_shows_each_step_for_its_tenant_only(a: Api, b: Api, a_batch: str) -> None:
    # Given tenant A's submit (the fixture) and reads of its batch
    a.get(f"/batches/{a_batch}")
    a.get(f"/batches/{a_batch}/results")
    b.get(f"/batches/{a_batch}")  # B's attempt: B's record, not A's

    # When each tenant reads its audit trail for that batch
    mine = a.get("/audit", params={"resource": a_batch}).json()["records"]
    theirs = b.get("/audit", params={"resource": a_batch}).json()["records"]

    # Then A sees its submit and reads with their outcome, B only its own refused attempts
    actions = {(record["action"], record["outcome"]) for record in mine}
    assert ("POST /batches", "ok") in actions
    assert ("GET /batches/{batch_id}", "ok") in actions
    assert ("GET /batches/{batch_id}/results", "ok") in actions
    assert all(record["action"] != "POST /batches" for record in theirs)
    assert ("GET /batches/{batch_id}", "not_found") in {(r["action"], r["outcome"]) for r in theirs}
    assert {r["outcome"] for r in theirs} == {"not_found"}
    assert all(record["outcome"] == "ok" for record in mine)
    submitted = next(record for record in mine if record["action"] == "POST /batches")
    assert submitted["model"] == "digits"
    assert submitted["resources"] == {"batch_id": a_batch}
    everything_of_b = b.get("/audit", params={"limit": 1000}).text
    assert "tenant-a" not in everything_of_b
    assert "scans/" not in a.get("/audit").text  # no S3 key (file names) in any record


def test_a_next_token_of_another_tenant_is_refused(a: Api, b: Api, a_batch: str) -> None:
    token = a.get("/audit", params={"limit": 1}).json()["next_token"]

    answer = b.get("/audit", params={"next_token": token})

    assert answer.status_code == 400


def test_a_websocket_subscription_to_another_tenants_batch_is_not_found(
    stack: LocalRuntime, b: Api, a: Api, a_batch: str
) -> None:
    assert stack.websocket is not None
    for api, expected in ((b, "error"), (a, "subscribed")):
        client = websocket.create_connection(f"{stack.websocket.url}?api_key={api.key}", timeout=30)
        try:
            client.send(json.dumps({"action": "subscribe", "batch_id": a_batch}))
            message = json.loads(client.recv())
        finally:
            client.close()
        assert message["type"] == expected, message
        if expected == "error":
            assert message["code"] == "not_found"


def test_a_key_added_while_the_stack_runs_is_its_tenants_at_once(stack: LocalRuntime, a_batch: str) -> None:
    import boto3

    apigateway = boto3.client("apigateway", region_name=stack.region)
    assert stack.stack is not None
    plan = stack.stack.ref("RestApiUsagePlan")
    key = apigateway.create_api_key(
        name="late", value="late-tenant-key-0123456789", enabled=True, tags={"modelrun:tenant": "late"}
    )
    apigateway.create_usage_plan_key(usagePlanId=plan, keyId=key["id"], keyType="API_KEY")
    late = Api(stack.url, "late-tenant-key-0123456789")

    assert late.get("/audit").status_code == 200
    assert late.get(f"/batches/{a_batch}").status_code == 404

    disable = [{"op": "replace", "path": "/enabled", "value": "false"}]
    apigateway.update_api_key(apiKey=key["id"], patchOperations=disable)
    assert late.get("/audit").status_code == 403
    apigateway.update_api_key(apiKey=key["id"], patchOperations=[{**disable[0], "value": "true"}])
    assert late.get("/audit").status_code == 200

    apigateway.delete_api_key(apiKey=key["id"])
    assert late.get("/audit").status_code == 403
