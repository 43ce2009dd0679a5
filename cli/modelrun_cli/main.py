"""``modelrun``: predict images, list models and run batch jobs on a modelrun stack, local or deployed."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

from modelrun_cli import datasets
from modelrun_cli.commands import COMMANDS, App
from modelrun_cli.config import StackReader, local_restart
from modelrun_cli.errors import ApiError, CliError
from modelrun_cli.output import size
from modelrun_cli.uploads import DIRECT_BODY_LIMIT
from modelrun_cli.waiting import DEFAULT_TIMEOUT_S

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
DESCRIPTION = "Predict images, list models and run batch jobs on a modelrun stack, local or deployed."

DISCOVERY = """\
where the stack is (the first that names one wins):
  1. --endpoint URL --api-key KEY        (+ --bucket NAME, --aws-endpoint URL for uploads)
  2. MODELRUN_ENDPOINT, MODELRUN_API_KEY  (+ MODELRUN_BUCKET, MODELRUN_AWS_ENDPOINT)
  3. --stack NAME or MODELRUN_STACK      a deployed stack's CloudFormation outputs (your AWS credentials)
  4. the running local stack              .modelrun/local.json, written by `make run`, looked for in the
                                          current folder and its parents, then in the modelrun repository
                                          (MODELRUN_LOCAL_STATE names another file)
  A flag beats its environment variable; --api-key, --bucket and --aws-endpoint also override 3 and 4.
  Live progress (watch, --watch) uses --ws-url, MODELRUN_WS_URL, or the WebSocketUrl of 3 or 4; without one,
  or when the WebSocket fails, it polls the REST API.

exit status: 0 done, 1 an API or usage error (or a FAILED / unfinished batch), 2 bad arguments."""

RESULT_STATUSES = ("predicted", "failed")


def bounded_int(low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be from {low} to {high}, got {value}")
        return value

    return parse


def positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0 seconds, got {text}")
    return value


def rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be from 0 to 1, got {text}")
    return value


def json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError as exc:
        example = '{"transient_rate": 0.1}'
        raise argparse.ArgumentTypeError(f"not JSON ({exc}): give an object like '{example}'") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("must be a JSON object like '{\"transient_rate\": 0.1}'")
    return value


def add_connection_options(parser: argparse.ArgumentParser, *, default: Any) -> None:
    group = parser.add_argument_group("connection (how they combine: see the end of this help)")
    group.add_argument("--endpoint", metavar="URL", default=default, help="the API's base URL (ApiUrl)")
    group.add_argument("--api-key", metavar="KEY", default=default, help="the API key (x-api-key)")
    group.add_argument(
        "--bucket", metavar="NAME", default=default, help="the images bucket, for uploads (batches, large images)"
    )
    group.add_argument(
        "--aws-endpoint", metavar="URL", default=default, help="an S3-compatible endpoint for uploads (local stack)"
    )
    group.add_argument("--stack", metavar="NAME", default=default, help="a deployed CloudFormation stack")
    group.add_argument(
        "--ws-url", metavar="URL", default=default, help="the WebSocket API for live progress (WebSocketUrl)"
    )


def build_parser() -> argparse.ArgumentParser:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(
        prog="modelrun", description=DESCRIPTION, epilog=DISCOVERY, formatter_class=formatter
    )
    add_connection_options(parser, default=None)
    # The same options after the command name; SUPPRESS keeps them from resetting what came before it.
    connection = argparse.ArgumentParser(add_help=False)
    add_connection_options(connection, default=argparse.SUPPRESS)
    common: dict[str, Any] = {"parents": [connection], "epilog": DISCOVERY, "formatter_class": formatter}
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    predict = commands.add_parser(
        "predict",
        help="predict one image file",
        description=(
            f"Predict one image file. It goes as the request body; a file over {size(DIRECT_BODY_LIMIT)} (more than "
            "API Gateway and Lambda let through once base64-encoded) is uploaded to the images bucket first and "
            "sent as image_s3."
        ),
        **common,
    )
    predict.add_argument("file", nargs="?", metavar="FILE", help="an image (PNG, JPEG, GIF, BMP, TIFF, WebP, DICOM)")
    predict.add_argument("--dataset", metavar="ID", help="with --image: an image of a dataset, by its ids")
    predict.add_argument("--image", metavar="IMAGE_ID", help="the image's id in --dataset")
    predict.add_argument("--model", help="model name (default: the stack's default model)")
    predict.add_argument("--version", help="model version (default: the latest)")
    predict.add_argument("--json", action="store_true", help="print the API's JSON answer")
    predict.add_argument(
        "--mask-out", metavar="PATH", help="segmentation: write the mask (indexed PNG, value = class index) at PATH"
    )

    models = commands.add_parser("models", help="list the models", description="List the models.", **common)
    models.add_argument("name", nargs="?", metavar="NAME", help="one model: every version of it")
    models.add_argument("--json", action="store_true", help="print the API's JSON answer")

    batch = commands.add_parser(
        "batch", help="batch jobs: submit, status, wait, watch, results, errors, retry", description="Batch jobs."
    )
    batch_commands = batch.add_subparsers(dest="batch_command", required=True, metavar="COMMAND")
    _add_batch_submit(batch_commands, common)
    _add_tenants(commands, common)
    datasets.add_commands(commands, common)

    status = batch_commands.add_parser("status", help="a batch's status and counts", **common)
    status.add_argument("batch_id", metavar="ID")
    status.add_argument("--json", action="store_true", help="print the job document as JSON")

    wait = batch_commands.add_parser("wait", help="wait until a batch ends", **common)
    wait.add_argument("batch_id", metavar="ID")
    _add_wait_options(wait)

    watch = batch_commands.add_parser(
        "watch",
        help="follow a batch live until it ends",
        description=(
            "Follow a batch until it ends: a live progress bar on stderr (percent, counts, rate, ETA, status) "
            "from the WebSocket API, or from polling when no WebSocket URL is known or it fails; then the summary."
        ),
        **common,
    )
    watch.add_argument("batch_id", metavar="ID")
    _add_wait_options(watch)

    results = batch_commands.add_parser("results", help="a batch's per-image outcomes", **common)
    results.add_argument("batch_id", metavar="ID")
    results.add_argument("--status", choices=RESULT_STATUSES, help="only predicted or only failed images")
    results.add_argument(
        "--limit", type=bounded_int(1, 1000), help="results per request (default 100; 1000 with --all)"
    )
    results.add_argument("--all", action="store_true", help="every page, following next_token")
    results.add_argument("--next-token", metavar="TOKEN", help="continue from a previous page")
    formats = results.add_mutually_exclusive_group()
    formats.add_argument("--json", action="store_true", help="one JSON document")
    formats.add_argument("--jsonl", action="store_true", help="one JSON object per line")
    formats.add_argument("--csv", action="store_true", help="CSV with a header row")
    results.add_argument(
        "--masks", metavar="DIR", help="segmentation: save each image's mask as DIR/<item>-<file name>.png"
    )

    errors = batch_commands.add_parser(
        "errors",
        help="a batch's error report: each failed image and why",
        description=(
            "The error report: how many images failed per code, then each failed image with its code, message, "
            "attempt and time. --download saves the CSV and JSON-lines files written when the batch ended."
        ),
        **common,
    )
    errors.add_argument("batch_id", metavar="ID")
    errors.add_argument("--limit", type=bounded_int(1, 1000), help="images per request (default 100; 1000 with --all)")
    errors.add_argument("--all", action="store_true", help="every page, following next_token")
    errors.add_argument("--next-token", metavar="TOKEN", help="continue from a previous page")
    error_formats = errors.add_mutually_exclusive_group()
    error_formats.add_argument("--json", action="store_true", help="one JSON document (summary, errors, links)")
    error_formats.add_argument("--jsonl", action="store_true", help="one JSON object per failed image")
    error_formats.add_argument("--csv", action="store_true", help="CSV with a header row (as the error file)")
    error_formats.add_argument(
        "--download", metavar="DIR", help="save <ID>-errors.csv and <ID>-errors.jsonl in DIR (an ended batch)"
    )

    retry = batch_commands.add_parser("retry", help="run a batch's failed and missing images again", **common)
    retry.add_argument("batch_id", metavar="ID")
    retry.add_argument("--watch", action="store_true", help="follow the new attempt live until it ends")
    _add_wait_options(retry, wait_flag=True, flag="--watch", answer="the retry answer")

    reconcile = batch_commands.add_parser(
        "reconcile", help="recount a batch from its outcomes (and close it if complete)", **common
    )
    reconcile.add_argument("batch_id", metavar="ID")
    reconcile.add_argument("--json", action="store_true", help="print the job document as JSON")
    return parser


def _add_tenants(commands: Any, common: dict[str, Any]) -> None:
    tenants = commands.add_parser(
        "tenants",
        help="manage tenants: one API key each (administrators, with AWS credentials)",
        description=(
            "Tenants of the stack: each is an API key in the stack's usage plan, tagged with its name, throttled on "
            "its own by the plan. Uses your AWS credentials (or the local stack's), never an API key."
        ),
        **common,
    )
    tenant_commands = tenants.add_subparsers(dest="tenants_command", required=True, metavar="COMMAND")
    tenant_add = tenant_commands.add_parser("add", help="create a tenant and print its new API key", **common)
    tenant_add.add_argument("name", help="1 to 40 lower-case letters, digits and inner hyphens")
    tenant_add.add_argument("--json", action="store_true", help="print the key as JSON")
    tenant_list = tenant_commands.add_parser("list", help="the tenants and their key ids", **common)
    tenant_list.add_argument("--json", action="store_true", help="print the list as JSON")
    tenant_remove = tenant_commands.add_parser("remove", help="delete a tenant's API key", **common)
    tenant_remove.add_argument("name")


def _add_batch_submit(batch_commands: Any, common: dict[str, Any]) -> None:
    submit = batch_commands.add_parser(
        "submit",
        help="upload images and start a batch",
        description=(
            "Start a batch. Local files and folders (searched recursively for .png .jpg .jpeg .gif .bmp .tif "
            ".tiff .webp .dcm .dicom, and DICOM files by their bytes whatever their name) are uploaded first, "
            "through the API (POST /uploads: into the API key's tenant's inputs/, with no AWS credentials), or with "
            "--prefix straight to S3 under that prefix (your AWS credentials; for a tenant's key a prefix in its "
            "space, tenants/<tenant>/...); s3://bucket/prefix predicts what is already in the images bucket; "
            "--dataset ID predicts a dataset's images."
        ),
        **common,
    )
    submit.add_argument("sources", nargs="*", metavar="DIR|FILE|s3://bucket/prefix")
    submit.add_argument("--dataset", metavar="ID", help="every image of this dataset (or those of --image)")
    submit.add_argument(
        "--image", action="append", metavar="IMAGE_ID", help="with --dataset: only this image (repeat for more)"
    )
    submit.add_argument("--model", help="model name (default: the stack's default model)")
    submit.add_argument("--version", help="model version (default: the latest)")
    submit.add_argument("--chunk-size", type=bounded_int(1, 500), metavar="N", help="images per chunk (1-500)")
    submit.add_argument("--max-concurrency", type=bounded_int(1, 1000), metavar="N", help="chunks at once (1-1000)")
    submit.add_argument("--idempotency-key", metavar="KEY", help="a retried submit with this key starts no new batch")
    submit.add_argument(
        "--prefix", metavar="P", help="upload straight to S3 under this key prefix instead of through the API"
    )
    following = submit.add_mutually_exclusive_group()
    following.add_argument("--wait", action="store_true", help="wait until the batch ends (progress lines on stderr)")
    following.add_argument("--watch", action="store_true", help="follow the batch live until it ends (a progress bar)")
    submit.add_argument(
        "--faults",
        type=json_object,
        metavar="JSON",
        help="injected failures to watch recovery, e.g. '{\"transient_rate\": 0.1}' (stacks that allow it)",
    )
    submit.add_argument("--transient-rate", type=rate, metavar="R", help="faults.transient_rate (0-1)")
    submit.add_argument("--timeout-rate", type=rate, metavar="R", help="faults.timeout_rate (0-1)")
    _add_wait_options(submit, wait_flag=True, flag="--wait/--watch", answer="the submit answer")


def _add_wait_options(
    parser: argparse.ArgumentParser, *, wait_flag: bool = False, flag: str = "--wait", answer: str = ""
) -> None:
    parser.add_argument(
        "--timeout",
        type=positive_seconds,
        default=DEFAULT_TIMEOUT_S,
        metavar="S",
        help=f"give up waiting after S seconds (default {DEFAULT_TIMEOUT_S:g})"
        + (f" with {flag}" if wait_flag else ""),
    )
    json_help = f"print JSON: {answer}, or with {flag} the final job document (nothing else on stdout)"
    parser.add_argument(
        "--json", action="store_true", help=json_help if wait_flag else "print the final job document as JSON"
    )


def run(
    argv: Sequence[str] | None,
    *,
    env: Mapping[str, str],
    cwd: Path,
    out: TextIO,
    err: TextIO,
    read_stack: StackReader | None = None,
) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        _check_sources(parser, args)
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    sub = {"batch": "batch_command", "tenants": "tenants_command", "datasets": "datasets_command"}.get(args.command)
    name = args.command + (f" {getattr(args, sub)}" if sub else "")
    app = App(args, env=env, cwd=cwd, out=out, err=err, read_stack=read_stack)
    try:
        return COMMANDS[name](args, app)
    except ApiError as error:
        lost = _lost_batch(error, app)
        print(f"modelrun: {lost}" if lost else f"modelrun: {error}{_hint(error, app)}", file=err)
    except CliError as error:
        print(f"modelrun: {error.message}", file=err)
    except KeyboardInterrupt:
        print("modelrun: interrupted (a submitted batch keeps running)", file=err)
        return EXIT_INTERRUPTED
    return EXIT_ERROR


def _check_sources(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """What to predict is a file (or files) or a dataset: a usage error when neither is given, or both."""
    if args.command == "predict" and bool(args.file) == bool(args.dataset or args.image):
        parser.error("predict: give a FILE, or --dataset ID with --image IMAGE_ID")
    if args.command == "batch" and args.batch_command == "submit" and bool(args.sources) == bool(args.dataset):
        parser.error("batch submit: give files, folders or an s3://bucket/prefix, or --dataset ID")


def _lost_batch(error: ApiError, app: App) -> str | None:
    """A batch the local stack no longer knows because it stopped or restarted since this command found it (it keeps
    its state in memory), said as that rather than as an id that might be wrong. None for any other error."""
    target = app.discovered
    if target is None or not target.local or error.code != "not_found" or app.args.command != "batch":
        return None
    what = local_restart(target)
    if what is None:
        return None
    batch = getattr(app.args, "batch_id", None)
    named = f"batch {batch}" if batch else "the batch"
    return (
        f"{what}, and it keeps its state in memory: {named} is gone with every other batch it held; submit it again"
        f" (the API answered {error.code}, HTTP {error.status})"
    )


def _hint(error: ApiError, app: App) -> str:
    """Where the failing setting came from, when the error is about the connection or the key."""
    target = app.discovered
    if target is None:
        return ""
    if error.status == 0:
        running = "; is the local stack still running? (`make run`)" if target.local else ""
        return f"\n  (endpoint {target.endpoint} from {target.source}{running})"
    if error.status == 403:
        return f"\n  (API key from {target.source})"
    if error.code == "not_found" and target.instance is not None and app.args.command == "batch":
        since = f" at {target.instance.started_at}" if target.instance.started_at else ""
        return f"\n  (the local stack keeps its state in memory: a batch submitted before it started{since} is gone)"
    return ""


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return run(argv, env=os.environ, cwd=Path.cwd(), out=sys.stdout, err=sys.stderr)
    except BrokenPipeError:
        # The reader went away (`modelrun batch results ID --all --csv | head`): stop quietly, and keep the
        # interpreter's final flush of stdout from complaining about the closed pipe.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
