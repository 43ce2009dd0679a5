"""The key layout of a batch's objects: the default tenant's outside tenants/, a named tenant's under its prefix."""

from __future__ import annotations

import pytest

from modelrun.batches.keys import BatchKeys
from modelrun.tenants import DEFAULT_TENANT, Tenant

BATCH = "b-20250101T000000-0123456789ab"
DEFAULT = BatchKeys(Tenant(DEFAULT_TENANT), BATCH)
ACME = BatchKeys(Tenant("acme"), BATCH)

# (what, the default tenant's key, acme's key)
LAYOUT = [
    (DEFAULT.keys_file(), f"jobs/{BATCH}/keys.jsonl", ACME.keys_file()),
    (DEFAULT.keys_file(3), f"jobs/{BATCH}/keys-3.jsonl", ACME.keys_file(3)),
    (DEFAULT.manifest(), f"jobs/{BATCH}/manifest.json", ACME.manifest()),
    (DEFAULT.manifest(2), f"jobs/{BATCH}/manifest-2.json", ACME.manifest(2)),
    (DEFAULT.results_file(1), f"results/{BATCH}/results-1.jsonl", ACME.results_file(1)),
    (DEFAULT.error_report(2, "csv"), f"results/{BATCH}/errors-2.csv", ACME.error_report(2, "csv")),
    (DEFAULT.error_report(1, "jsonl"), f"results/{BATCH}/errors-1.jsonl", ACME.error_report(1, "jsonl")),
    (DEFAULT.mask(7), f"results/{BATCH}/masks/7.png", ACME.mask(7)),
    (DEFAULT.mask(7, 2), f"results/{BATCH}/masks/7.f2.png", ACME.mask(7, 2)),
    (DEFAULT.detections(0), f"results/{BATCH}/detections/0.json", ACME.detections(0)),
    (DEFAULT.detections(0, 0), f"results/{BATCH}/detections/0.f0.json", ACME.detections(0, 0)),
]


@pytest.mark.parametrize(("default_key", "expected", "acme_key"), LAYOUT)
def test_the_default_tenants_batch_keeps_the_single_tenant_layout(
    default_key: str, expected: str, acme_key: str
) -> None:
    assert default_key == expected


@pytest.mark.parametrize(("default_key", "expected", "acme_key"), LAYOUT)
def test_a_named_tenants_batch_has_the_same_layout_under_its_prefix(
    default_key: str, expected: str, acme_key: str
) -> None:
    assert acme_key == f"tenants/acme/{expected}"


@pytest.mark.parametrize(("default_key", "expected", "acme_key"), LAYOUT)
def test_each_tenant_owns_its_batchs_objects_and_no_other_tenant_does(
    default_key: str, expected: str, acme_key: str
) -> None:
    default, acme, beta = Tenant(DEFAULT_TENANT), Tenant("acme"), Tenant("beta")
    assert default.owns(default_key)
    assert acme.owns(acme_key)
    assert not acme.owns(default_key)
    assert not default.owns(acme_key)
    assert not beta.owns(acme_key)


def test_a_job_rows_keys_are_its_tenants() -> None:
    assert BatchKeys.of_job({"batch_id": BATCH, "tenant": "acme"}) == ACME


def test_a_job_row_without_a_tenant_has_no_keys() -> None:
    # a job is always created by a tenant's store, which stamps its owner
    with pytest.raises(KeyError):
        BatchKeys.of_job({"batch_id": BATCH})
