"""Publish the web page (web/) to an S3 bucket, with a config.json made from a deployed stack's outputs.

    .venv/bin/python scripts/deploy_web.py --stack modelrun --bucket my-modelrun-site [--region eu-west-1]

config.json gets the stack's ``ApiUrl`` and, when the stack has one, its ``WebSocketUrl``; never an API key (the
page asks for it and keeps it in the browser tab's session storage). Every file is uploaded with its content type.
Host the bucket as an S3 website or behind CloudFront (web/README.md), and deploy the stack with
``WebOrigin=<the page's origin>`` so the API and the images bucket accept the page's requests (CORS).
"""

from __future__ import annotations

import argparse
import json
import mimetypes
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3

# The types the local runtime serves the page with (at /ui/), so the published page is served the same way.
from modelrun_local.webui import CONTENT_TYPES

WEB_ROOT = Path(__file__).resolve().parents[1] / "web"
# Not part of the page: its documentation, and a config.json someone left in web/ (the stack's is written instead).
SKIPPED = {"README.md", "config.json"}
# Small files that change with each deployment: browsers revalidate them instead of keeping a stale copy.
CACHE_CONTROL = "no-cache"


@dataclass(frozen=True)
class SiteFile:
    key: str
    body: bytes
    content_type: str


def stack_outputs(cloudformation: Any, stack: str) -> dict[str, str]:
    """The stack's outputs by key (OutputKey -> OutputValue)."""
    stacks = cloudformation.describe_stacks(StackName=stack)["Stacks"]
    return {output["OutputKey"]: output["OutputValue"] for output in stacks[0].get("Outputs", [])}


def page_config(outputs: Mapping[str, str]) -> dict[str, str]:
    """config.json for a deployed page: where the API is, and the WebSocket API if the stack has one; no key."""
    if not outputs.get("ApiUrl"):
        raise SystemExit("the stack has no ApiUrl output: is it a modelrun stack?")
    config = {"apiUrl": outputs["ApiUrl"]}
    if outputs.get("WebSocketUrl"):
        config["webSocketUrl"] = outputs["WebSocketUrl"]
    return config


def content_type(path: Path) -> str:
    return CONTENT_TYPES.get(path.suffix.lower()) or mimetypes.guess_type(path.name)[0] or "application/octet-stream"


def site_files(config: Mapping[str, str], root: Path = WEB_ROOT, prefix: str = "") -> list[SiteFile]:
    """Every file of the page under ``prefix``, and the generated config.json."""
    prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
    files = [
        SiteFile(prefix + path.relative_to(root).as_posix(), path.read_bytes(), content_type(path))
        for path in sorted(root.rglob("*"))
        if path.is_file() and path.name not in SKIPPED and "__pycache__" not in path.parts
    ]
    files.append(SiteFile(prefix + "config.json", json.dumps(config, indent=2).encode(), "application/json"))
    return files


def publish(s3: Any, bucket: str, files: list[SiteFile]) -> None:
    for file in files:
        s3.put_object(
            Bucket=bucket, Key=file.key, Body=file.body, ContentType=file.content_type, CacheControl=CACHE_CONTROL
        )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stack", required=True, help="the modelrun stack whose API the page calls")
    parser.add_argument("--bucket", required=True, help="the bucket that hosts the page (created beforehand)")
    parser.add_argument("--prefix", default="", help="a folder in the bucket for the page (default: its root)")
    parser.add_argument("--region", help="the stack's and the bucket's region (default: the AWS CLI's)")
    parser.add_argument("--dry-run", action="store_true", help="print what would be uploaded, upload nothing")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    session = boto3.session.Session(region_name=args.region)
    config = page_config(stack_outputs(session.client("cloudformation"), args.stack))
    files = site_files(config, prefix=args.prefix)
    for file in files:
        print(f"s3://{args.bucket}/{file.key}  ({file.content_type}, {len(file.body):,} bytes)")
    if args.dry_run:
        print("dry run: nothing uploaded")
        return 0
    publish(session.client("s3"), args.bucket, files)
    print(f"published {len(files)} files; config.json: {json.dumps(config)}")
    print("open it through your S3 website endpoint or CloudFront distribution (web/README.md)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
