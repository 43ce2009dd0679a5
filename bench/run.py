"""Latency benchmark of the predict function: cold start, warm handler vs bare ONNX Runtime, and local HTTP.

For each model (the demo ``digits`` and the ResNet-18-sized ``resnet``) it measures, on one fixed input image:

1. cold start, each in a fresh process: the handler module's import with its environment (library imports, the
   catalogue, the default model's load), and ``ModelRegistry.get`` alone;
2. warm in-process latency of ``lambda_handler`` on an API Gateway event, of ``Predictor.predict``, of bare
   decode+preprocess+``session.run``, and of bare ``session.run`` on the already preprocessed input;
3. HTTP latency through the local stack (LocalRuntime) on 127.0.0.1: sequential with keep-alive, then a few
   client threads at once for throughput.

Usage: python bench/run.py [--quick] [--models digits,resnet] [--out bench/results/latest.json]

Prints a Markdown table and the machine; writes every sample to the JSON file. See bench/README.md.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import importlib.metadata
import io
import json
import os
import platform
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import harness
import requests
from harness import summarise

WORKERS = harness.BENCH / "workers.py"
DEFAULT_OUT = harness.BENCH / "results" / "latest.json"
API_KEY = "k"
HTTP_TIMEOUT_S = 60
SERVER_START_TIMEOUT_S = 120
VERSIONED_DISTRIBUTIONS = ("onnxruntime", "numpy", "pillow", "aws-lambda-powertools", "boto3", "moto", "requests")
# Code whose uncommitted edits would make the recorded commit misdescribe what was measured.
MEASURED_PATHS = ("functions", "layers", "local", "template.yaml")


@dataclass(frozen=True)
class Settings:
    cold_runs: int
    warm_n: int
    warm_warmup: int
    http_n: int
    http_warmup: int
    concurrent_threads: int
    concurrent_requests: int

    @classmethod
    def full(cls) -> Settings:
        return cls(
            cold_runs=5,
            warm_n=300,
            warm_warmup=20,
            http_n=300,
            http_warmup=20,
            concurrent_threads=4,
            concurrent_requests=400,
        )

    @classmethod
    def quick(cls) -> Settings:
        return cls(
            cold_runs=2,
            warm_n=30,
            warm_warmup=5,
            http_n=30,
            http_warmup=5,
            concurrent_threads=4,
            concurrent_requests=40,
        )


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------------------------------------------
# Inputs
# ----------------------------------------------------------------------------------------------------------------


def ensure_resnet() -> None:
    """Build the benchmark model (gitignored, ~47 MB) if it is not there yet."""
    if (harness.MODEL_SOURCES["resnet"] / "1" / "model.onnx").is_file():
        return
    log("building bench/models/resnet with scripts/build_bench_model.py ...")
    subprocess.run([sys.executable, str(harness.RESNET_BUILDER)], check=True, stdout=sys.stderr)


def resnet_png() -> bytes:
    """A deterministic 224x224 RGB noise image (numpy seed 0), PNG-encoded."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(harness.RESNET_IMAGE_SEED)
    size = harness.RESNET_IMAGE_SIZE
    pixels = rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode="RGB").save(buffer, format="PNG")
    return buffer.getvalue()


def prepare_workspace(root: Path, models: list[str]) -> tuple[Path, dict[str, Path]]:
    """A models folder with the selected models (digits always: it is the stack's default) and one image each."""
    models_dir = root / "models"
    for name in sorted({"digits", *models}):
        shutil.copytree(harness.MODEL_SOURCES[name], models_dir / name)
    images = {"digits": harness.DIGITS_SAMPLE}
    if "resnet" in models:
        images["resnet"] = root / "resnet-224-seed0.png"
        images["resnet"].write_bytes(resnet_png())
    return models_dir, {name: images[name] for name in models}


def describe_image(path: Path) -> dict[str, Any]:
    data = path.read_bytes()
    shown = path.relative_to(harness.REPO) if path.is_relative_to(harness.REPO) else path.name
    return {"file": str(shown), "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


# ----------------------------------------------------------------------------------------------------------------
# Child processes
# ----------------------------------------------------------------------------------------------------------------


def run_worker(kind: str, env: dict[str, str], scratch: Path, *options: str) -> dict[str, Any]:
    """Run one ``workers.py`` measurement in a fresh interpreter and return its JSON result.

    The child's stdout (the handler's structured logs) goes to /dev/null, as cheap a sink as Lambda's log pipe.
    """
    out = scratch / f"{kind}-{time.monotonic_ns()}.json"
    command = [sys.executable, str(WORKERS), kind, "--out", str(out), *options]
    finished = subprocess.run(
        command, env=env, cwd=harness.REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, check=False
    )
    if finished.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({finished.returncode}):\n{finished.stderr[-4000:]}")
    result: dict[str, Any] = json.loads(out.read_text())
    return result


def measure_cold(model: str, models_dir: Path, scratch: Path, runs: int) -> dict[str, Any]:
    env = harness.handler_environment(models_dir, default_model=model)
    imports: list[dict[str, Any]] = []
    loads: list[dict[str, Any]] = []
    for _ in range(runs):
        imports.append(run_worker("cold-import", env, scratch, "--model", model))
        loads.append(run_worker("cold-load", env, scratch, "--model", model, "--models-dir", str(models_dir)))
    return {
        "cold_import_and_load": summarise([run["import_and_load_ms"] for run in imports]),
        "cold_imports_part": summarise([run["imports_ms"] for run in imports]),
        "cold_module_body_part": summarise([run["module_body_ms"] for run in imports]),
        "cold_model_load_in_body": summarise([run["model_load_in_body_ms"] for run in imports]),
        "cold_model_load": summarise([run["get_ms"] for run in loads]),
        "intra_op_threads": loads[0]["intra_op_threads"],
    }


def paired_difference(first: list[float], second: list[float]) -> list[float]:
    return [a - b for a, b in zip(first, second, strict=True)]


def measure_warm(model: str, models_dir: Path, image: Path, scratch: Path, settings: Settings) -> dict[str, Any]:
    env = harness.handler_environment(models_dir, default_model=model)
    options = ("--model", model, "--image", str(image), "--n", str(settings.warm_n))
    raw = run_worker("warm", env, scratch, *options, "--warmup", str(settings.warm_warmup))
    samples = raw["samples_ms"]
    return {
        "label": raw["label"],
        "warm_handler": summarise(samples["handler"]),
        "warm_predict": summarise(samples["predict"]),
        "warm_pipeline": summarise(samples["pipeline"]),
        "warm_session": summarise(samples["session"]),
        "warm_handler_minus_pipeline": summarise(paired_difference(samples["handler"], samples["pipeline"])),
        "warm_handler_minus_predict": summarise(paired_difference(samples["handler"], samples["predict"])),
        "warm_predict_minus_pipeline": summarise(paired_difference(samples["predict"], samples["pipeline"])),
    }


@contextmanager
def local_stack(models_dir: Path, scratch: Path, report: dict[str, Any]) -> Iterator[str]:
    """The local stack in its own process (server and client must not share a GIL); yields its URL."""
    ready = scratch / "serve-ready.json"
    out = scratch / "serve-result.json"
    env = harness.handler_environment(models_dir, default_model="digits")
    command = [sys.executable, str(WORKERS), "serve", "--models-dir", str(models_dir)]
    server = subprocess.Popen(
        [*command, "--ready", str(ready), "--out", str(out)],
        env=env,
        cwd=harness.REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while not ready.is_file():
            if server.poll() is not None:
                raise RuntimeError(f"the local stack exited ({server.returncode}):\n{server.communicate()[1][-4000:]}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"the local stack did not start within {SERVER_START_TIMEOUT_S} s")
            time.sleep(0.05)
        yield json.loads(ready.read_text())["url"]
    finally:
        _, stderr = server.communicate(input="", timeout=60)
        if server.returncode == 0 and out.is_file():
            report.update(json.loads(out.read_text()))
        elif server.returncode != 0:
            log(f"the local stack exited with {server.returncode}:\n{stderr[-2000:]}")


def client() -> requests.Session:
    session = requests.Session()
    session.headers.update({"x-api-key": API_KEY, "Content-Type": "image/png"})
    return session


def post_prediction(session: requests.Session, url: str, model: str, image: bytes) -> float:
    """One POST /predictions; returns its latency in ms, or raises if the answer is not a 200."""
    started = time.perf_counter_ns()
    response = session.post(f"{url}/predictions", params={"model": model}, data=image, timeout=HTTP_TIMEOUT_S)
    elapsed = (time.perf_counter_ns() - started) / 1e6
    if response.status_code != 200:
        raise RuntimeError(f"POST /predictions?model={model} answered {response.status_code}: {response.text[:500]}")
    return elapsed


def measure_http_sequential(url: str, model: str, image: bytes, settings: Settings) -> dict[str, Any]:
    session = client()
    for _ in range(settings.http_warmup):
        post_prediction(session, url, model, image)
    started = time.perf_counter()
    samples = [post_prediction(session, url, model, image) for _ in range(settings.http_n)]
    wall = time.perf_counter() - started
    return {**summarise(samples), "wall_s": round(wall, 3), "req_per_s": round(len(samples) / wall, 2)}


def measure_http_concurrent(url: str, model: str, image: bytes, settings: Settings) -> dict[str, Any]:
    """``concurrent_threads`` clients, each with its own keep-alive session, share ``concurrent_requests``.

    Warm-up first sends synchronised bursts, so the extra execution environments the local stack opens for
    overlapping requests have their cold start (and model load) before the clock starts.
    """
    threads = settings.concurrent_threads
    sessions = [client() for _ in range(threads)]
    work: queue.SimpleQueue[int] = queue.SimpleQueue()
    latencies: list[list[float]] = [[] for _ in range(threads)]
    errors: list[BaseException] = []
    barrier = threading.Barrier(threads)
    spans: list[tuple[float, float]] = [(0.0, 0.0)] * threads

    def warm_up(index: int) -> None:
        for _ in range(3):
            barrier.wait()
            post_prediction(sessions[index], url, model, image)
        for _ in range(settings.http_warmup):
            post_prediction(sessions[index], url, model, image)

    def drain(index: int) -> None:
        barrier.wait()
        started = time.perf_counter()
        try:
            while True:
                try:
                    work.get_nowait()
                except queue.Empty:
                    break
                latencies[index].append(post_prediction(sessions[index], url, model, image))
        except BaseException as exc:
            errors.append(exc)
        spans[index] = (started, time.perf_counter())

    run_threads(warm_up, threads)
    for number in range(settings.concurrent_requests):
        work.put(number)
    run_threads(drain, threads)
    if errors:
        raise RuntimeError(f"{len(errors)} client thread(s) failed; first: {errors[0]}")
    samples = [value for per_thread in latencies for value in per_thread]
    wall = max(end for _, end in spans) - min(start for start, _ in spans)
    return {
        **summarise(samples),
        "threads": threads,
        "wall_s": round(wall, 3),
        "req_per_s": round(len(samples) / wall, 2),
    }


def run_threads(target: Callable[[int], None], count: int) -> None:
    workers = [threading.Thread(target=target, args=(index,), name=f"bench-client-{index}") for index in range(count)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()


# ----------------------------------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------------------------------

# (key in a model's results, label, statistics shown); "-" marks a statistic that means nothing for that row.
ROWS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("cold_import_and_load", "cold start: handler import + default model load", ("p50_ms", "max_ms")),
    ("cold_imports_part", "cold start: of which library + modelrun imports", ("p50_ms", "max_ms")),
    ("cold_model_load", "cold start: model load alone (ModelRegistry.get)", ("p50_ms", "max_ms")),
    ("warm_handler", "warm: lambda_handler (API Gateway event)", ("p50_ms", "p90_ms", "p99_ms", "mean_ms", "max_ms")),
    ("warm_predict", "warm: Predictor.predict (no event)", ("p50_ms", "p90_ms", "p99_ms", "mean_ms", "max_ms")),
    ("warm_pipeline", "warm: bare decode+preprocess+session.run", ("p50_ms", "p90_ms", "p99_ms", "mean_ms", "max_ms")),
    ("warm_session", "warm: bare session.run (preprocessed)", ("p50_ms", "p90_ms", "p99_ms", "mean_ms", "max_ms")),
    ("warm_handler_minus_pipeline", "warm: handler overhead (paired handler - bare)", ("p50_ms", "p90_ms", "mean_ms")),
    ("http_sequential", "HTTP local stack, sequential keep-alive", ("p50_ms", "p90_ms", "p99_ms", "mean_ms", "max_ms")),
    ("http_concurrent", "HTTP local stack, 4 client threads", ("p50_ms", "p90_ms", "p99_ms", "mean_ms", "max_ms")),
)
COLUMNS = ("p50_ms", "p90_ms", "p99_ms", "mean_ms", "max_ms")
HEADERS = (
    "model",
    "measurement",
    "N",
    "p50 (ms)",
    "p90 (ms)",
    "p99 (ms)",
    "mean (ms)",
    "max (ms)",
    "throughput (req/s)",
)


def number(value: float) -> str:
    if value >= 100:
        return f"{value:.1f}"
    return f"{value:.3f}" if abs(value) < 1 else f"{value:.2f}"


def table(results: dict[str, dict[str, Any]]) -> str:
    lines = ["| " + " | ".join(HEADERS) + " |", "|" + "|".join(["---"] * 2 + ["---:"] * (len(HEADERS) - 2)) + "|"]
    for model, figures in results.items():
        for key, label, shown in ROWS:
            if key not in figures:
                continue
            stats = figures[key]
            cells = [number(stats[column]) if column in shown else "-" for column in COLUMNS]
            throughput = f"{stats['req_per_s']:.1f}" if "req_per_s" in stats else "-"
            lines.append("| " + " | ".join([model, label, str(stats["n"]), *cells, throughput]) + " |")
    return "\n".join(lines)


def git(*args: str) -> str:
    finished = subprocess.run(["git", *args], cwd=harness.REPO, capture_output=True, text=True, check=False)
    return finished.stdout.strip() if finished.returncode == 0 else ""


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in VERSIONED_DISTRIBUTIONS:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


# ----------------------------------------------------------------------------------------------------------------
# Main
# ----------------------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small N: a smoke run in well under a minute")
    parser.add_argument("--models", default="digits,resnet", help="comma-separated: digits, resnet")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON result file")
    args = parser.parse_args(argv)
    args.models = [name.strip() for name in args.models.split(",") if name.strip()]
    unknown = sorted(set(args.models) - set(harness.MODEL_SOURCES))
    if unknown or not args.models:
        parser.error(f"--models takes {', '.join(harness.MODEL_SOURCES)}; got {args.models}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    settings = Settings.quick() if args.quick else Settings.full()
    began = time.perf_counter()
    info = harness.machine()
    if "resnet" in args.models:
        ensure_resnet()
    results: dict[str, dict[str, Any]] = {model: {} for model in args.models}
    stack_report: dict[str, Any] = {}
    # 1-minute load average after each phase: the bench keeps about one core busy, so well above 1 means competition.
    load_1min: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="modelrun-bench-") as tmp:
        scratch = Path(tmp)
        models_dir, images = prepare_workspace(scratch, args.models)
        inputs = {model: describe_image(path) for model, path in images.items()}
        for model in args.models:
            log(f"{model}: cold start, {settings.cold_runs} fresh processes ...")
            results[model].update(measure_cold(model, models_dir, scratch, settings.cold_runs))
            load_1min[f"{model} cold"] = os.getloadavg()[0]
            log(f"{model}: warm in-process, {settings.warm_n} rounds ...")
            results[model].update(measure_warm(model, models_dir, images[model], scratch, settings))
            load_1min[f"{model} warm"] = os.getloadavg()[0]
        log("local stack: starting ...")
        with local_stack(models_dir, scratch, stack_report) as url:
            for model in args.models:
                image = images[model].read_bytes()
                log(f"{model}: HTTP sequential, {settings.http_n} requests ...")
                results[model]["http_sequential"] = measure_http_sequential(url, model, image, settings)
                log(f"{model}: HTTP concurrent, {settings.concurrent_requests} requests ...")
                results[model]["http_concurrent"] = measure_http_concurrent(url, model, image, settings)
                load_1min[f"{model} http"] = os.getloadavg()[0]
    info["loadavg_end"] = list(os.getloadavg())
    report = {
        "timestamp": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "git_commit": git("rev-parse", "--short", "HEAD"),
        "uncommitted_changes_in_measured_code": git("status", "--porcelain", "--", *MEASURED_PATHS).splitlines(),
        "command": " ".join(["python", "bench/run.py", *(argv if argv is not None else sys.argv[1:])]),
        "quick": args.quick,
        "machine": info,
        "versions": versions(),
        "settings": {**asdict(settings), "memory_mb": harness.MEMORY_MB},
        "inputs": inputs,
        "local_stack": stack_report,
        "load_1min_after_phase": load_1min,
        "results": results,
        "duration_s": round(time.perf_counter() - began, 1),
    }
    write_report(args.out, report)
    print(table(results))
    print()
    print(f"Machine: {harness.machine_line(info)}")
    print(f"Versions: {', '.join(f'{name} {version}' for name, version in report['versions'].items())}")
    print(f"Commit {report['git_commit']}, {report['timestamp']}, {report['duration_s']} s; JSON: {args.out}")
    return 0


def write_report(path: Path, report: dict[str, Any]) -> None:
    """Write through a .tmp file (gitignored) so an interrupted run never leaves half a result."""
    partial = path.with_name(path.name + ".tmp")
    harness.write_json(partial, report)
    partial.replace(path)


if __name__ == "__main__":
    sys.exit(main())
