"""What the benchmark's parent and its child processes share: paths, the handler's environment, events, statistics.

Standard library only at import time: the cold-start child imports this module before it starts its clock, and
must not have numpy, boto3 or ONNX Runtime loaded by then.
"""

from __future__ import annotations

import base64
import json
import math
import os
import platform
import re
import resource
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

REPO: Final = Path(__file__).resolve().parents[1]
BENCH: Final = REPO / "bench"
HANDLER_FILE: Final = REPO / "functions" / "predict" / "app.py"
DIGITS_SAMPLE: Final = REPO / "samples" / "digits" / "digit-3-0045.png"
BENCH_MODELS: Final = BENCH / "models"
RESNET_BUILDER: Final = REPO / "scripts" / "build_bench_model.py"

MODEL_SOURCES: Final = {"digits": REPO / "models" / "digits", "resnet": BENCH_MODELS / "resnet"}

# One full vCPU, as template.yaml's Globals give every function; the registry then runs 1 intra-op thread.
MEMORY_MB: Final = 1769
REGION: Final = "us-east-1"
FUNCTION_NAME: Final = "modelrun-PredictFunction-bench"
RESNET_IMAGE_SIZE: Final = 224
RESNET_IMAGE_SEED: Final = 0


def handler_environment(models_dir: Path, default_model: str) -> dict[str, str]:
    """The process environment for a child that imports the predict handler as Lambda would.

    The caller's own AWS and Powertools settings are dropped so nothing on this machine (a profile, a real
    region, a log level) leaks into the figures; credentials are fake and no config file is read.
    """
    keep = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("AWS_", "POWERTOOLS_", "MODEL_", "MAX_IMAGE_", "DEFAULT_MODEL", "IMAGES_BUCKET"))
    }
    return {
        **keep,
        "MODEL_ROOT": str(models_dir),
        "DEFAULT_MODEL": default_model,
        "IMAGES_BUCKET": "bench-images",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_REGION": REGION,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_SAM_LOCAL": "true",
        "AWS_LAMBDA_FUNCTION_NAME": FUNCTION_NAME,
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(MEMORY_MB),
        "POWERTOOLS_SERVICE_NAME": "modelrun",
        "POWERTOOLS_METRICS_NAMESPACE": "modelrun",
        "POWERTOOLS_METRICS_DISABLED": "true",
        "POWERTOOLS_LOG_LEVEL": "INFO",  # template.yaml's LogLevel default
    }


def prediction_event(image: bytes, model: str) -> dict[str, Any]:
    """An API Gateway REST proxy event for ``POST /v1/predictions?model=<model>`` with a raw PNG body.

    Shaped like what API Gateway sends for a binary media type: the body base64-encoded, ``isBase64Encoded``
    true, single- and multi-value headers and query parameters, a request context with identity.
    """
    request_id = str(uuid.uuid4())
    now = time.time()
    headers = {
        "Accept": "application/json",
        "Content-Type": "image/png",
        "Host": "bench.execute-api.us-east-1.amazonaws.com",
        "User-Agent": "modelrun-bench",
        "x-api-key": "k",
    }
    return {
        "resource": "/predictions",
        "path": "/predictions",
        "httpMethod": "POST",
        "headers": headers,
        "multiValueHeaders": {key: [value] for key, value in headers.items()},
        "queryStringParameters": {"model": model},
        "multiValueQueryStringParameters": {"model": [model]},
        "pathParameters": None,
        "stageVariables": None,
        "requestContext": {
            "resourceId": "bench",
            "resourcePath": "/predictions",
            "httpMethod": "POST",
            "path": "/v1/predictions",
            "stage": "v1",
            "requestId": request_id,
            "extendedRequestId": request_id,
            "requestTime": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now)),
            "requestTimeEpoch": int(now * 1000),
            "accountId": "123456789012",
            "apiId": "bench",
            "domainName": "bench.execute-api.us-east-1.amazonaws.com",
            "protocol": "HTTP/1.1",
            "identity": {"sourceIp": "127.0.0.1", "apiKey": "k", "userAgent": "modelrun-bench"},
        },
        "body": base64.b64encode(image).decode("ascii"),
        "isBase64Encoded": True,
    }


@dataclass
class BenchContext:
    """The Lambda context attributes Powertools reads (``inject_lambda_context``) and handlers may call."""

    function_name: str = FUNCTION_NAME
    memory_limit_in_mb: int = MEMORY_MB
    invoked_function_arn: str = f"arn:aws:lambda:{REGION}:123456789012:function:{FUNCTION_NAME}"
    aws_request_id: str = "00000000-0000-4000-8000-000000000000"
    function_version: str = "$LATEST"
    log_group_name: str = f"/aws/lambda/{FUNCTION_NAME}"
    log_stream_name: str = "bench"
    timeout_s: float = 29.0

    def get_remaining_time_in_millis(self) -> int:
        return int(self.timeout_s * 1000)


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) with linear interpolation between order statistics (numpy's default)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summarise(samples_ms: Sequence[float]) -> dict[str, Any]:
    """Order statistics of a list of durations in milliseconds, plus the raw samples (rounded to 1 us)."""
    return {
        "n": len(samples_ms),
        "p50_ms": round(percentile(samples_ms, 50), 3),
        "p90_ms": round(percentile(samples_ms, 90), 3),
        "p99_ms": round(percentile(samples_ms, 99), 3),
        "mean_ms": round(sum(samples_ms) / len(samples_ms), 3) if samples_ms else math.nan,
        "min_ms": round(min(samples_ms), 3) if samples_ms else math.nan,
        "max_ms": round(max(samples_ms), 3) if samples_ms else math.nan,
        "samples_ms": [round(value, 3) for value in samples_ms],
    }


def machine() -> dict[str, Any]:
    """CPU model, core counts, memory and load: enough to tell whether two result files are comparable."""
    cpu_model = platform.processor() or "unknown"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    mem_total_mb = None
    meminfo = Path("/proc/meminfo")
    if meminfo.is_file():
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_total_mb = int(line.split()[1]) // 1024
                break
    return {
        "cpu_model": cpu_model,
        "logical_cpus": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "mem_total_mb": mem_total_mb,
        "platform": platform.platform(),
        "loadavg": list(os.getloadavg()),
    }


def machine_line(info: Mapping[str, Any]) -> str:
    line = (
        f"{info['cpu_model']}, {info['logical_cpus']} logical CPUs ({info['usable_cpus']} usable), "
        f"{info['mem_total_mb']} MB RAM, {info['platform']}; load average at start {_loads(info['loadavg'])}"
    )
    if "loadavg_end" in info:
        line += f", at end {_loads(info['loadavg_end'])}"
    return line


def _loads(values: Sequence[float]) -> str:
    return " ".join(f"{value:.2f}" for value in values)


def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")


# -- memory of this process (Linux /proc) ----------------------------------------------------------------------
MB: Final = 1024 * 1024


def rss_mb() -> float:
    """Current resident set size of this process."""
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / MB


def peak_rss_mb() -> float:
    """Peak resident set size since the process started (or since :func:`reset_peak_rss`), from VmHWM."""
    found = re.search(r"^VmHWM:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.MULTILINE)
    return int(found.group(1)) / 1024 if found else float("nan")


def maxrss_mb() -> float:
    """``getrusage`` peak RSS (ru_maxrss, KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def reset_peak_rss() -> bool:
    """Reset the kernel's peak RSS mark (Linux: write 5 to /proc/self/clear_refs); False where not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True
