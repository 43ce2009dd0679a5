"""Registering a dataset on moto: the source is checked while the client waits, a prefix or a list file is registered
by the worker in steps handed over on the queue, duplicated and late messages change nothing, a bad source fails the
dataset with its reason, and a deleted dataset's entries are purged."""

from __future__ import annotations

import json
from typing import Any

import pytest

from modelrun.datasets.ids import image_id_of
from modelrun.datasets.registration import Registrations, own_listing_prefix
from modelrun.datasets.requests import DatasetRequest
from modelrun.datasets.store import FAILED, READY, REGISTERING
from modelrun.errors import DatasetNotFound, DatasetNotReady, ImageNotFound
from modelrun.tenants import Tenant
from tests.batchfixtures import TimeLeft
from tests.unit.datasets.conftest import BUCKET, DEFAULT, A, B, DatasetsAws

PREFIX = "tenants/tenant-a/scans/"


def request(**body: Any) -> DatasetRequest:
    return DatasetRequest.parse({"name": "scans", **body})


def drain(aws: DatasetsAws, registrations: Registrations) -> list[dict[str, Any]]:
    """Run every message on the queue through the worker until none is left; what each step did."""
    done = []
    while messages := aws.messages():
        for body, count in messages:
            done.append(registrations.handle(body, receive_count=count))
    return done


@pytest.mark.parametrize(
    ("tenant", "prefix", "listed"),
    [
        (A, "tenants/tenant-a/scans/", "tenants/tenant-a/scans/"),
        (A, "ten", "tenants/tenant-a/"),
        (A, "", "tenants/tenant-a/"),
        (A, "tenants/tenant-b/", None),
        (A, "tenants/tenant-ab/", None),
        (A, "scans/", None),
        (DEFAULT, "scans/", "scans/"),
        (DEFAULT, "t", "t"),
        (DEFAULT, "tenants/tenant-a/", None),
    ],
)
def test_a_prefix_is_listed_only_within_the_tenants_space(tenant: Tenant, prefix: str, listed: str | None) -> None:
    assert own_listing_prefix(tenant, prefix) == listed


def test_a_prefix_is_registered_by_the_worker_with_exact_counts(aws: DatasetsAws) -> None:
    aws.put(*[f"{PREFIX}{n:04d}.png" for n in range(2500)], f"{PREFIX}folder/", "tenants/tenant-b/scans/x.png")
    registrations = aws.registrations()

    header, created = registrations.for_tenant(A).submit(request(s3_prefix=PREFIX))
    assert (header["status"], created) == (REGISTERING, True)
    done = drain(aws, registrations)

    ready = aws.store.for_tenant(A).get(header["dataset_id"])
    assert [step["done"] for step in done] == [READY]
    assert (ready["status"], ready["images"], ready["keys_read"]) == (READY, 2500, 2500)
    assert ready["source"] == {"s3_prefix": PREFIX}
    image_id = image_id_of(header["dataset_id"], f"{PREFIX}0042.png")
    assert aws.store.for_tenant(A).image(header["dataset_id"], image_id)["key"] == f"{PREFIX}0042.png"


def test_a_registration_short_of_time_goes_on_in_steps_to_the_same_result(aws: DatasetsAws) -> None:
    aws.put(*[f"{PREFIX}{n:04d}.png" for n in range(2500)])
    # Every step has time for 1,000 keys: its first check, at key 1,000, finds 1 s left of a 2 s margin.
    registrations = aws.registrations(margin_ms=2_000, check_every=1_000)
    registrations.remaining_ms = TimeLeft(1_000)

    header, _ = registrations.for_tenant(A).submit(request(s3_prefix=PREFIX))
    steps = drain(aws, registrations)

    ready = aws.store.for_tenant(A).get(header["dataset_id"])
    assert [step["done"] for step in steps] == ["step", "step", READY]
    assert [step["keys_read"] for step in steps] == [1000, 1000, 500]
    assert (ready["status"], ready["images"], ready["keys_read"], ready["step"]) == (READY, 2500, 2500, 3)


def test_a_list_file_is_read_on_from_where_the_last_step_stopped(aws: DatasetsAws) -> None:
    keys = [f"{PREFIX}{n}.png" for n in range(1500)] + [f"{PREFIX}0.png"]  # one key twice
    aws.s3.put_object(Bucket=BUCKET, Key="tenants/tenant-a/list.jsonl", Body="\n".join(map(json.dumps, keys)).encode())
    registrations = aws.registrations(margin_ms=2_000, check_every=1_000)
    registrations.remaining_ms = TimeLeft(1_000)

    header, _ = registrations.for_tenant(A).submit(request(manifest="tenants/tenant-a/list.jsonl"))
    steps = drain(aws, registrations)

    ready = aws.store.for_tenant(A).get(header["dataset_id"])
    assert [step["done"] for step in steps] == ["step", READY]
    assert (ready["images"], ready["keys_read"]) == (1500, 1501)


def test_a_duplicated_message_of_a_step_runs_it_once_and_a_late_one_is_dropped(aws: DatasetsAws) -> None:
    aws.put(*[f"{PREFIX}{n}.png" for n in range(20)])
    registrations = aws.registrations()
    header, _ = registrations.for_tenant(A).submit(request(s3_prefix=PREFIX))
    [(message, _)] = aws.messages()

    first = registrations.handle(message, receive_count=1)
    duplicate = registrations.handle(message, receive_count=1)

    assert first["done"] == READY
    assert duplicate["done"] == "not registering"
    assert aws.messages() == []
    assert aws.store.for_tenant(A).get(header["dataset_id"])["images"] == 20


def test_a_step_delivered_again_after_it_was_recorded_sends_the_next_one_again(aws: DatasetsAws) -> None:
    aws.put(*[f"{PREFIX}{n:04d}.png" for n in range(1500)])
    registrations = aws.registrations(margin_ms=2_000, check_every=1_000)
    registrations.remaining_ms = TimeLeft(1_000)
    header, _ = registrations.for_tenant(A).submit(request(s3_prefix=PREFIX))
    [(message, _)] = aws.messages()
    registrations.handle(message, receive_count=1)
    aws.messages()  # the next step's message is lost (the worker died before it went out)

    again = registrations.handle(message, receive_count=2)
    stale = registrations.handle(message, receive_count=1)
    [(resent, _)] = aws.messages()

    assert again["done"] == "next step sent again"
    assert stale["done"] == "stale"
    assert resent["step"] == 2
    assert registrations.handle(resent, receive_count=1)["done"] == READY
    assert aws.store.for_tenant(A).get(header["dataset_id"])["images"] == 1500


def test_registering_under_the_same_name_again_keeps_the_dataset_and_its_image_ids(aws: DatasetsAws) -> None:
    aws.put(*[f"{PREFIX}{n}.png" for n in range(10)])
    registrations = aws.registrations()
    first, _ = registrations.for_tenant(A).submit(request(s3_prefix=PREFIX))
    drain(aws, registrations)
    aws.put(f"{PREFIX}new.png")

    again, created = registrations.for_tenant(A).submit(request(s3_prefix=PREFIX))
    drain(aws, registrations)

    ready = aws.store.for_tenant(A).get(first["dataset_id"])
    assert again["dataset_id"] == first["dataset_id"]
    assert not created
    assert (ready["status"], ready["images"], ready["keys_read"]) == (READY, 11, 11)


def test_a_dataset_being_registered_refuses_another_registration(aws: DatasetsAws) -> None:
    aws.put(f"{PREFIX}1.png")
    registrations = aws.registrations().for_tenant(A)
    registrations.submit(request(s3_prefix=PREFIX))

    with pytest.raises(DatasetNotReady):
        registrations.submit(request(s3_prefix=PREFIX))
    with pytest.raises(DatasetNotReady):
        registrations.submit(request(images=[f"{PREFIX}1.png"]))


@pytest.mark.parametrize("prefix", ["tenants/tenant-b/scans/", "tenants/tenant-a/none/", "scans/"])
def test_a_prefix_with_no_object_of_the_callers_is_not_found_and_makes_no_dataset(
    aws: DatasetsAws, prefix: str
) -> None:
    aws.put("tenants/tenant-b/scans/x.png", "scans/x.png")
    registrations = aws.registrations().for_tenant(A)

    with pytest.raises(ImageNotFound) as refused:
        registrations.submit(request(s3_prefix=prefix))

    assert refused.value.code == "image_not_found"
    assert aws.store.for_tenant(A).page(limit=10, token=None)[0] == []
    assert aws.messages() == []


def test_the_default_tenant_registers_no_key_under_tenants(aws: DatasetsAws) -> None:
    aws.put("scans/1.png", "tenants/tenant-a/t.png", "tx.png")
    registrations = aws.registrations()

    header, _ = registrations.for_tenant(DEFAULT).submit(request(s3_prefix="t"))
    drain(aws, registrations)

    assert list(aws.store.for_tenant(DEFAULT).iter_keys(header["dataset_id"])) == ["tx.png"]
    with pytest.raises(ImageNotFound):
        registrations.for_tenant(DEFAULT).submit(request(name="x", s3_prefix="tenants/tenant-a/"))


@pytest.mark.parametrize("key", ["tenants/tenant-b/list.jsonl", "tenants/tenant-a/missing.jsonl"])
def test_a_list_file_that_is_missing_or_another_tenants_is_not_found(aws: DatasetsAws, key: str) -> None:
    aws.s3.put_object(Bucket=BUCKET, Key="tenants/tenant-b/list.jsonl", Body=b'"tenants/tenant-b/x.png"\n')

    with pytest.raises(ImageNotFound):
        aws.registrations().for_tenant(A).submit(request(manifest=key))


@pytest.mark.parametrize(
    ("lines", "reason"),
    [
        ([json.dumps(f"{PREFIX}1.png"), json.dumps("tenants/tenant-b/x.png")], "key 2 of"),
        ([json.dumps(f"{PREFIX}1.png"), "{not json"], "line 2 is not JSON"),
        ([json.dumps(f"{PREFIX}1.png"), json.dumps("k" * 2000)], "at most 1024 bytes"),
    ],
)
def test_a_list_file_with_a_bad_line_fails_the_dataset_saying_why(aws: DatasetsAws, lines: list, reason: str) -> None:
    aws.s3.put_object(Bucket=BUCKET, Key="tenants/tenant-a/list.jsonl", Body="\n".join(lines).encode())
    registrations = aws.registrations()

    header, _ = registrations.for_tenant(A).submit(request(manifest="tenants/tenant-a/list.jsonl"))
    [step] = drain(aws, registrations)

    failed = aws.store.for_tenant(A).get(header["dataset_id"])
    assert step["done"] == FAILED
    assert failed["status"] == FAILED
    assert reason in failed["reason"]
    assert failed["images"] == 1  # what was registered before the bad line stays, counted


def test_a_step_that_keeps_failing_fails_the_dataset_on_its_last_delivery(aws: DatasetsAws) -> None:
    aws.put(f"{PREFIX}1.png")
    registrations = aws.registrations(max_receives=3)
    header, _ = registrations.for_tenant(A).submit(request(s3_prefix=PREFIX))
    [(message, _)] = aws.messages()
    registrations.s3 = Exploding(aws.s3)

    with pytest.raises(RuntimeError):
        registrations.handle(message, receive_count=2)
    last = registrations.handle(message, receive_count=3)

    failed = aws.store.for_tenant(A).get(header["dataset_id"])
    assert last["done"] == FAILED
    assert failed["status"] == FAILED
    assert "failed 3 times" in failed["reason"]


class Exploding:
    """An S3 client whose listings fail (an outage)."""

    def __init__(self, s3: Any) -> None:
        self.s3 = s3

    def get_paginator(self, name: str) -> Any:
        raise RuntimeError("S3 is down")


def test_inline_keys_are_registered_at_once_and_must_be_the_callers(aws: DatasetsAws) -> None:
    registrations = aws.registrations().for_tenant(A)

    header, created = registrations.submit(request(images=[f"{PREFIX}1.png", f"{PREFIX}2.png", f"{PREFIX}1.png"]))
    with pytest.raises(ImageNotFound) as refused:
        registrations.submit(request(name="other", images=["tenants/tenant-b/x.png"]))

    assert (header["status"], header["images"], created) == (READY, 2, True)
    assert "images[0]" in refused.value.message
    assert aws.messages() == []


def test_an_empty_dataset_is_ready_for_uploads(aws: DatasetsAws) -> None:
    header, created = aws.registrations().for_tenant(A).submit(request())

    assert (header["status"], header["images"], header["source"], created) == (READY, 0, {}, True)


def test_deleting_removes_the_dataset_at_once_and_its_entries_on_the_queue(aws: DatasetsAws) -> None:
    registrations = aws.registrations()
    header, _ = registrations.for_tenant(A).submit(request(images=[f"{PREFIX}{n}.png" for n in range(40)]))
    dataset_id = header["dataset_id"]

    with pytest.raises(DatasetNotFound):
        registrations.for_tenant(B).delete(dataset_id)
    registrations.for_tenant(A).delete(dataset_id)
    [purged] = drain(aws, registrations)

    assert purged == {"dataset_id": dataset_id, "removed": 40, "done": True}
    with pytest.raises(DatasetNotFound):
        aws.store.for_tenant(A).get(dataset_id)
    assert aws.store.for_tenant(A).count_images(dataset_id) == 0
    # the name is free again: a new dataset, with a new id
    again, created = registrations.for_tenant(A).submit(request())
    assert created
    assert again["dataset_id"] != dataset_id
