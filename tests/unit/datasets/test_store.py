"""The DatasetsTable through DatasetStore (moto, the table as template.yaml makes it): every read and write is one
tenant's, another tenant's dataset is not found exactly as a missing one, ids are stable, listings page."""

from __future__ import annotations

import base64
import json

import pytest

from modelrun.datasets.ids import image_id_of, is_dataset_id, is_image_id, new_dataset_id
from modelrun.datasets.store import READY, REGISTERING, dataset_document
from modelrun.errors import DatasetNotFound, DatasetNotReady, ImageNotFound, InvalidRequest
from modelrun.http.paging import encode_token
from tests.unit.datasets.conftest import A, B, DatasetsAws


def new_dataset(aws: DatasetsAws, name: str = "scans", status: str = READY, tenant=A) -> str:
    dataset_id = new_dataset_id()
    aws.store.for_tenant(tenant).create(dataset_id, name, {}, status)
    return dataset_id


def test_an_image_id_is_the_same_for_the_same_dataset_and_key_and_differs_otherwise() -> None:
    first, second = new_dataset_id(), new_dataset_id()

    assert image_id_of(first, "scans/1.png") == image_id_of(first, "scans/1.png")
    assert image_id_of(first, "scans/1.png") != image_id_of(first, "scans/2.png")
    assert image_id_of(first, "scans/1.png") != image_id_of(second, "scans/1.png")
    assert is_image_id(image_id_of(first, "x"))
    assert is_dataset_id(first)


def test_a_dataset_is_read_by_its_tenant_and_not_found_for_another_as_for_a_missing_one(aws: DatasetsAws) -> None:
    dataset_id = new_dataset(aws)

    mine = aws.store.for_tenant(A).get(dataset_id)
    with pytest.raises(DatasetNotFound) as theirs:
        aws.store.for_tenant(B).get(dataset_id)
    with pytest.raises(DatasetNotFound) as missing:
        aws.store.for_tenant(B).get(new_dataset_id())

    assert mine["name"] == "scans"
    assert mine["tenant"] == "tenant-a"
    assert theirs.value.code == missing.value.code == "dataset_not_found"
    assert theirs.value.status == 404


@pytest.mark.parametrize("hostile", ["", "x" * 5000, "d-../../etc", "d-20260101T000000-ABCDEF012345", "\u2603", "a#b"])
def test_an_id_that_is_no_dataset_id_is_not_found_without_a_table_error(aws: DatasetsAws, hostile: str) -> None:
    with pytest.raises(DatasetNotFound):
        aws.store.for_tenant(A).get(hostile)
    with pytest.raises(ImageNotFound):
        aws.store.for_tenant(A).image(new_dataset(aws), hostile)


def test_a_name_is_taken_once_per_tenant(aws: DatasetsAws) -> None:
    first = aws.store.for_tenant(A).claim_name("scans", new_dataset_id())

    again = aws.store.for_tenant(A).claim_name("scans", new_dataset_id())
    other_tenant = aws.store.for_tenant(B).claim_name("scans", new_dataset_id())

    assert again == first
    assert other_tenant != first


def test_the_listing_is_the_tenants_own_newest_first_and_pages(aws: DatasetsAws, monkeypatch) -> None:
    ids = []
    for second in range(5):
        dataset_id = f"d-20260101T00000{second}-{second:012x}"
        aws.store.for_tenant(A).create(dataset_id, f"set {second}", {}, READY)
        ids.append(dataset_id)
    new_dataset(aws, "theirs", tenant=B)

    first, token = aws.store.for_tenant(A).page(limit=3, token=None)
    rest, last = aws.store.for_tenant(A).page(limit=3, token=token)

    assert [header["dataset_id"] for header in first + rest] == ids[::-1]
    assert last is None
    with pytest.raises(InvalidRequest):
        aws.store.for_tenant(B).page(limit=3, token=token)


@pytest.mark.parametrize(
    "tampered",
    [
        {"pk": "tenant-a", "sk": "name#scans"},
        {"pk": "tenant-a", "sk": 5},
        {"pk": "tenant-a"},
        {"pk": "tenant-a", "sk": "dataset#x", "extra": 1},
        {"pk": "tenant-a#d-20260101T000000-000000000000", "sk": "dataset#d-20260101T000000-000000000000"},
    ],
)
def test_a_listing_token_that_this_listing_did_not_return_is_refused(aws: DatasetsAws, tampered: dict) -> None:
    with pytest.raises(InvalidRequest):
        aws.store.for_tenant(A).page(limit=3, token=encode_token(tampered))
    garbage = base64.urlsafe_b64encode(json.dumps([1]).encode()).decode()
    with pytest.raises(InvalidRequest):
        aws.store.for_tenant(A).page(limit=3, token=garbage)


def test_adding_the_same_key_twice_keeps_one_image_and_counts_it_once(aws: DatasetsAws) -> None:
    dataset_id = new_dataset(aws)
    store = aws.store.for_tenant(A)

    first = store.add_images(dataset_id, ["tenants/tenant-a/1.png", "tenants/tenant-a/2.png"], source=None)
    again = store.add_images(dataset_id, ["tenants/tenant-a/2.png", "tenants/tenant-a/2.png"], source=None)

    assert again == [first[1], first[1]]
    assert store.get(dataset_id)["images"] == 2 == store.count_images(dataset_id)
    assert store.image(dataset_id, first[0])["key"] == "tenants/tenant-a/1.png"


def test_images_are_looked_up_by_id_and_unknown_ids_are_named(aws: DatasetsAws) -> None:
    dataset_id = new_dataset(aws)
    store = aws.store.for_tenant(A)
    keys = [f"tenants/tenant-a/{n}.png" for n in range(250)]
    ids = store.add_images(dataset_id, keys, source=None)
    unknown = image_id_of(dataset_id, "tenants/tenant-a/none.png")

    found, missing = store.keys_of(dataset_id, [*ids, unknown, "not an id", ids[0]])

    assert found == dict(zip(ids, keys, strict=True))
    assert missing == [unknown, "not an id"]
    assert sorted(store.iter_keys(dataset_id)) == sorted(keys)


def test_another_tenants_view_sees_none_of_the_images(aws: DatasetsAws) -> None:
    dataset_id = new_dataset(aws)
    [image_id] = aws.store.for_tenant(A).add_images(dataset_id, ["tenants/tenant-a/1.png"], source=None)

    with pytest.raises(ImageNotFound):
        aws.store.for_tenant(B).image(dataset_id, image_id)
    assert aws.store.for_tenant(B).keys_of(dataset_id, [image_id]) == ({}, [image_id])
    assert list(aws.store.for_tenant(B).iter_keys(dataset_id)) == []


def test_images_page_in_id_order_with_tokens_of_their_own_listing(aws: DatasetsAws) -> None:
    dataset_id = new_dataset(aws)
    other = new_dataset(aws, "other")
    store = aws.store.for_tenant(A)
    store.add_images(dataset_id, [f"tenants/tenant-a/{n}.png" for n in range(7)], source=None)

    first, token = store.images_page(dataset_id, limit=4, token=None)
    second, last = store.images_page(dataset_id, limit=4, token=token)

    ids = [entry["image_id"] for entry in first + second]
    assert ids == sorted(ids)
    assert len(ids) == 7
    assert last is None
    with pytest.raises(InvalidRequest):
        store.images_page(other, limit=4, token=token)


def test_a_registering_dataset_cannot_be_added_to_or_deleted(aws: DatasetsAws) -> None:
    dataset_id = new_dataset(aws, status=REGISTERING)
    store = aws.store.for_tenant(A)

    with pytest.raises(DatasetNotReady) as added:
        store.mark_added(dataset_id, source=None, added=1)
    with pytest.raises(DatasetNotReady) as deleted:
        store.delete(dataset_id)

    assert added.value.status == deleted.value.status == 409
    assert deleted.value.code == "dataset_not_ready"
    assert store.get(dataset_id)["status"] == REGISTERING


def test_deleting_frees_the_name_and_leaves_the_entries_to_purge(aws: DatasetsAws) -> None:
    store = aws.store.for_tenant(A)
    dataset_id = store.claim_name("scans", new_dataset_id())
    store.create(dataset_id, "scans", {}, READY)
    store.add_images(dataset_id, [f"tenants/tenant-a/{n}.png" for n in range(30)], source=None)

    store.delete(dataset_id)

    with pytest.raises(DatasetNotFound):
        store.get(dataset_id)
    with pytest.raises(DatasetNotFound):
        store.delete(dataset_id)
    assert store.claim_name("scans", "d-20260101T000000-000000000001") == "d-20260101T000000-000000000001"
    assert store.count_images(dataset_id) == 30
    assert store.purge_images(dataset_id, keep_going=lambda: True) == (30, True)
    assert store.count_images(dataset_id) == 0


def test_a_registration_step_is_recorded_only_by_the_worker_of_the_step_due(aws: DatasetsAws) -> None:
    dataset_id = new_dataset(aws, status=REGISTERING)
    store = aws.store.for_tenant(A)

    assert store.advance(dataset_id, step=1, cursor={"after": "k"}, keys_read=10)
    assert not store.advance(dataset_id, step=1, cursor={"after": "other"}, keys_read=10)
    assert not store.finish(dataset_id, step=1, status=READY, images=1, keys_read=0, reason=None)
    assert store.finish(dataset_id, step=2, status=READY, images=3, keys_read=5, reason=None)

    header = store.get(dataset_id)
    assert (header["status"], header["images"], header["keys_read"], header.get("cursor")) == (READY, 3, 15, None)


def test_the_document_shows_what_a_client_needs_and_nothing_internal(aws: DatasetsAws) -> None:
    dataset_id = new_dataset(aws, status=REGISTERING)
    header = aws.store.for_tenant(A).get(dataset_id)

    document = dataset_document(header, {"self": "x"})

    assert set(document) == {
        "dataset_id",
        "name",
        "status",
        "source",
        "images",
        "keys_read",
        "created_at",
        "updated_at",
        "finished_at",
        "links",
    }
