"""``modelrun datasets ...``: register, list, show, page through and delete datasets; local folders are uploaded
into a dataset through ``POST /uploads`` (presigned PUTs: only the API key is needed, no AWS credentials)."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelrun_cli import output
from modelrun_cli.errors import CliError
from modelrun_cli.uploads import collect_images, parse_s3_url, stage_through_api

if TYPE_CHECKING:
    from modelrun_cli.commands import App

# POST /uploads signs at most this many files per call.
POLL_S = 1.0
READY, FAILED, REGISTERING = "READY", "FAILED", "REGISTERING"


def _key(app: App, value: str, what: str) -> str:
    """A key or prefix given as is, or as s3://<the images bucket>/<key>."""
    if not value.startswith("s3://"):
        return value
    location = parse_s3_url(value)
    bucket = app.target.bucket
    if bucket and location.bucket != bucket:
        raise CliError(f"{what} {value} is not in the stack's images bucket ({bucket}): the API reads only that bucket")
    return location.prefix


def datasets_create(args: argparse.Namespace, app: App) -> int:
    """POST /datasets from a prefix, a list file, or local files uploaded into it; --wait follows a registration."""
    sources = [bool(args.prefix), bool(args.manifest), bool(args.paths)]
    if sum(sources) > 1:
        raise CliError("give one source: --prefix P, --manifest M, or local files and folders")
    body: dict[str, Any] = {"name": args.name}
    if args.prefix:
        body["s3_prefix"] = _key(app, args.prefix, "--prefix")
    elif args.manifest:
        body["manifest"] = _key(app, args.manifest, "--manifest")
    images = collect_images([Path(path) for path in args.paths]) if args.paths else []
    dataset = app.client.create_dataset(body)
    if images:
        app.say(f"uploading {len(images)} images into dataset {dataset['dataset_id']}")
        stage_through_api(app.client, images, dataset_id=dataset["dataset_id"], progress=output_progress(app))
        dataset = app.client.dataset(dataset["dataset_id"])
    if args.wait and dataset["status"] == REGISTERING:
        dataset = wait_registered(app, dataset["dataset_id"], timeout_s=args.timeout)
    app.emit(output.to_json(dataset) if args.json else output.format_dataset(dataset))
    if dataset["status"] == FAILED:
        app.say(f"modelrun: dataset {dataset['dataset_id']} FAILED: {dataset.get('reason')}")
        return 1
    if dataset["status"] == REGISTERING and args.wait:
        app.say(f"modelrun: timed out after {args.timeout:g} s; dataset {dataset['dataset_id']} is still registering")
        return 1
    return 0


def output_progress(app: App) -> Callable[[int, int], None]:
    started = last = time.monotonic()

    def update(done: int, total: int) -> None:
        nonlocal last
        now = time.monotonic()
        if done == total or now - last >= 1.0:
            last = now
            app.say(f"uploaded {done}/{total} images ({now - started:.1f}s)")

    return update


def wait_registered(app: App, dataset_id: str, *, timeout_s: float) -> dict[str, Any]:
    """The dataset once it is no longer REGISTERING (or when ``timeout_s`` runs out), its progress on stderr."""
    deadline = time.monotonic() + timeout_s
    started = time.monotonic()
    dataset = app.client.dataset(dataset_id)
    shown = None
    while dataset["status"] == REGISTERING and time.monotonic() < deadline:
        if dataset.get("keys_read") != shown:
            shown = dataset.get("keys_read")
            app.say(f"[{time.monotonic() - started:6.1f}s] {dataset_id} REGISTERING: {shown} keys read")
        time.sleep(POLL_S)
        dataset = app.client.dataset(dataset_id)
    return dataset


def datasets_list(args: argparse.Namespace, app: App) -> int:
    datasets: list[dict[str, Any]] = []
    token: str | None = None
    while True:
        page = app.client.datasets(limit=1000, next_token=token)
        datasets += page["datasets"]
        token = page.get("next_token")
        if not token or not page["datasets"]:
            break
    app.emit(output.to_json(datasets) if args.json else output.format_datasets(datasets))
    return 0


def datasets_show(args: argparse.Namespace, app: App) -> int:
    dataset = app.client.dataset(args.dataset_id)
    app.emit(output.to_json(dataset) if args.json else output.format_dataset(dataset))
    return 0


def _every_page(
    fetch: Callable[[str | None], dict[str, Any]], field: str, *, every: bool, token: str | None
) -> tuple[list[dict[str, Any]], str | None]:
    entries: list[dict[str, Any]] = []
    while True:
        page = fetch(token)
        entries += page[field]
        token = page.get("next_token")
        if not every or not token or not page[field]:
            return entries, token


def datasets_images(args: argparse.Namespace, app: App) -> int:
    limit = args.limit or (1000 if args.all else None)
    images, token = _every_page(
        lambda start: app.client.dataset_images(args.dataset_id, limit=limit, next_token=start),
        "images",
        every=args.all,
        token=args.next_token,
    )
    app.emit(output.to_json(images) if args.json else output.format_images(images))
    if token and not args.all:
        app.say(f"more images: --all, or --next-token {token}")
    return 0


def datasets_predictions(args: argparse.Namespace, app: App) -> int:
    entries, _last = _every_page(
        lambda start: app.client.image_predictions(args.dataset_id, args.image_id, limit=1000, next_token=start),
        "predictions",
        every=True,
        token=None,
    )
    app.emit(output.to_json(entries) if args.json else output.format_history(entries))
    return 0


def datasets_delete(args: argparse.Namespace, app: App) -> int:
    deleted = app.client.delete_dataset(args.dataset_id)
    app.say(
        f"deleted dataset {deleted['dataset_id']} ({deleted['name']}, {deleted['images']} images); its S3 objects "
        "and the results of batches over it stay"
    )
    return 0


def add_commands(commands: Any, common: dict[str, Any]) -> None:
    """The ``datasets`` command and its subcommands."""
    datasets = commands.add_parser(
        "datasets",
        help="datasets: create, list, show, images, predictions, delete",
        description=(
            "Datasets: named sets of your images with stable image ids, which `predict --dataset` and "
            "`batch submit --dataset` name."
        ),
    )
    sub = datasets.add_subparsers(dest="datasets_command", required=True, metavar="COMMAND")
    create = sub.add_parser(
        "create",
        help="register images under a name (a prefix, a list file, or local files uploaded into it)",
        description=(
            "Register a dataset, or register into your dataset of that name again (images already in it keep their "
            "ids). --prefix P registers every object of yours under the prefix, --manifest M the keys of a list "
            "file (JSON lines or CSV), both in the background (--wait follows it); local files and folders are "
            "uploaded into the dataset (POST /uploads, presigned PUTs)."
        ),
        **common,
    )
    create.add_argument("name", metavar="NAME")
    create.add_argument("paths", nargs="*", metavar="DIR|FILE", help="local images to upload into the dataset")
    create.add_argument("--prefix", metavar="P", help="a key prefix in the images bucket (or s3://bucket/prefix)")
    create.add_argument("--manifest", metavar="M", help="the key of a list file in the images bucket")
    create.add_argument("--wait", action="store_true", help="wait until a registration ends (progress on stderr)")
    create.add_argument("--timeout", type=float, default=600.0, metavar="S", help="give up waiting after S seconds")
    create.add_argument("--json", action="store_true", help="print the dataset as JSON")

    listed = sub.add_parser("list", help="your datasets, newest first", **common)
    listed.add_argument("--json", action="store_true", help="print them as JSON")

    show = sub.add_parser("show", help="a dataset's status and counts", **common)
    show.add_argument("dataset_id", metavar="ID")
    show.add_argument("--json", action="store_true", help="print the dataset as JSON")

    images = sub.add_parser("images", help="a dataset's images and their ids", **common)
    images.add_argument("dataset_id", metavar="ID")
    images.add_argument("--limit", type=int, metavar="N", help="images per request (default 100; 1000 with --all)")
    images.add_argument("--all", action="store_true", help="every page, following next_token")
    images.add_argument("--next-token", metavar="TOKEN", help="continue from a previous page")
    images.add_argument("--json", action="store_true", help="print the images as JSON")

    history = sub.add_parser("predictions", help="every prediction an image of a dataset has had", **common)
    history.add_argument("dataset_id", metavar="ID")
    history.add_argument("image_id", metavar="IMAGE_ID")
    history.add_argument("--json", action="store_true", help="print the entries as JSON")

    delete = sub.add_parser(
        "delete",
        help="delete a dataset (its S3 objects and batch results stay)",
        description=(
            "Delete a dataset: it answers 404 from then on and its name is free; its image entries are removed in "
            "the background. The images' S3 objects are never touched, and batches over it keep their results."
        ),
        **common,
    )
    delete.add_argument("dataset_id", metavar="ID")


COMMANDS = {
    "datasets create": datasets_create,
    "datasets list": datasets_list,
    "datasets show": datasets_show,
    "datasets images": datasets_images,
    "datasets predictions": datasets_predictions,
    "datasets delete": datasets_delete,
}
