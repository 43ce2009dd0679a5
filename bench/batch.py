"""Batch prediction benchmark: throughput on the local stack against a bare ONNX Runtime loop, and the memory a
large batch costs on the submit path and in the local Step Functions interpreter.

1. Throughput: the local stack (LocalRuntime, in its own process) predicts a batch submitted with ``POST /batches``;
   images/s from the client's submit to the poll that sees a terminal status, and from the job's own
   ``timings.started_at``/``finished_at``. Every (chunk_size, max_concurrency) pair, repeated, medians reported.
2. Bare: the same image bytes from memory, ``modelrun.transforms.pipeline.preprocess`` and ``session.run`` on the
   registry's session with the PredictBatchFunction's thread setting, in its own process; after each batch, in
   batches of the batch's chunk size (the efficiency pairs the two), and once a round image by image.
3. Memory: ``write_manifest`` over a generator of keys and over ``prefix_keys`` of objects in moto S3, each in a
   fresh process, against a process that only sets up the same modules; then the local stack running a batch of
   keys that name missing objects (each becomes an ``image_not_found`` outcome) through the state machine.

Usage: python bench/batch.py [--quick] [--models digits,resnet] [--out bench/results/batch-latest.json]

Prints Markdown tables and the machine; writes every run to the JSON file. See bench/README.md ("Batch").
"""

from __future__ import annotations

import argparse
import datetime
import gc
import hashlib
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from functools import partial
from pathlib import Path
from types import FunctionType, ModuleType
from typing import Any

import harness
import requests
import run as single_bench

THIS_FILE = Path(__file__).resolve()
DEFAULT_OUT = harness.BENCH / "results" / "batch-latest.json"
API_KEY = "k"
HTTP_TIMEOUT_S = 120
TERMINAL = frozenset({"COMPLETED", "COMPLETED_WITH_ERRORS", "FAILED"})
DIGIT_SAMPLES = harness.REPO / "samples" / "digits"
MANIFEST_BUCKET = "bench-manifest-memory"
# Keys under bench/ trigger no S3 notification of the stack (those watch uploads/ and batches/).
IMAGE_PREFIX = "bench"
MB = 1024 * 1024


@dataclass(frozen=True)
class Settings:
    digits_images: int
    resnet_images: int
    configs: tuple[tuple[int, int], ...]  # (chunk_size, max_concurrency)
    repeats: int
    poll_s: float
    bare_min_s: float
    batch_deadline_s: float
    probe_calls: int
    manifest_keys: int
    prefix_objects: int
    sfn_keys: int
    sfn_chunk_size: int
    sfn_max_concurrency: int
    sfn_poll_s: float
    sfn_deadline_s: float

    @classmethod
    def full(cls) -> Settings:
        return cls(
            digits_images=2000,
            resnet_images=200,
            configs=((50, 2), (50, 8), (100, 2), (100, 8)),
            repeats=3,
            poll_s=0.5,
            bare_min_s=1.0,
            batch_deadline_s=600,
            probe_calls=200,
            manifest_keys=100_000,
            prefix_objects=100_000,
            sfn_keys=20_000,
            sfn_chunk_size=500,
            sfn_max_concurrency=8,
            sfn_poll_s=1.0,
            sfn_deadline_s=900,
        )

    @classmethod
    def quick(cls) -> Settings:
        return cls(
            digits_images=200,
            resnet_images=20,
            configs=((50, 2), (50, 8), (100, 2), (100, 8)),
            repeats=1,
            poll_s=0.5,
            bare_min_s=0.2,
            batch_deadline_s=120,
            probe_calls=30,
            manifest_keys=5_000,
            prefix_objects=5_000,
            sfn_keys=1_000,
            sfn_chunk_size=500,
            sfn_max_concurrency=8,
            sfn_poll_s=0.5,
            sfn_deadline_s=120,
        )

    def images(self, model: str) -> int:
        return self.digits_images if model == "digits" else self.resnet_images


log = single_bench.log


# ----------------------------------------------------------------------------------------------------------------
# Inputs
# ----------------------------------------------------------------------------------------------------------------


def resnet_pngs(count: int) -> Iterator[bytes]:
    """``count`` 224x224 RGB noise PNGs drawn one after another from ``numpy.random.default_rng(0)``.

    The first one is the image of bench/run.py (the same generator's first draw).
    """
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(harness.RESNET_IMAGE_SEED)
    size = harness.RESNET_IMAGE_SIZE
    for _ in range(count):
        pixels = rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(pixels, mode="RGB").save(buffer, format="PNG")
        yield buffer.getvalue()


def write_inputs(scratch: Path, model: str, count: int) -> tuple[Path, dict[str, Any]]:
    """The batch's S3 keys and the file holding each image, as a JSON list of ``[key, path]``; and a summary.

    digits: ``count`` distinct keys over the committed samples in name order (each sample under several keys);
    resnet: ``count`` generated PNGs, written to the scratch folder.
    """
    entries: list[tuple[str, str]] = []
    if model == "digits":
        samples = sorted(DIGIT_SAMPLES.glob("digit-*.png"))
        for index in range(count):
            sample = samples[index % len(samples)]
            entries.append((f"{IMAGE_PREFIX}/digits/{index:05d}-{sample.name}", str(sample)))
        distinct = min(count, len(samples))
    else:
        folder = scratch / "inputs" / model
        folder.mkdir(parents=True)
        for index, data in enumerate(resnet_pngs(count)):
            path = folder / f"noise-{index:04d}.png"
            path.write_bytes(data)
            entries.append((f"{IMAGE_PREFIX}/{model}/{path.name}", str(path)))
        distinct = count
    listing = scratch / f"inputs-{model}.json"
    listing.write_text(json.dumps(entries))
    digest = hashlib.sha256()
    total_bytes = 0
    for _, file in entries:
        data = Path(file).read_bytes()
        digest.update(data)
        total_bytes += len(data)
    summary = {"images": count, "distinct_images": distinct, "bytes": total_bytes, "sha256_of_all": digest.hexdigest()}
    return listing, summary


def read_inputs(listing: Path) -> list[tuple[str, bytes]]:
    cache: dict[str, bytes] = {}
    entries = json.loads(listing.read_text())
    return [(key, cache.setdefault(path, Path(path).read_bytes())) for key, path in entries]


def predict_batch_memory_mb() -> int:
    """PredictBatchFunction's MemorySize as template.yaml gives it (Globals merged)."""
    from modelrun_local.template import Template

    return int(Template.load().function_properties("PredictBatchFunction")["MemorySize"])


# ----------------------------------------------------------------------------------------------------------------
# Child processes (this file with --worker)
# ----------------------------------------------------------------------------------------------------------------


def run_child(kind: str, spec: dict[str, Any], env: dict[str, str], scratch: Path) -> dict[str, Any]:
    """Run one measurement of this file in a fresh interpreter; its stdout (the functions' logs) is dropped, its
    stderr (progress, errors) shown."""
    stamp = time.monotonic_ns()
    spec_file = scratch / f"{kind}-{stamp}-spec.json"
    result_file = scratch / f"{kind}-{stamp}-result.json"
    harness.write_json(spec_file, spec)
    command = [sys.executable, str(THIS_FILE), "--worker", kind, "--spec", str(spec_file), "--result", str(result_file)]
    # This checkout's packages first: an editable install may point at another worktree.
    own = [str(harness.REPO / folder) for folder in ("local", "layers/modelrun/python", "cli")]
    env = {**env, "PYTHONPATH": os.pathsep.join([*own, *filter(None, [env.get("PYTHONPATH")])])}
    finished = subprocess.run(command, env=env, cwd=harness.REPO, stdout=subprocess.DEVNULL, stderr=None, check=False)
    if finished.returncode != 0:
        raise RuntimeError(f"{kind} worker failed ({finished.returncode}); its stderr is above")
    result: dict[str, Any] = json.loads(result_file.read_text())
    return result


class Api:
    """The local REST API with the API key set, on one keep-alive session."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.session = requests.Session()
        self.session.headers["x-api-key"] = API_KEY

    def submit(self, body: dict[str, Any]) -> dict[str, Any]:
        response = self.session.post(f"{self.base}/batches", json=body, timeout=HTTP_TIMEOUT_S)
        if response.status_code != 202:
            raise RuntimeError(f"POST /batches answered {response.status_code}: {response.text[:1000]}")
        submitted: dict[str, Any] = response.json()
        return submitted

    def job(self, batch_id: str) -> dict[str, Any]:
        response = self.session.get(f"{self.base}/batches/{batch_id}", timeout=HTTP_TIMEOUT_S)
        if response.status_code != 200:
            raise RuntimeError(f"GET /batches/{batch_id} answered {response.status_code}: {response.text[:1000]}")
        job: dict[str, Any] = response.json()
        return job


class InvocationClock:
    """Counts each local function's invocations and sums their durations (cold starts included)."""

    def __init__(self, functions: Iterable[Any]) -> None:
        self._lock = threading.Lock()
        self.totals: dict[str, tuple[int, float]] = {}
        for function in functions:
            self._wrap(function)

    def _wrap(self, function: Any) -> None:
        original = function.invoke
        name = str(function.logical_id)

        def invoke(event: Any) -> Any:
            invocation = original(event)
            with self._lock:
                calls, total_ms = self.totals.get(name, (0, 0.0))
                self.totals[name] = (calls + 1, total_ms + float(invocation.duration_ms))
            return invocation

        function.invoke = invoke

    def snapshot(self) -> dict[str, tuple[int, float]]:
        with self._lock:
            return dict(self.totals)

    def since(self, before: dict[str, tuple[int, float]]) -> dict[str, dict[str, float]]:
        changed: dict[str, dict[str, float]] = {}
        for name, (calls, total_ms) in self.snapshot().items():
            calls_before, ms_before = before.get(name, (0, 0.0))
            if calls > calls_before:
                changed[name] = {"invocations": calls - calls_before, "total_ms": round(total_ms - ms_before, 1)}
        return changed


def start_stack(models_dir: Path) -> Any:
    """The local stack with every port it opens picked free (``*_port`` fields at 0), so a stack already running on
    this machine is no obstacle."""
    import dataclasses

    from modelrun_local.runtime import LocalRuntime

    ports = {item.name: 0 for item in dataclasses.fields(LocalRuntime) if item.name.endswith("port")}
    return LocalRuntime(**ports, api_key=API_KEY, models_dir=models_dir).start()


def stack_functions(runtime: Any) -> list[Any]:
    return list(runtime.stack.dispatcher.functions.values())


def sandboxes(runtime: Any, logical_id: str) -> int | None:
    """How many execution environments (sandbox processes) a local function holds (None if the runtime cannot say)."""
    function = runtime.stack.dispatcher.by_logical_id(logical_id)
    count = getattr(function, "sandboxes", getattr(function, "_created", None))
    return int(count) if count is not None else None


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def stack_cpu_s(exclude: Iterable[int] = ()) -> float:
    """CPU seconds of this process (the stack: moto, the gateway, the state machine) and of its child processes (the
    functions' sandboxes), the ``exclude``d children (the bare loop) left out: ended children through ``os.times``,
    live ones from /proc."""
    excluded = set(exclude)
    times = os.times()
    total = time.process_time() + times.children_user + times.children_system
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in excluded:
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # ended meanwhile
        if int(fields[1]) == os.getpid():  # fields[1] is the parent pid; [11] and [12] are utime and stime
            total += (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    return total


def iso_seconds(value: str) -> float:
    return datetime.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def run_batch(
    api: Api,
    clock: InvocationClock,
    body: dict[str, Any],
    *,
    poll_s: float,
    deadline_s: float,
    not_the_stack: Iterable[int] = (),
) -> dict[str, Any]:
    """Submit one batch and poll it to a terminal status; what the client saw, the job's timings, the CPU the stack
    used (this process and its sandboxes, ``not_the_stack`` child processes excepted)."""
    before = clock.snapshot()
    not_the_stack = tuple(not_the_stack)
    cpu_started = stack_cpu_s(not_the_stack)
    runtime_cpu_started = time.process_time()
    submitted_at = time.time()
    started = time.perf_counter()
    batch_id = api.submit(body)["batch_id"]
    submit_s = time.perf_counter() - started
    deadline = started + deadline_s
    poll_ms: list[float] = []
    while True:
        time.sleep(poll_s)
        asked = time.perf_counter()
        job = api.job(batch_id)
        poll_ms.append((time.perf_counter() - asked) * 1000)
        if job["status"] in TERMINAL:
            break
        if time.perf_counter() > deadline:
            raise TimeoutError(f"batch {batch_id} not terminal after {deadline_s} s: {job}")
    seen_s = time.perf_counter() - started
    cpu_s = stack_cpu_s(not_the_stack) - cpu_started
    runtime_cpu_s = time.process_time() - runtime_cpu_started
    timings = job["timings"]
    job_s = iso_seconds(timings["finished_at"]) - iso_seconds(timings["started_at"])
    return {
        "batch_id": batch_id,
        "status": job["status"],
        "counts": job["counts"],
        "chunks": job.get("chunks"),
        "submit_s": round(submit_s, 3),
        "submit_to_terminal_s": round(seen_s, 3),
        "submit_to_finished_at_s": round(iso_seconds(timings["finished_at"]) - submitted_at, 3),
        "job_started_to_finished_s": round(job_s, 3),
        "queued_s": round(iso_seconds(timings["started_at"]) - iso_seconds(timings["created_at"]), 3),
        "process_cpu_s": round(cpu_s, 3),
        # Of which the runtime's own process: moto, its local endpoint, the gateway, the state machine, the pollers.
        "runtime_process_cpu_s": round(runtime_cpu_s, 3),
        "polls": len(poll_ms),
        "poll_ms_median": round(statistics.median(poll_ms), 2),
        "functions": clock.since(before),
        "timings": timings,
    }


def upload(s3: Any, bucket: str, inputs: Sequence[tuple[str, bytes]]) -> None:
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda item: s3.put_object(Bucket=bucket, Key=item[0], Body=item[1]), inputs))


class BareLoop:
    """The bare ONNX Runtime loop in its own process (``--worker bare``), run on request between two batches, so
    that each platform figure has a bare figure taken under the same load from the rest of the machine."""

    def __init__(self, spec: dict[str, Any], env: dict[str, str]) -> None:
        command = [sys.executable, str(THIS_FILE), "--worker", "bare", "--spec", spec["bare_spec"], "--result", "-"]
        self.process = subprocess.Popen(command, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.ready = self._reply()

    def _reply(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"the bare loop exited ({self.process.wait()}); its stderr is above")
        reply: dict[str, Any] = json.loads(line)
        return reply

    def run(self, variant: str) -> dict[str, Any]:
        assert self.process.stdin is not None
        self.process.stdin.write(variant + "\n")
        self.process.stdin.flush()
        return self._reply()

    def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        self.process.wait(timeout=60)


def throughput_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """The local stack in this process: upload the images, warm the functions, then every configuration, rotated
    round by round so a burst of load from another process does not land on one configuration only. After each
    batch the bare loop runs the same images in batches of the same chunk size (and once a round, image by image)
    while the stack is idle."""
    import boto3

    inputs = read_inputs(Path(spec["inputs"]))
    keys = [key for key, _ in inputs]
    model = spec["model"]
    bare = BareLoop(spec, {**os.environ, "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(spec["memory_mb"])})
    runtime = start_stack(Path(spec["models_dir"]))
    try:
        bucket = runtime.stack.ref("ImagesBucket")
        s3 = boto3.client("s3", region_name=runtime.region)
        began = time.perf_counter()
        upload(s3, bucket, inputs)
        upload_s = time.perf_counter() - began
        clock = InvocationClock(stack_functions(runtime))
        api = Api(runtime.url)
        # Warm-up: as many chunks of the largest chunk size as the largest max_concurrency, at once, so that many
        # execution environments exist, have loaded the model and have run it on a batch of that size (ONNX
        # Runtime sizes its buffers for a batch shape on first use: the bare loop is warmed the same way) before
        # the clock starts; every function the batch path uses has had its cold start.
        concurrency = max(mc for _, mc in spec["configs"])
        chunk = min(max(size for size, _ in spec["configs"]), len(keys))  # no chunk of a batch is larger
        warm_keys = [keys[index % len(keys)] for index in range(concurrency * chunk)]
        warm_body = {"model": model, "images": warm_keys, "chunk_size": chunk, "max_concurrency": concurrency}
        warm_up = run_batch(api, clock, warm_body, poll_s=spec["poll_s"], deadline_s=spec["deadline_s"])
        configs = [tuple(config) for config in spec["configs"]]
        runs: list[dict[str, Any]] = []
        per_image: list[dict[str, Any]] = []
        for round_index in range(spec["repeats"]):
            shift = round_index % len(configs)
            for chunk_size, max_concurrency in configs[shift:] + configs[:shift]:
                body = {"model": model, "images": keys, "chunk_size": chunk_size, "max_concurrency": max_concurrency}
                outcome = run_batch(
                    api,
                    clock,
                    body,
                    poll_s=spec["poll_s"],
                    deadline_s=spec["deadline_s"],
                    not_the_stack=[bare.process.pid],
                )
                if outcome["status"] != "COMPLETED" or outcome["counts"]["predicted"] != len(keys):
                    raise RuntimeError(f"batch did not predict every image: {outcome}")
                outcome["bare"] = bare.run(f"batch_{chunk_size}")
                runs.append(
                    {"chunk_size": chunk_size, "max_concurrency": max_concurrency, "round": round_index, **outcome}
                )
                log(
                    f"  {model} chunk_size={chunk_size} max_concurrency={max_concurrency}: "
                    f"{outcome['submit_to_terminal_s']:.1f} s, bare {outcome['bare']['wall_s']:.2f} s, "
                    f"load {os.getloadavg()[0]:.2f}"
                )
            per_image.append(bare.run("per_image"))
        probes = probe_costs(runtime, s3, bucket, model, inputs[: spec["probe_calls"]], Path(spec["models_dir"]))
        return {
            "upload_s": round(upload_s, 2),
            "warm_up": warm_up,
            "runs": runs,
            "bare": {**bare.ready, "per_image": per_image},
            "probes": probes,
            "predict_batch_sandboxes": sandboxes(runtime, "PredictBatchFunction"),
            "rss_mb_end": round(harness.rss_mb(), 1),
            "maxrss_mb": round(harness.maxrss_mb(), 1),
        }
    finally:
        runtime.stop()
        bare.close()


def per_call(calls: Sequence[Callable[[], Any]]) -> dict[str, float]:
    """Run each call once, in order; median and mean wall time per call, and process CPU per call."""
    samples: list[float] = []
    cpu_started = time.process_time()
    for call in calls:
        started = time.perf_counter()
        call()
        samples.append((time.perf_counter() - started) * 1000)
    cpu_ms = (time.process_time() - cpu_started) * 1000 / len(calls)
    return {
        "n": len(samples),
        "p50_ms": round(harness.percentile(samples, 50), 3),
        "mean_ms": round(sum(samples) / len(samples), 3),
        "cpu_ms_per_call": round(cpu_ms, 3),
    }


def probe_costs(
    runtime: Any, s3: Any, bucket: str, model: str, inputs: Sequence[tuple[str, bytes]], models_dir: Path
) -> dict[str, Any]:
    """The per-image I/O of a chunk, call by call with nothing else running: the image read from S3 (in-process
    moto, and over loopback HTTP to the local AWS endpoint as the functions do) and the conditional outcome write
    to the items table (over loopback HTTP, as the functions do). Client and server are both this process, so each
    figure is the whole CPU cost of the call on this machine."""
    import boto3

    from modelrun.aws.s3 import ImageStore
    from modelrun.batches.store import PREDICTED, JobStore, Outcome
    from modelrun.images.decode import Limits
    from modelrun.inference import predict_arrays
    from modelrun.models.registry import ModelRegistry
    from modelrun.transforms.pipeline import preprocess

    limits = Limits.from_env()
    over_http = boto3.client("s3", region_name=runtime.region, endpoint_url=runtime.aws_endpoint)
    in_process = ImageStore(s3, {bucket})
    loopback = ImageStore(over_http, {bucket})
    in_process.read(bucket, inputs[0][0], max_bytes=limits.max_bytes)
    loopback.read(bucket, inputs[0][0], max_bytes=limits.max_bytes)

    loaded = ModelRegistry(models_dir).get(model)
    prediction = predict_arrays(loaded, [preprocess(inputs[0][1], loaded.spec, limits)])[0]
    dynamodb = boto3.resource("dynamodb", region_name=runtime.region, endpoint_url=runtime.aws_endpoint)
    store = JobStore(dynamodb.Table(runtime.stack.ref("JobsTable")), dynamodb.Table(runtime.stack.ref("ItemsTable")))
    probe_batch = f"bench-probe-{uuid.uuid4().hex[:12]}"

    def outcome(item: int, key: str) -> Outcome:
        return Outcome(
            item=item,
            key=key,
            chunk=0,
            status=PREDICTED,
            result=prediction.to_dict(),
        )

    store.record_outcome(f"{probe_batch}-warm", outcome(0, inputs[0][0]))
    return {
        "s3_get_in_process": per_call(
            [partial(in_process.read, bucket, key, max_bytes=limits.max_bytes) for key, _ in inputs]
        ),
        "s3_get_loopback_http": per_call(
            [partial(loopback.read, bucket, key, max_bytes=limits.max_bytes) for key, _ in inputs]
        ),
        "dynamodb_record_outcome_loopback_http": per_call(
            [partial(store.record_outcome, probe_batch, outcome(item, key)) for item, (key, _) in enumerate(inputs)]
        ),
        "top_k_entries": len(prediction.top_k),
    }


def bare_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """Decode + preprocess + ``session.run`` over the same image bytes, from memory, on the registry's session.

    The environment gives the PredictBatchFunction's memory size, so the registry picks its intra-op threads.
    Serves requests on stdin, one a line (``per_image`` or ``batch_<size>``), each answered with one JSON line on
    stdout: wall and process CPU seconds for all the images, and the part spent decoding and preprocessing.
    """
    import numpy as np

    from modelrun.images.decode import Limits
    from modelrun.models.registry import ModelRegistry
    from modelrun.transforms.pipeline import preprocess

    images = [data for _, data in read_inputs(Path(spec["inputs"]))]
    registry = ModelRegistry(Path(spec["models_dir"]))
    loaded = registry.get(spec["model"])
    session, model_spec, limits = loaded.session, loaded.spec, Limits.from_env()
    input_name, output_name = model_spec.input_name, model_spec.output.name

    def run_batches(size: int, subset: Sequence[bytes]) -> float:
        """Decode + preprocess ``size`` images, one ``session.run`` on them, and so on; the seconds spent preparing."""
        prepare_s = 0.0
        for start in range(0, len(subset), size):
            started = time.perf_counter()
            batch = np.stack([preprocess(data, model_spec, limits) for data in subset[start : start + size]])
            prepare_s += time.perf_counter() - started
            session.run([output_name], {input_name: batch})
        return prepare_s

    sizes = {"per_image": 1, **{f"batch_{size}": size for size in spec["chunk_sizes"]}}
    for size in sizes.values():  # warm-up: ONNX Runtime sizes its buffers for each batch shape on first use
        run_batches(size, images[: max(sizes.values())])
    ready = {
        "images": len(images),
        "intra_op_threads": registry.intra_op_threads,
        "memory_size_env": os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE"),
    }
    print(json.dumps(ready), flush=True)
    for line in sys.stdin:
        variant = line.strip()
        cpu_started = time.process_time()
        started = time.perf_counter()
        prepare_s, passes = 0.0, 0
        # Whole passes over the images until min_seconds have gone by: one pass of 2,000 digits is about 0.2 s.
        while passes == 0 or time.perf_counter() - started < spec["min_seconds"]:
            prepare_s += run_batches(sizes[variant], images)
            passes += 1
        wall_s = time.perf_counter() - started
        cpu_s = time.process_time() - cpu_started
        reply = {"variant": variant, "images": passes * len(images), "wall_s": wall_s, "cpu_s": cpu_s}
        print(json.dumps({**reply, "prepare_s": prepare_s}), flush=True)
    return ready


def manifest_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """write_manifest in a fresh process under moto, from a generator or from ``prefix_keys`` (or nothing: the
    baseline, which makes the same imports, starts moto and creates the bucket)."""
    import tracemalloc

    import boto3
    from moto import mock_aws

    from modelrun.batches.keys import BatchKeys
    from modelrun.batches.manifest import prefix_keys, write_manifest
    from modelrun.tenants import DEFAULT_TENANT, Tenant

    source, count, chunk_size = spec["source"], spec["keys"], spec["chunk_size"]
    result: dict[str, Any] = {"source": source, "keys": count, "chunk_size": chunk_size}
    with mock_aws():
        s3 = boto3.client("s3", region_name=harness.REGION)
        s3.create_bucket(Bucket=MANIFEST_BUCKET)
        if source == "baseline":
            result.update(rss_mb=round(harness.rss_mb(), 1), maxrss_mb=round(harness.maxrss_mb(), 1))
            return result
        prefix = f"{IMAGE_PREFIX}/objects/"
        if source == "prefix":
            result["create_objects_s"] = round(create_objects(s3, prefix, count), 1)

        def keys() -> Iterator[str]:
            if source == "prefix":
                listed: Iterator[str] = prefix_keys(s3, MANIFEST_BUCKET, prefix)
                return listed
            return (f"{prefix}{index:07d}.png" for index in range(count))

        def write(batch_id: str) -> Any:
            return write_manifest(
                s3,
                keys(),
                bucket=MANIFEST_BUCKET,
                batch=BatchKeys(Tenant(DEFAULT_TENANT), batch_id),
                chunk_size=chunk_size,
                max_images=10 * count,
            )

        gc.collect()
        result["maxrss_mb_before_call"] = round(harness.maxrss_mb(), 1)
        result["rss_mb_before_call"] = round(harness.rss_mb(), 1)
        result["peak_reset"] = harness.reset_peak_rss()
        started = time.perf_counter()
        summary = write("bench-untraced")
        result["duration_s"] = round(time.perf_counter() - started, 2)
        result["peak_rss_mb_during_call"] = round(harness.peak_rss_mb(), 1)
        result["maxrss_mb"] = round(max(harness.maxrss_mb(), result["maxrss_mb_before_call"]), 1)
        result["total"] = summary.total
        result["chunks"] = summary.chunks
        for key in (summary.key, getattr(summary, "keys_key", None)):
            if key:
                result.setdefault("objects", {})[key.rsplit("/", 1)[-1]] = s3.head_object(
                    Bucket=MANIFEST_BUCKET, Key=key
                )["ContentLength"]
        # Python allocations only, in a second call so that tracing does not slow the timed one.
        gc.collect()
        tracemalloc.start()
        write("bench-traced")
        result["tracemalloc_peak_mb"] = round(tracemalloc.get_traced_memory()[1] / MB, 2)
        tracemalloc.stop()
    return result


def create_objects(s3: Any, prefix: str, count: int) -> float:
    """``count`` empty objects under ``prefix`` in moto S3, written straight into moto's backend.

    PutObject through boto3 costs about 1.6 ms an object here (more than 2 minutes for 100,000); the backend call
    stores the same objects in moto in a few seconds. Listing them is what the measurement is about.
    """
    from moto.core.models import DEFAULT_ACCOUNT_ID
    from moto.s3.models import s3_backends

    started = time.perf_counter()
    s3.put_object(Bucket=MANIFEST_BUCKET, Key=f"{prefix}0000000.png", Body=b"")
    backend = s3_backends[DEFAULT_ACCOUNT_ID]["aws"]
    for index in range(1, count):
        backend.put_object(MANIFEST_BUCKET, f"{prefix}{index:07d}.png", b"")
    return time.perf_counter() - started


def deep_size(root: Any, classes: tuple[type, ...]) -> int:
    """Bytes held by ``root`` and what it references, descending only into built-in data and ``classes``."""
    data = (dict, list, tuple, set, frozenset, str, bytes, int, float)
    seen: set[int] = set()
    pending = [root]
    total = 0
    while pending:
        item = pending.pop()
        if id(item) in seen or isinstance(item, type | ModuleType | FunctionType):
            continue
        if not isinstance(item, data + classes):
            continue
        seen.add(id(item))
        total += sys.getsizeof(item)
        pending.extend(gc.get_referents(item))
    return total


def retained_items_mb(runtime: Any, batch_id: str) -> float | None:
    """What moto's DynamoDB holds for one batch's outcomes in the items table (its objects, deep)."""
    from moto.core.models import DEFAULT_ACCOUNT_ID
    from moto.dynamodb.models import dynamodb_backends
    from moto.dynamodb.models.dynamo_type import DynamoType, Item

    backend = dynamodb_backends[DEFAULT_ACCOUNT_ID][runtime.region]
    table = backend.tables.get(runtime.stack.ref("ItemsTable"))
    if table is None:
        return None
    for hash_key, records in table.items.items():
        if getattr(hash_key, "value", None) == batch_id:
            return round(deep_size(records, (Item, DynamoType, hash_key.__class__)) / MB, 2)
    return None


def sfn_memory_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """The local stack runs one batch of keys that name no object, through the state machine (Distributed Map with
    ItemReader); peak RSS, RSS along the way against the progress, time to terminal."""
    import boto3

    count, chunk_size, concurrency = spec["keys"], spec["chunk_size"], spec["max_concurrency"]
    result: dict[str, Any] = {"keys": count, "chunk_size": chunk_size, "max_concurrency": concurrency}
    result["rss_mb_process_start"] = round(harness.rss_mb(), 1)
    runtime = start_stack(Path(spec["models_dir"]))
    try:
        result["rss_mb_stack_started"] = round(harness.rss_mb(), 1)
        clock = InvocationClock(stack_functions(runtime))
        api = Api(runtime.url)
        keys = [f"{IMAGE_PREFIX}/missing/{index:07d}.png" for index in range(count)]
        warm = {"model": "digits", "images": keys[:concurrency], "chunk_size": 1, "max_concurrency": concurrency}
        run_batch(api, clock, warm, poll_s=spec["poll_s"], deadline_s=spec["deadline_s"])
        gc.collect()
        result["rss_mb_ready"] = round(harness.rss_mb(), 1)
        before = clock.snapshot()
        started = time.perf_counter()
        batch_id = api.submit(
            {"model": "digits", "images": keys, "chunk_size": chunk_size, "max_concurrency": concurrency}
        )["batch_id"]
        result["submit_s"] = round(time.perf_counter() - started, 2)
        result["rss_mb_after_submit"] = round(harness.rss_mb(), 1)
        timeline: list[dict[str, float]] = []
        while True:
            time.sleep(spec["poll_s"])
            job = api.job(batch_id)
            done = job["counts"]["predicted"] + job["counts"]["failed"]
            timeline.append(
                {"t_s": round(time.perf_counter() - started, 1), "done": done, "rss_mb": round(harness.rss_mb(), 1)}
            )
            if job["status"] in TERMINAL:
                break
            if time.perf_counter() - started > spec["deadline_s"]:
                raise TimeoutError(f"batch {batch_id} not terminal after {spec['deadline_s']} s: {job}")
        result["submit_to_terminal_s"] = round(time.perf_counter() - started, 1)
        result["maxrss_mb"] = round(harness.maxrss_mb(), 1)
        result["rss_mb_end"] = round(harness.rss_mb(), 1)
        result["status"] = job["status"]
        result["counts"] = job["counts"]
        result["chunks"] = job.get("chunks")
        result["timings"] = job["timings"]
        result["functions"] = clock.since(before)
        result["timeline"] = timeline
        s3 = boto3.client("s3", region_name=runtime.region)
        bucket = runtime.stack.ref("ImagesBucket")
        # Every object the batch left in the bucket (manifest, keys, results, error reports), wherever it lives.
        pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
        result["objects"] = {
            entry["Key"]: entry["Size"]
            for page in pages
            for entry in page.get("Contents", [])
            if batch_id in entry["Key"]
        }
        result["moto_items_mb"] = retained_items_mb(runtime, batch_id)
        return result
    finally:
        runtime.stop()


WORKERS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "throughput": throughput_worker,
    "bare": bare_worker,
    "manifest": manifest_worker,
    "sfn-memory": sfn_memory_worker,
}


# ----------------------------------------------------------------------------------------------------------------
# Summaries and tables
# ----------------------------------------------------------------------------------------------------------------


def median(values: Iterable[float]) -> float:
    return float(statistics.median(list(values)))


def summarise_platform(model: str, raw: dict[str, Any], images: int) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    configs = sorted({(run["chunk_size"], run["max_concurrency"]) for run in raw["runs"]})
    for chunk_size, max_concurrency in configs:
        runs = [r for r in raw["runs"] if (r["chunk_size"], r["max_concurrency"]) == (chunk_size, max_concurrency)]
        rows.append(
            {
                "model": model,
                "images": images,
                "chunk_size": chunk_size,
                "max_concurrency": max_concurrency,
                "chunks": runs[0]["chunks"],
                "runs": len(runs),
                "submit_to_terminal_images_per_s": round(median(images / r["submit_to_terminal_s"] for r in runs), 1),
                "job_images_per_s": round(median(images / r["job_started_to_finished_s"] for r in runs), 1),
                "submit_to_terminal_s": [r["submit_to_terminal_s"] for r in runs],
                "cpu_ms_per_image": round(median(r["process_cpu_s"] * 1000 / images for r in runs), 2),
                "cores_busy": round(median(r["process_cpu_s"] / r["submit_to_terminal_s"] for r in runs), 2),
                "finalize_s": round(median(finalize_ms(r) / 1000 for r in runs), 2),
                # Each batch against the bare loop run right after it, then the median of those ratios.
                "bare_images_per_s": round(median(rate(r["bare"]) for r in runs), 1),
                "efficiency": round(median(images / r["submit_to_terminal_s"] / rate(r["bare"]) for r in runs), 4),
            }
        )
    return rows


def rate(bare_run: dict[str, Any]) -> float:
    return float(bare_run["images"] / bare_run["wall_s"])


def finalize_ms(run: dict[str, Any]) -> float:
    return float(run["functions"].get("FinalizeBatchFunction", {}).get("total_ms", 0.0))


def summarise_bare(model: str, raw: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every bare run of the throughput worker, by variant: image by image, and batches of each chunk size."""
    variants: dict[str, list[dict[str, float]]] = {"per_image": raw["bare"]["per_image"]}
    for run in sorted(raw["runs"], key=lambda entry: entry["chunk_size"]):
        variants.setdefault(f"batch_{run['chunk_size']}", []).append(run["bare"])
    summary: dict[str, dict[str, Any]] = {}
    for name, samples in variants.items():
        summary[name] = {
            "model": model,
            "variant": name,
            "images": raw["bare"]["images"],
            "runs": len(samples),
            "intra_op_threads": raw["bare"]["intra_op_threads"],
            "images_per_s": round(median(rate(s) for s in samples), 1),
            "ms_per_image": round(median(s["wall_s"] * 1000 / s["images"] for s in samples), 3),
            "cpu_ms_per_image": round(median(s["cpu_s"] * 1000 / s["images"] for s in samples), 3),
            "prepare_share": round(median(s["prepare_s"] / s["wall_s"] for s in samples), 3),
        }
    return summary


def number(value: float) -> str:
    return str(single_bench.number(value))


def markdown(headers: Sequence[str], rows: Iterable[Sequence[Any]], left: int = 1) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(["---"] * left + ["---:"] * (len(headers) - left)) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def throughput_table(platform: list[dict[str, Any]]) -> str:
    rows = []
    for row in platform:
        rows.append(
            [
                row["model"],
                f"{row['images']:,}",
                row["chunk_size"],
                row["max_concurrency"],
                row["chunks"],
                row["runs"],
                f"{row['submit_to_terminal_images_per_s']:.1f}",
                f"{row['job_images_per_s']:.1f}",
                f"{row['bare_images_per_s']:.1f}",
                f"{100 * row['efficiency']:.2f}" if row["efficiency"] < 0.1 else f"{100 * row['efficiency']:.1f}",
                f"{row['cpu_ms_per_image']:.2f}",
                f"{row['cores_busy']:.2f}",
            ]
        )
    headers = (
        "model",
        "images",
        "chunk_size",
        "max_concurrency",
        "chunks",
        "runs",
        "platform, submit to terminal (images/s)",
        "platform, job started to finished (images/s)",
        "bare ORT, batches of chunk_size, run after each batch (images/s)",
        "efficiency, paired (%)",
        "stack process CPU (ms/image)",
        "CPU cores busy",
    )
    return markdown(headers, rows)


def bare_table(bare: dict[str, dict[str, dict[str, Any]]]) -> str:
    labels = {"per_image": "one session.run per image"}
    rows = []
    for variants in bare.values():
        for name, row in variants.items():
            label = labels.get(name, f"batches of {name.removeprefix('batch_')}")
            rows.append(
                [
                    row["model"],
                    label,
                    f"{row['images']:,}",
                    row["runs"],
                    row["intra_op_threads"],
                    f"{row['images_per_s']:.1f}",
                    number(row["ms_per_image"]),
                    number(row["cpu_ms_per_image"]),
                    f"{100 * row['prepare_share']:.0f}",
                ]
            )
    headers = (
        "model",
        "bare loop",
        "images",
        "runs",
        "intra-op threads",
        "images/s",
        "ms/image",
        "CPU ms/image",
        "decode+preprocess (% of wall)",
    )
    return markdown(headers, rows, left=2)


def cost_table(costs: list[dict[str, Any]]) -> str:
    rows = [
        [
            row["model"],
            number(row["s3_in_process_ms"]),
            number(row["s3_http_ms"]),
            number(row["dynamodb_ms"]),
            number(row["bare_cpu_ms"]),
            number(row["platform_cpu_ms"]),
            number(row["rest_ms"]),
            number(row["finalize_ms"]),
            number(row["rest_per_chunk_ms"]),
        ]
        for row in costs
    ]
    headers = (
        "model",
        "S3 GetObject, moto in-process (ms)",
        "S3 GetObject, loopback HTTP (ms)",
        "DynamoDB conditional PutItem, loopback HTTP (ms)",
        "bare decode+preprocess+run, batched (CPU ms)",
        "platform, stack process (CPU ms/image)",
        "rest (CPU ms/image)",
        "of which finalize (ms/image)",
        "rest without finalize, per chunk (CPU ms)",
    )
    return markdown(headers, rows)


def cost_rows(
    platform: list[dict[str, Any]], raw: dict[str, dict[str, Any]], bare: dict[str, dict[str, dict[str, Any]]]
) -> list[dict[str, Any]]:
    """Per image, for each model's smallest configuration (chunks of 50, 2 at once): the platform's CPU against the
    parts measured alone. The rest is finalize (its wall time: nothing else runs then), and per chunk the Step
    Functions interpreter, the Lambda invoke, the chunk's keys read, Powertools, counters, notifications, polling."""
    rows: list[dict[str, Any]] = []
    for model, result in raw.items():
        chosen = [row for row in platform if row["model"] == model]
        if not chosen:
            continue
        row = min(chosen, key=lambda entry: (entry["chunk_size"], entry["max_concurrency"]))
        probes = result["probes"]
        reference = bare[model].get(f"batch_{row['chunk_size']}", bare[model]["per_image"])
        s3_http = probes["s3_get_loopback_http"]["cpu_ms_per_call"]
        dynamo = probes["dynamodb_record_outcome_loopback_http"]["cpu_ms_per_call"]
        rest = row["cpu_ms_per_image"] - s3_http - dynamo - reference["cpu_ms_per_image"]
        finalize = row["finalize_s"] * 1000 / row["images"]
        rows.append(
            {
                "model": model,
                "chunk_size": row["chunk_size"],
                "max_concurrency": row["max_concurrency"],
                "s3_in_process_ms": probes["s3_get_in_process"]["cpu_ms_per_call"],
                "s3_http_ms": s3_http,
                "dynamodb_ms": dynamo,
                "bare_cpu_ms": reference["cpu_ms_per_image"],
                "platform_cpu_ms": row["cpu_ms_per_image"],
                "rest_ms": round(rest, 2),
                "finalize_ms": round(finalize, 2),
                "rest_per_chunk_ms": round((rest - finalize) * row["chunk_size"], 1),
            }
        )
    return rows


def manifest_table(manifest: dict[str, dict[str, Any]]) -> str:
    baseline = manifest["baseline"]["maxrss_mb"]
    rows = [["baseline: imports, moto, S3 client, bucket", "-", "-", "-", "-", "-", number(baseline), "-", "-", "-"]]
    for source in ("generator", "prefix"):
        entry = manifest[source]
        label = "generator of keys" if source == "generator" else "prefix_keys over moto S3 objects"
        sizes = ", ".join(f"{name} {size:,}" for name, size in sorted(entry["objects"].items()))
        rows.append(
            [
                label,
                f"{entry['total']:,}",
                f"{entry['chunks']:,}",
                sizes,
                number(entry["duration_s"]),
                number(entry["rss_mb_before_call"]),
                number(entry["maxrss_mb"]),
                number(entry["peak_rss_mb_during_call"]),
                number(entry["peak_rss_mb_during_call"] - entry["rss_mb_before_call"]),
                number(entry["tracemalloc_peak_mb"]),
            ]
        )
    headers = (
        "write_manifest from",
        "keys",
        "chunks",
        "objects written (bytes)",
        "duration (s)",
        "RSS before the call (MB)",
        "process peak RSS, ru_maxrss (MB)",
        "peak RSS during the call (MB)",
        "peak during call - before (MB)",
        "tracemalloc peak of the call (MB)",
    )
    return markdown(headers, rows)


def sfn_summary(raw: dict[str, Any]) -> dict[str, Any]:
    """Growth of RSS by phase: the first wave of chunks (until as many images as ``max_concurrency`` chunks hold
    have an outcome: chunks in flight at once), the rest of the Map (per 10k keys), and finalize (per 10k keys)."""
    keys = raw["keys"]
    timeline = raw["timeline"]
    first_wave = min(keys, raw["chunk_size"] * raw["max_concurrency"])
    wave_end = next(point for point in timeline if point["done"] >= first_wave)
    map_end = next(point for point in timeline if point["done"] >= keys)
    rest_keys = keys - wave_end["done"]
    rest_mb = map_end["rss_mb"] - wave_end["rss_mb"]
    finalize_mb = raw["maxrss_mb"] - map_end["rss_mb"]
    items_mb = raw["moto_items_mb"]
    return {
        "keys": keys,
        "chunks": raw["chunks"],
        "submit_to_terminal_s": raw["submit_to_terminal_s"],
        "finalize_s": round(raw["functions"].get("FinalizeBatchFunction", {}).get("total_ms", 0.0) / 1000, 1),
        "rss_mb_ready": raw["rss_mb_ready"],
        "rss_mb_after_submit": raw["rss_mb_after_submit"],
        "maxrss_mb": raw["maxrss_mb"],
        "growth_mb": round(raw["maxrss_mb"] - raw["rss_mb_ready"], 1),
        "first_wave_images": wave_end["done"],
        "first_wave_mb": round(wave_end["rss_mb"] - raw["rss_mb_after_submit"], 1),
        "rest_of_map_mb_per_10k_keys": round(rest_mb / rest_keys * 10_000, 1) if rest_keys > 0 else None,
        "finalize_mb_per_10k_keys": round(finalize_mb / keys * 10_000, 1),
        "moto_items_mb_per_10k_keys": round(items_mb / keys * 10_000, 1) if items_mb is not None else None,
        "objects": raw["objects"],
    }


def optional(value: float | None) -> str:
    return number(value) if value is not None else "-"


def sfn_table(summary: dict[str, Any]) -> str:
    sizes = ", ".join(f"{key.rsplit('/', 1)[-1]} {size:,}" for key, size in sorted(summary["objects"].items()))
    row = [
        f"{summary['keys']:,}",
        summary["chunks"],
        number(summary["submit_to_terminal_s"]),
        number(summary["finalize_s"]),
        number(summary["rss_mb_ready"]),
        number(summary["rss_mb_after_submit"]),
        number(summary["maxrss_mb"]),
        number(summary["growth_mb"]),
        f"{number(summary['first_wave_mb'])} ({summary['first_wave_images']:,} images)",
        optional(summary["rest_of_map_mb_per_10k_keys"]),
        number(summary["finalize_mb_per_10k_keys"]),
        optional(summary["moto_items_mb_per_10k_keys"]),
        sizes,
    ]
    headers = (
        "keys",
        "chunks",
        "submit to terminal (s)",
        "of which finalize (s)",
        "RSS, stack warm (MB)",
        "RSS after submit (MB)",
        "peak RSS, ru_maxrss (MB)",
        "peak - warm (MB)",
        "growth in the first wave of chunks (MB)",
        "growth in the rest of the Map (MB per 10k keys)",
        "growth in finalize (MB per 10k keys)",
        "moto DynamoDB outcomes, deep size (MB per 10k keys)",
        "objects left in S3 (bytes)",
    )
    return markdown(headers, [row], left=0)


# ----------------------------------------------------------------------------------------------------------------
# Main
# ----------------------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small counts: a smoke run in about a minute")
    parser.add_argument("--models", default="digits,resnet", help="comma-separated: digits, resnet")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON result file")
    parser.add_argument("--configs", help="CHUNKxCONCURRENCY,... instead of the preset's (e.g. 50x4)")
    parser.add_argument("--images", help="MODEL=N,... instead of the preset's image counts (e.g. resnet=400)")
    parser.add_argument("--repeats", type=int, help="rounds instead of the preset's")
    parser.add_argument(
        "--throughput-only", action="store_true", help="only the throughput phase (no write_manifest or state machine)"
    )
    parser.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    parser.add_argument("--spec", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.models = [name.strip() for name in args.models.split(",") if name.strip()]
    unknown = sorted(set(args.models) - set(harness.MODEL_SOURCES))
    if unknown or not args.models:
        parser.error(f"--models takes {', '.join(harness.MODEL_SOURCES)}; got {args.models}")
    return args


def chosen_settings(args: argparse.Namespace) -> Settings:
    """The preset (``--quick`` or full) with the command line's overrides."""
    settings = Settings.quick() if args.quick else Settings.full()
    overrides: dict[str, Any] = {}
    if args.configs:
        pairs = [item.strip().split("x") for item in args.configs.split(",") if item.strip()]
        overrides["configs"] = tuple((int(chunk), int(concurrency)) for chunk, concurrency in pairs)
    for item in (args.images or "").split(","):
        if item.strip():
            model, count = item.split("=")
            overrides[f"{model.strip()}_images"] = int(count)
    if args.repeats:
        overrides["repeats"] = args.repeats
    return replace(settings, **overrides)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        result = WORKERS[args.worker](json.loads(args.spec.read_text()))
        if str(args.result) != "-":
            harness.write_json(args.result, result)
        return 0
    settings = chosen_settings(args)
    began = time.perf_counter()
    info = harness.machine()
    if "resnet" in args.models:
        single_bench.ensure_resnet()
    memory_mb = predict_batch_memory_mb()
    load_1min: dict[str, float] = {}
    raw_platform: dict[str, dict[str, Any]] = {}
    inputs: dict[str, dict[str, Any]] = {}
    chunk_sizes = sorted({chunk_size for chunk_size, _ in settings.configs})
    with tempfile.TemporaryDirectory(prefix="modelrun-bench-batch-") as tmp:
        scratch = Path(tmp)
        models_dir, _ = single_bench.prepare_workspace(scratch, args.models)
        stack_env = harness.handler_environment(models_dir, default_model="digits")
        for model in args.models:
            listing, inputs[model] = write_inputs(scratch, model, settings.images(model))
            log(
                f"{model}: batches on the local stack, {settings.images(model)} images, {settings.repeats} round(s) ..."
            )
            bare_spec = scratch / f"bare-{model}.json"
            bare_spec.write_text(
                json.dumps(
                    {
                        "model": model,
                        "models_dir": str(models_dir),
                        "inputs": str(listing),
                        "chunk_sizes": chunk_sizes,
                        "min_seconds": settings.bare_min_s,
                    }
                )
            )
            spec = {
                "model": model,
                "models_dir": str(models_dir),
                "inputs": str(listing),
                "configs": settings.configs,
                "repeats": settings.repeats,
                "poll_s": settings.poll_s,
                "deadline_s": settings.batch_deadline_s,
                "probe_calls": settings.probe_calls,
                # The bare loop gets the PredictBatchFunction's memory, from which the registry picks its threads.
                "memory_mb": memory_mb,
                "bare_spec": str(bare_spec),
            }
            raw_platform[model] = run_child("throughput", spec, stack_env, scratch)
            load_1min[f"{model} platform and bare"] = os.getloadavg()[0]
        manifest: dict[str, dict[str, Any]] = {}
        raw_sfn: dict[str, Any] = {}
        for source in () if args.throughput_only else ("baseline", "generator", "prefix"):
            count = settings.prefix_objects if source == "prefix" else settings.manifest_keys
            log(f"manifest memory: {source}, {count:,} keys ...")
            spec = {"source": source, "keys": count, "chunk_size": settings.sfn_chunk_size}
            manifest[source] = run_child("manifest", spec, stack_env, scratch)
        if not args.throughput_only:
            load_1min["manifest"] = os.getloadavg()[0]
            log(f"state machine memory: {settings.sfn_keys:,} missing keys on the local stack ...")
            sfn_spec = {
                "models_dir": str(models_dir),
                "keys": settings.sfn_keys,
                "chunk_size": settings.sfn_chunk_size,
                "max_concurrency": settings.sfn_max_concurrency,
                "poll_s": settings.sfn_poll_s,
                "deadline_s": settings.sfn_deadline_s,
            }
            raw_sfn = run_child("sfn-memory", sfn_spec, stack_env, scratch)
            load_1min["state machine"] = os.getloadavg()[0]
    info["loadavg_end"] = list(os.getloadavg())

    platform = [
        row for model in args.models for row in summarise_platform(model, raw_platform[model], len_of(inputs, model))
    ]
    bare = {model: summarise_bare(model, raw_platform[model]) for model in args.models}
    costs = cost_rows(platform, raw_platform, bare)
    sfn = sfn_summary(raw_sfn) if raw_sfn else {}
    report = {
        "timestamp": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "git_commit": single_bench.git("rev-parse", "--short", "HEAD"),
        "uncommitted_changes_in_measured_code": single_bench.git(
            "status", "--porcelain", "--", *single_bench.MEASURED_PATHS
        ).splitlines(),
        "command": " ".join(["python", "bench/batch.py", *(argv if argv is not None else sys.argv[1:])]),
        "quick": args.quick,
        "machine": info,
        "versions": single_bench.versions(),
        "settings": {**asdict(settings), "predict_batch_memory_mb": memory_mb},
        "inputs": inputs,
        "load_1min_after_phase": load_1min,
        "summary": {
            "throughput": platform,
            "bare": bare,
            "per_image_costs": costs,
            "manifest_memory": manifest,
            "state_machine_memory": sfn,
        },
        "raw": {"platform_and_bare": raw_platform, "state_machine": raw_sfn},
        "duration_s": round(time.perf_counter() - began, 1),
    }
    single_bench.write_report(args.out, report)
    print_report(report, platform, bare, costs, manifest, sfn, args.out)
    return 0


def len_of(inputs: dict[str, dict[str, Any]], model: str) -> int:
    return int(inputs[model]["images"])


def print_report(
    report: dict[str, Any],
    platform: list[dict[str, Any]],
    bare: dict[str, dict[str, dict[str, Any]]],
    costs: list[dict[str, Any]],
    manifest: dict[str, dict[str, Any]],
    sfn: dict[str, Any],
    out: Path,
) -> None:
    print("Batch throughput, local stack vs bare ONNX Runtime (medians)\n")
    print(throughput_table(platform))
    print("\nBare ONNX Runtime loop (medians)\n")
    print(bare_table(bare))
    print("\nPer image on the local stack, each part measured alone (CPU ms per call)\n")
    print(cost_table(costs))
    if manifest:
        print_memory(manifest, sfn)
    print()
    print(f"Machine: {harness.machine_line(report['machine'])}")
    loads = ", ".join(f"{phase} {load:.2f}" for phase, load in report["load_1min_after_phase"].items())
    print(f"1-minute load after each phase: {loads}")
    print(f"Versions: {', '.join(f'{name} {version}' for name, version in report['versions'].items())}")
    print(f"Commit {report['git_commit']}, {report['timestamp']}, {report['duration_s']} s; JSON: {out}")


def print_memory(manifest: dict[str, dict[str, Any]], sfn: dict[str, Any]) -> None:
    print(f"\nwrite_manifest memory, chunk_size {manifest['generator']['chunk_size']}, each in a fresh process\n")
    print(manifest_table(manifest))
    print("\nLocal Step Functions interpreter, one batch of keys naming missing objects\n")
    print(sfn_table(sfn))


if __name__ == "__main__":
    sys.exit(main())
