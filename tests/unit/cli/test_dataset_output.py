"""How the CLI shows one dataset: the count and where the images came from."""

from __future__ import annotations

from modelrun_cli.output import format_dataset


def test_a_registered_prefix_shows_the_keys_read_and_the_prefix() -> None:
    shown = format_dataset(
        {
            "dataset_id": "d-1",
            "name": "scans",
            "status": "READY",
            "images": 3,
            "keys_read": 4,
            "source": {"s3_prefix": "tenants/acme/scans/"},
        }
    )
    assert shown.splitlines()[0] == "d-1"
    assert "  images   3 (4 keys read from s3_prefix tenants/acme/scans/)" in shown


def test_an_uploaded_dataset_says_so_instead_of_zero_keys_read() -> None:
    shown = format_dataset({"dataset_id": "d-2", "name": "knees", "status": "READY", "images": 25, "keys_read": 0})
    assert "  images   25 (uploaded through POST /uploads)" in shown
    assert "keys read" not in shown
