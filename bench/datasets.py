"""Dataset registration benchmark: the memory and time of registering a 100,000-key prefix (and list file) with the
worker's own code, ``Registrations.handle``, on moto in-process.

Each row runs in a fresh process: moto's S3 with the objects (stored straight into moto's backend: PutObject through
boto3 would take minutes), the DatasetsTable as template.yaml makes it, the DatasetQueue; then POST /datasets' own
``Registrations.submit`` and the worker's ``handle`` for every message on the queue until the dataset is READY. What is
measured is the worker: the kernel's peak RSS mark is reset just before it (``/proc/self/clear_refs``) and read after
(VmHWM), and a second, identical registration runs under tracemalloc for Python's own allocations.

Image entries written to moto's DynamoDB stay in this process (about what a real table holds for them), so most rows
count them and drop them instead ("entries discarded": the worker's batch writer hands each batch of 25 to a sink);
one row stores them, for the whole cost in moto.

Usage: python bench/datasets.py [--quick] [--out bench/results/datasets-latest.json]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import harness

REPO = Path(__file__).resolve().parents[1]
THIS_FILE = Path(__file__).resolve()
DEFAULT_OUT = REPO / "bench" / "results" / "datasets-latest.json"
BUCKET = "bench-datasets"
PREFIX = "tenants/bench/scans/"
MANIFEST = "tenants/bench/lists/scans.jsonl"
TENANT = "bench"
MB = 1024 * 1024
STEP_KEYS = 25_000


class Sink:
    """A batch writer that counts what it is given and keeps none of it."""

    def __init__(self, table: DiscardingTable) -> None:
        self.table = table

    def __enter__(self) -> Sink:
        return self

    def __exit__(self, *exc: Any) -> None:
        return None

    def put_item(self, Item: dict[str, Any]) -> None:  # boto3 names the argument Item
        self.table.entries += 1


class DiscardingTable:
    """The DatasetsTable with image entries counted instead of stored (headers and the queue are real moto)."""

    def __init__(self, table: Any) -> None:
        self._table = table
        self.entries = 0  # the keys are distinct: one entry each

    def __getattr__(self, name: str) -> Any:
        return getattr(self._table, name)

    def batch_writer(self, **_: Any) -> Sink:
        return Sink(self)

    def query(self, **request: Any) -> Any:
        if request.get("Select") == "COUNT":
            return {"Count": self.entries}
        return self._table.query(**request)


def create_objects(s3: Any, count: int) -> float:
    """``count`` empty objects under PREFIX, put straight into moto's S3 backend; seconds taken."""
    from moto.core.models import DEFAULT_ACCOUNT_ID
    from moto.s3.models import s3_backends

    started = time.perf_counter()
    s3.put_object(Bucket=BUCKET, Key=f"{PREFIX}0000000.png", Body=b"")
    backend = s3_backends[DEFAULT_ACCOUNT_ID]["aws"]
    for index in range(1, count):
        backend.put_object(BUCKET, f"{PREFIX}{index:07d}.png", b"")
    return time.perf_counter() - started


def worker(spec: dict[str, Any]) -> dict[str, Any]:
    """One row, in this (fresh) process."""
    import boto3
    from moto import mock_aws

    sys.path.insert(0, str(REPO))
    from modelrun.datasets.registration import Registrations
    from modelrun.datasets.requests import DatasetRequest
    from modelrun.datasets.store import DatasetStore
    from modelrun.tenants import Tenant
    from tests.batchfixtures import create_table

    result: dict[str, Any] = dict(spec)
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket=BUCKET)
        sqs = boto3.client("sqs", region_name="us-east-1")
        queue_url = sqs.create_queue(QueueName="bench-datasets")["QueueUrl"]
        table = create_table(boto3.resource("dynamodb", region_name="us-east-1"), "DatasetsTable", "bench-datasets")
        if spec["source"] == "baseline":
            result.update(rss_mb=round(harness.rss_mb(), 1), peak_rss_mb=round(harness.peak_rss_mb(), 1))
            return result
        keys = spec["keys"]
        result["create_objects_s"] = round(create_objects(s3, keys), 1)
        if spec["source"] == "manifest":
            lines = "".join(json.dumps(f"{PREFIX}{index:07d}.png") + "\n" for index in range(keys)).encode()
            s3.put_object(Bucket=BUCKET, Key=MANIFEST, Body=lines)
            result["manifest_bytes"] = len(lines)
        used = table if spec["entries"] == "stored" else DiscardingTable(table)

        def register(name: str) -> dict[str, Any]:
            registrations = Registrations(DatasetStore(used), s3, BUCKET, sqs, queue_url)
            if spec.get("step_keys"):
                registrations.margin_ms = 1
            source = {"s3_prefix": PREFIX} if spec["source"] == "prefix" else {"manifest": MANIFEST}
            header, _ = registrations.for_tenant(Tenant(TENANT)).submit(DatasetRequest.parse({"name": name, **source}))
            steps = 0
            while True:
                messages = sqs.receive_message(QueueUrl=queue_url, AttributeNames=["All"]).get("Messages", [])
                if not messages:
                    break
                for message in messages:
                    if spec.get("step_keys"):  # each step's invocation has time for step_keys keys
                        registrations.remaining_ms = _every_n_keys(spec["step_keys"], registrations.check_every)
                    registrations.handle(json.loads(message["Body"]), receive_count=1)
                    sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
                    steps += 1
            ready = DatasetStore(used).for_tenant(Tenant(TENANT)).get(header["dataset_id"])
            return {"status": ready["status"], "images": ready["images"], "steps": steps}

        gc.collect()
        result["rss_mb_before"] = round(harness.rss_mb(), 1)
        result["peak_reset"] = harness.reset_peak_rss()
        started = time.perf_counter()
        result.update(register("bench"))
        result["duration_s"] = round(time.perf_counter() - started, 1)
        result["peak_rss_mb_during"] = round(harness.peak_rss_mb(), 1)
        result["peak_minus_before_mb"] = round(result["peak_rss_mb_during"] - result["rss_mb_before"], 1)
        result["maxrss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
        if spec["entries"] != "stored":
            used.entries = 0  # type: ignore[union-attr]
        gc.collect()
        tracemalloc.start()
        register("bench traced")
        result["tracemalloc_peak_mb"] = round(tracemalloc.get_traced_memory()[1] / MB, 2)
        tracemalloc.stop()
    return result


def _every_n_keys(keys: int, check_every: int) -> Callable[[], int]:
    """An invocation clock that runs out after ``keys`` keys (asked every ``check_every`` keys)."""
    calls = 0

    def remaining() -> int:
        nonlocal calls
        calls += 1
        return 900_000 if calls * check_every < keys else 0

    return remaining


def run_row(spec: dict[str, Any], scratch: Path) -> dict[str, Any]:
    spec_file = scratch / f"spec-{time.monotonic_ns()}.json"
    result_file = spec_file.with_name(spec_file.name.replace("spec", "result"))
    spec_file.write_text(json.dumps(spec))
    own = [str(REPO / folder) for folder in ("layers/modelrun/python", "local", "cli")]
    env = {
        **{key: value for key, value in os.environ.items() if not key.startswith(("AWS_", "POWERTOOLS_"))},
        "PYTHONPATH": os.pathsep.join(own),
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "POWERTOOLS_LOG_LEVEL": "WARNING",
    }
    command = [sys.executable, str(THIS_FILE), "--worker", str(spec_file), "--result", str(result_file)]
    subprocess.run(command, env=env, cwd=REPO, stdout=subprocess.DEVNULL, check=True)
    row: dict[str, Any] = json.loads(result_file.read_text())
    return row


def rows(keys: int) -> list[dict[str, Any]]:
    small = max(keys // 5, 1000)
    return [
        {"source": "baseline", "entries": "-", "keys": 0},
        {"source": "prefix", "entries": "discarded", "keys": small},
        {"source": "prefix", "entries": "discarded", "keys": keys},
        {"source": "prefix", "entries": "discarded", "keys": keys, "step_keys": STEP_KEYS if keys > STEP_KEYS else 0},
        {"source": "manifest", "entries": "discarded", "keys": keys},
        {"source": "prefix", "entries": "stored", "keys": keys},
    ]


def table(results: list[dict[str, Any]]) -> str:
    head = (
        "| source | entries | keys | steps | images | objects made (s) | registration (s) | RSS before (MB) "
        "| peak RSS during (MB) | peak - before (MB) | tracemalloc peak (MB) |"
    )
    lines = [head, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for row in results:
        if row["source"] == "baseline":
            lines.append(
                f"| baseline: imports, moto, table, queue | - | - | - | - | - | - | {row['rss_mb']} | - | - | - |"
            )
            continue
        lines.append(
            f"| {row['source']} | {row['entries']} | {row['keys']:,} | {row['steps']} | {row['images']:,} | "
            f"{row['create_objects_s']} | {row['duration_s']} | {row['rss_mb_before']} | {row['peak_rss_mb_during']} | "
            f"{row['peak_minus_before_mb']} | {row['tracemalloc_peak_mb']} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10,000 keys instead of 100,000")
    parser.add_argument("--keys", type=int, help="keys of the large rows (default 100,000)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        args.result.write_text(json.dumps(worker(json.loads(args.worker.read_text()))))
        return 0
    keys = args.keys or (10_000 if args.quick else 100_000)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout
    began = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    results = []
    with tempfile.TemporaryDirectory(prefix="modelrun-bench-datasets-") as scratch:
        for spec in rows(keys):
            print(f"{spec} ...", file=sys.stderr, flush=True)
            results.append(run_row(spec, Path(scratch)))
            print(f"  {results[-1]}", file=sys.stderr, flush=True)
    document = {
        "began": began,
        "commit": commit.strip(),
        "load_average": os.getloadavg(),
        "python": sys.version.split()[0],
        "rows": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(document, indent=2) + "\n")
    print(table(results))
    print(f"\n{began}, commit {commit.strip()}, load average {os.getloadavg()}; JSON: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
