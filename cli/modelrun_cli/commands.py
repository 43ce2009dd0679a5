"""One function per command: read the arguments, call the API (and S3 for uploads), print the answer.

Each returns the exit status: 0 done, 1 the work did not succeed (a failed or unfinished batch). Problems the
user can fix are raised as CliError and reported by ``main``.
"""

from __future__ import annotations

import argparse
import base64
import binascii
from collections.abc import Callable, Iterator, Mapping
from functools import cached_property
from pathlib import Path, PurePosixPath
from typing import Any, TextIO

from modelrun_cli import datasets, output, uploads
from modelrun_cli import tenants as tenant_admin
from modelrun_cli.client import ApiClient
from modelrun_cli.config import Flags, StackReader, Target, discover
from modelrun_cli.errors import CliError
from modelrun_cli.uploads import (
    LocalImage,
    collect_images,
    content_type_for,
    download_object,
    images_source,
    parse_s3_url,
    s3_client,
    stage_through_api,
    throttled_progress,
    upload_images,
    upload_prefix,
)
from modelrun_cli.waiting import TERMINAL, WaitOutcome, wait_for_batch, watch_batch

FAILED = "FAILED"
RESULTS_PAGE_WITH_ALL = 1000
FAULT_SHORTHANDS = (("transient_rate", "--transient-rate"), ("timeout_rate", "--timeout-rate"))


class App:
    """What the commands share: the stack (found on first use), its API client, S3, and the two streams."""

    def __init__(
        self,
        args: argparse.Namespace,
        *,
        env: Mapping[str, str],
        cwd: Path,
        out: TextIO,
        err: TextIO,
        read_stack: StackReader | None = None,
    ) -> None:
        self.args = args
        self.env = env
        self.cwd = cwd
        self.out = out
        self.err = err
        self.read_stack = read_stack

    @cached_property
    def target(self) -> Target:
        flags = Flags(
            endpoint=self.args.endpoint,
            api_key=self.args.api_key,
            bucket=self.args.bucket,
            aws_endpoint=self.args.aws_endpoint,
            stack=self.args.stack,
            ws_url=self.args.ws_url,
        )
        return discover(flags, self.env, self.cwd, read_stack=self.read_stack)

    @property
    def discovered(self) -> Target | None:
        """The target if it has been looked up already (never starts the lookup itself)."""
        found: Target | None = self.__dict__.get("target")
        return found

    @cached_property
    def client(self) -> ApiClient:
        return ApiClient(self.target.endpoint, self.target.api_key)

    @cached_property
    def s3(self) -> Any:
        return s3_client(self.target)

    def emit(self, text: str) -> None:
        """Standard output: the answer itself."""
        if text:
            self.out.write(text if text.endswith("\n") else text + "\n")
            self.out.flush()

    def say(self, text: str) -> None:
        """Standard error: progress and notes, never mixed into the answer."""
        print(text, file=self.err, flush=True)


Command = Callable[[argparse.Namespace, App], int]


# -- predict and models ------------------------------------------------------------------------------------------
def predict(args: argparse.Namespace, app: App) -> int:
    """The image as the request body; one too large for a request is uploaded first and named by ``image_s3``; or an
    image of a dataset, named by its ids."""
    if args.dataset or args.image:
        if not (args.dataset and args.image) or args.file:
            raise CliError("give a FILE, or --dataset ID with --image IMAGE_ID (not both)")
        result = app.client.predict_dataset_image(args.dataset, args.image, model=args.model, version=args.version)
        if args.mask_out is not None:
            _save_inline_mask(app, result, Path(args.mask_out))
        app.emit(output.to_json(result) if args.json else output.format_prediction(result))
        return 0
    if not args.file:
        raise CliError("give a FILE to predict, or --dataset ID with --image IMAGE_ID")
    path = Path(args.file)
    try:
        size = path.stat().st_size
        image = path.read_bytes() if uploads.fits_in_a_request(size) else None
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror or exc}") from exc
    if image is not None:
        result = app.client.predict(image, content_type_for(path), model=args.model, version=args.version)
    else:
        bucket, key = _stage_for_prediction(app, path, size)
        result = app.client.predict_stored(bucket, key, model=args.model, version=args.version)
    if args.mask_out is not None:
        _save_inline_mask(app, result, Path(args.mask_out))
    app.emit(output.to_json(result) if args.json else output.format_prediction(result))
    return 0


def _save_inline_mask(app: App, result: Mapping[str, Any], path: Path) -> None:
    """Write a prediction's segmentation mask (an indexed PNG, pixel value = class index) at ``path``."""
    mask = result.get("mask")
    if not isinstance(mask, dict) or not isinstance(mask.get("data"), str):
        what = "has no mask" if output.task_of(result) == "segmentation" else f"is a {output.task_of(result)} result"
        raise CliError(f"--mask-out: the prediction {what}; only a segmentation model's answer carries a mask")
    try:
        png = base64.b64decode(mask["data"], validate=True)
    except (binascii.Error, ValueError) as exc:
        raise CliError(f"--mask-out: the mask in the answer is not base64 ({exc})") from exc
    _write(path, png)
    app.say(f"saved the {mask.get('width')}x{mask.get('height')} mask as {path} ({output.size(len(png))})")


def _write(path: Path, data: bytes) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    except OSError as exc:
        raise CliError(f"cannot write {path}: {exc.strerror or exc}") from exc


def _stage_for_prediction(app: App, path: Path, size: int) -> tuple[str, str]:
    """Upload an image too large for a request body through the API (POST /uploads), into the API key's tenant's
    space as batch submit uploads local files, so any tenant's key may name it; its bucket and key (``image_s3``)."""
    limit = output.size(uploads.DIRECT_BODY_LIMIT)
    app.say(
        f"{path} ({output.size(size)}) is over the {limit} a request body can carry through API Gateway: uploading "
        "it through the API (POST /uploads) into this API key's space and predicting it from there (image_s3)"
    )
    staged = stage_through_api(app.client, [LocalImage(path, path.name)])
    return staged.bucket, staged.keys[0]


def _images_bucket(app: App, purpose: str) -> str:
    bucket = app.target.bucket
    if not bucket:
        raise CliError(
            f"{purpose} needs the stack's images bucket, and {app.target.source} names none: "
            "pass --bucket NAME (env MODELRUN_BUCKET)"
        )
    return bucket


def models(args: argparse.Namespace, app: App) -> int:
    catalogue = app.client.model(args.name) if args.name else app.client.models()
    app.emit(output.to_json(catalogue) if args.json else output.format_models(catalogue))
    return 0


# -- batches -----------------------------------------------------------------------------------------------------
def batch_submit(args: argparse.Namespace, app: App) -> int:
    sources: list[str] = args.sources
    faults = _faults(args)
    uploaded_to: str | None
    if args.image and not args.dataset:
        raise CliError("--image names an image of a dataset: give --dataset ID too")
    if args.dataset:
        if sources:
            raise CliError("give either --dataset ID or files, folders or an s3:// prefix, not both")
        if args.prefix is not None:
            raise CliError("--prefix names where local files are uploaded; a dataset's images are not uploaded")
        body: dict[str, Any] = {"dataset_id": args.dataset, **({"image_ids": args.image} if args.image else {})}
        uploaded_to = None
    elif not sources:
        raise CliError("give files, folders, an s3://bucket/prefix, or --dataset ID")
    elif any(source.startswith("s3://") for source in sources):
        body = _prefix_source(args, app)
        uploaded_to = None
    else:
        body, uploaded_to = _upload_source(args, app)
    options = {
        "model": args.model,
        "version": args.version,
        "chunk_size": args.chunk_size,
        "max_concurrency": args.max_concurrency,
    }
    body.update({name: value for name, value in options.items() if value is not None})
    if faults is not None:
        body["faults"] = faults
    submitted = app.client.submit_batch(body, idempotency_key=args.idempotency_key)
    if not args.wait and not args.watch:
        app.emit(
            output.to_json(submitted) if args.json else output.format_submitted(submitted, uploaded_to=uploaded_to)
        )
        return 0
    if args.json:
        app.say(f"batch {submitted['batch_id']} submitted ({submitted.get('total')} images); waiting")
    else:
        app.emit(output.format_submitted(submitted, uploaded_to=uploaded_to))
    if args.watch:
        return _watch(app, submitted["batch_id"], timeout_s=args.timeout, as_json=args.json)
    return _wait(app, submitted["batch_id"], timeout_s=args.timeout, as_json=args.json)


def _faults(args: argparse.Namespace) -> dict[str, Any] | None:
    """The request's ``faults``: --faults JSON, with --transient-rate / --timeout-rate filling in their field."""
    faults: dict[str, Any] | None = dict(args.faults) if args.faults is not None else None
    for field, flag in FAULT_SHORTHANDS:
        value = getattr(args, field)
        if value is None:
            continue
        faults = faults if faults is not None else {}
        if field in faults:
            raise CliError(f"{flag} and --faults both set {field}: give it once")
        faults[field] = value
    return faults


def _prefix_source(args: argparse.Namespace, app: App) -> dict[str, Any]:
    if len(args.sources) != 1:
        raise CliError("give either one s3://bucket/prefix or local files and folders, not both")
    if args.prefix is not None:
        raise CliError("--prefix names where local files are uploaded; an s3:// source is not uploaded")
    location = parse_s3_url(args.sources[0])
    bucket = app.target.bucket
    if bucket and location.bucket != bucket:
        raise CliError(
            f"s3://{location.bucket} is not the stack's images bucket ({bucket}); the API reads only that bucket: "
            f"copy the images to s3://{bucket}/<prefix> or pass local files to upload them"
        )
    return {"s3_prefix": location.prefix}


def _upload_source(args: argparse.Namespace, app: App) -> tuple[dict[str, Any], str]:
    """Upload the local images, through the API unless ``--prefix`` names where in S3; the body's images field."""
    images = collect_images([Path(source) for source in args.sources])
    if args.prefix is None:
        return _stage_through_api(args, app, images)
    bucket = _images_bucket(app, "uploading with --prefix")
    prefix = upload_prefix(args.prefix)
    app.say(f"uploading {len(images)} images to s3://{bucket}/{prefix}/")
    keys = upload_images(app.s3, bucket, images, prefix, progress=throttled_progress(app.say))
    return images_source(app.s3, bucket, prefix, keys), f"s3://{bucket}/{prefix}/"


def _stage_through_api(args: argparse.Namespace, app: App, images: list[LocalImage]) -> tuple[dict[str, Any], str]:
    if len(images) > uploads.INLINE_KEYS_LIMIT:
        raise CliError(
            f"{len(images):,} images are more than the {uploads.INLINE_KEYS_LIMIT:,} one request can list: upload them "
            "yourself with --prefix P (your AWS credentials; for a tenant's API key a prefix in its space, "
            "tenants/<tenant>/...), which submits them as a list file, or submit them in parts"
        )
    app.say(f"uploading {len(images)} images through the API (POST /uploads) into this API key's space")
    staged = stage_through_api(
        app.client, images, idempotency_key=args.idempotency_key, progress=throttled_progress(app.say)
    )
    return {"images": staged.keys}, staged.location


def batch_status(args: argparse.Namespace, app: App) -> int:
    job = app.client.batch(args.batch_id)
    app.emit(output.to_json(job) if args.json else output.format_job(job))
    return 0


def batch_wait(args: argparse.Namespace, app: App) -> int:
    return _wait(app, args.batch_id, timeout_s=args.timeout, as_json=args.json)


def _wait(app: App, batch_id: str, *, timeout_s: float, as_json: bool) -> int:
    outcome: WaitOutcome = wait_for_batch(
        app.client,
        batch_id,
        timeout_s=timeout_s,
        on_progress=lambda job, elapsed: app.say(output.format_progress(job, elapsed)),
        on_retry=lambda error: app.say(f"polling {batch_id}: {error}; trying again"),
    )
    return _ended(app, outcome, batch_id, timeout_s=timeout_s, as_json=as_json, again="wait")


def _watch(app: App, batch_id: str, *, timeout_s: float, as_json: bool) -> int:
    """Live progress (WebSocket, else polling) as a bar on stderr, then the summary as ``_wait`` prints it."""
    line = output.ProgressLine(app.err)
    try:
        outcome = watch_batch(
            app.client,
            batch_id,
            ws_url=app.target.ws_url,
            api_key=app.target.api_key,
            timeout_s=timeout_s,
            on_progress=line.show,
            on_note=line.note,
        )
    finally:
        line.finish()
    return _ended(app, outcome, batch_id, timeout_s=timeout_s, as_json=as_json, again="watch")


def _ended(app: App, outcome: WaitOutcome, batch_id: str, *, timeout_s: float, as_json: bool, again: str) -> int:
    """The final job document on stdout (JSON or the summary), a word on stderr, and the exit status."""
    job = outcome.job
    app.emit(output.to_json(job) if as_json else output.format_job(job))
    if not outcome.finished:
        app.say(
            f"modelrun: timed out after {timeout_s:g} s; batch {batch_id} is {job.get('status')} and keeps running "
            f"(`modelrun batch {again} {batch_id}` follows it again)"
        )
        return 1
    failed = int((job.get("counts") or {}).get("failed", 0))
    if job.get("status") == FAILED:
        app.say(f"modelrun: batch {batch_id} FAILED (`modelrun batch errors {batch_id}` says why)")
        return 1
    if failed and again == "watch":  # --wait keeps its last stderr line the last progress line
        app.say(
            f"{failed} image{'s' * (failed != 1)} failed: `modelrun batch errors {batch_id}` lists them, "
            f"`modelrun batch retry {batch_id}` runs them again"
        )
    return 0


def batch_watch(args: argparse.Namespace, app: App) -> int:
    return _watch(app, args.batch_id, timeout_s=args.timeout, as_json=args.json)


def _pages(
    fetch: Callable[[str | None], dict[str, Any]], field: str, *, token: str | None, every: bool, batch_id: str
) -> Iterator[tuple[dict[str, Any], list[dict[str, Any]]]]:
    """Each page (and its entries under ``field``) from ``token`` on: one page, or with ``every`` all of them,
    following next_token to the end."""
    tokens_seen: set[str] = set()
    while True:
        page = fetch(token)
        entries = list(page.get(field) or [])
        yield page, entries
        token = page.get("next_token") or None
        if not every or token is None or not entries:
            return
        if token in tokens_seen:
            raise CliError(f"the API handed out the same next_token twice for batch {batch_id}")
        tokens_seen.add(token)


def _format(args: argparse.Namespace) -> str:
    return "json" if args.json else "jsonl" if args.jsonl else "csv" if args.csv else "table"


def batch_results(args: argparse.Namespace, app: App) -> int:
    fmt = _format(args)
    limit = args.limit or (RESULTS_PAGE_WITH_ALL if args.all else None)
    collected: list[dict[str, Any]] = []
    token: str | None = None
    pages = _pages(
        lambda start: app.client.results(args.batch_id, status=args.status, limit=limit, next_token=start),
        "results",
        token=args.next_token,
        every=args.all,
        batch_id=args.batch_id,
    )
    masks = MaskSaver(app, Path(args.masks)) if args.masks is not None else None
    for number, (page, results) in enumerate(pages):
        token = page.get("next_token") or None
        if masks is not None:
            masks.save(results)
        # JSON lines and CSV stream page by page; a table and a JSON document need every result first.
        if fmt == "jsonl":
            app.emit(output.results_jsonl(results))
        elif fmt == "csv":
            app.emit(output.results_csv(results, header=number == 0))
        else:
            collected += results
    if args.all:
        token = None  # every page was read (an empty last page may still carry a token)
    if fmt == "json":
        app.emit(output.to_json({"batch_id": args.batch_id, "results": collected, "next_token": token}))
    elif fmt == "table":
        app.emit(output.format_results(collected))
    if token and not args.all:
        app.say(f"more results: --all, or --next-token {token}")
    if masks is not None:
        app.say(f"{masks.saved} mask{'s' * (masks.saved != 1)} saved in {masks.folder}")
    return 0


class MaskSaver:
    """Saves each segmented image's mask as ``<folder>/<item>-<image file name without extension>.png``: from the
    entry's presigned ``mask.url``, or, without one, from the images bucket by ``mask.s3_key``."""

    def __init__(self, app: App, folder: Path) -> None:
        self.app = app
        self.folder = folder
        self.saved = 0
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CliError(f"cannot create {folder}: {exc.strerror or exc}") from exc

    @staticmethod
    def file_name(result: Mapping[str, Any]) -> str:
        stem = PurePosixPath(str(result.get("key") or "image")).stem or "image"
        return f"{result.get('item')}-{stem}.png"

    def save(self, results: list[dict[str, Any]]) -> None:
        for result in results:
            mask = result.get("mask")
            if result.get("status") != "predicted" or not isinstance(mask, dict):
                continue
            path = self.folder / self.file_name(result)
            if mask.get("url"):
                self.app.client.download(str(mask["url"]), path)
            elif mask.get("s3_key"):
                bucket = _images_bucket(self.app, f"downloading the mask {mask['s3_key']} (no url in the results)")
                _write(path, download_object(self.app.s3, bucket, str(mask["s3_key"])))
            else:
                raise CliError(f"item {result.get('item')}: its mask has neither a url nor an s3_key")
            self.saved += 1
            self.app.say(f"saved {path}")


def batch_errors(args: argparse.Namespace, app: App) -> int:
    """The error report: the summary by code, then each failed image (or the error files, with --download)."""
    if args.download is not None:
        return _download_errors(args, app)
    fmt = _format(args)
    limit = args.limit or (RESULTS_PAGE_WITH_ALL if args.all else None)
    collected: list[dict[str, Any]] = []
    report: dict[str, Any] = {}
    pages = _pages(
        lambda start: app.client.errors(args.batch_id, limit=limit, next_token=start),
        "errors",
        token=args.next_token,
        every=args.all,
        batch_id=args.batch_id,
    )
    for number, (page, entries) in enumerate(pages):
        if number == 0:
            report = page
            if fmt == "table":
                app.emit(output.format_error_summary(page))
        report["next_token"] = page.get("next_token") or None
        if fmt == "jsonl":
            app.emit(output.results_jsonl(entries))
        elif fmt == "csv":
            app.emit(output.errors_csv(entries, header=number == 0))
        else:
            collected += entries
    token = None if args.all else report.get("next_token")
    if fmt == "json":
        app.emit(output.to_json({**report, "errors": collected, "next_token": token}))
    elif fmt == "table" and collected:
        app.emit(output.format_errors(collected))
    if token:
        app.say(f"more failed images: --all, or --next-token {token}")
    return 0


def _download_errors(args: argparse.Namespace, app: App) -> int:
    """Save the error files the stack wrote when the batch ended (CSV and JSON lines) in the folder given."""
    report = app.client.errors(args.batch_id, limit=1)
    links = report.get("links") or {}
    if not links:
        if report.get("status") in TERMINAL:
            app.say(f"batch {args.batch_id} ended {report.get('status')} with no failed images: nothing to download")
            return 0
        raise CliError(
            f"batch {args.batch_id} is {report.get('status')}: its error files are written when it ends "
            f"(`modelrun batch watch {args.batch_id}`, then download again)"
        )
    folder = Path(args.download)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CliError(f"cannot create {folder}: {exc.strerror or exc}") from exc
    for kind in ("csv", "jsonl"):
        path = folder / f"{args.batch_id}-errors.{kind}"
        size = app.client.download(links[kind], path)
        app.say(f"saved {path} ({size} bytes)")
        app.emit(str(path))
    return 0


def batch_retry(args: argparse.Namespace, app: App) -> int:
    """POST /batches/{id}/retry: the failed and missing images again, as a new attempt of the same batch."""
    started = app.client.retry(args.batch_id)
    if not args.watch:
        app.emit(output.to_json(started) if args.json else output.format_retried(started))
        return 0
    if args.json:
        app.say(f"batch {args.batch_id}: attempt {started.get('attempt')} runs {started.get('retried')} images")
    else:
        app.emit(output.format_retried(started))
    return _watch(app, args.batch_id, timeout_s=args.timeout, as_json=args.json)


def batch_reconcile(args: argparse.Namespace, app: App) -> int:
    """POST /batches/{id}/reconcile: recount the batch from its outcomes (and close it if every image has one)."""
    job = app.client.reconcile(args.batch_id)
    app.emit(output.to_json(job) if args.json else output.format_job(job))
    return 0


# -- tenants ------------------------------------------------------------------------------------------------------
def tenants_add(args: argparse.Namespace, app: App) -> int:
    added = tenant_admin.add_tenant(tenant_admin.apigateway_client(app.target), app.target, args.name)
    app.emit(output.to_json(added) if args.json else f"API key ({added['tenant']}): {added['api_key']}")
    return 0


def tenants_list(args: argparse.Namespace, app: App) -> int:
    found = tenant_admin.list_tenants(tenant_admin.apigateway_client(app.target), app.target)
    lines = [f"{t['tenant']}\t{t['key_id']}" + ("" if t["enabled"] else "\t(disabled)") for t in found]
    app.emit(output.to_json(found) if args.json else "\n".join(lines))
    return 0


def tenants_remove(args: argparse.Namespace, app: App) -> int:
    removed = tenant_admin.remove_tenant(tenant_admin.apigateway_client(app.target), app.target, args.name)
    app.say(f"removed tenant {args.name} (API key {', '.join(removed)}); its batches and records expire as usual")
    return 0


COMMANDS: dict[str, Command] = {
    "predict": predict,
    "models": models,
    "batch submit": batch_submit,
    "batch status": batch_status,
    "batch wait": batch_wait,
    "batch watch": batch_watch,
    "batch results": batch_results,
    "batch errors": batch_errors,
    "batch retry": batch_retry,
    "batch reconcile": batch_reconcile,
    "tenants add": tenants_add,
    "tenants list": tenants_list,
    "tenants remove": tenants_remove,
    **datasets.COMMANDS,
}
