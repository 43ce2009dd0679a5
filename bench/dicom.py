"""DICOM benchmark: the predict function's cold start before and after DICOM support, and a DICOM prediction through
the platform against bare pydicom + numpy + ONNX Runtime doing the same work.

1. ``cold``: each run a fresh ``python`` process with the handler's environment (``MODEL_ROOT`` = the measured
   checkout's ``models/``, default model ``digits``) times the import of ``functions/predict/app.py`` (every
   library, ``modelrun``, the catalogue, the default model's session) and then its first ``lambda_handler`` call on
   a PNG (``POST /predictions``, the digits sample). Interpreter start-up is not timed. Two checkouts are measured
   round by round, alternating which goes first, so load from other processes touches both alike: ``--before``
   (e.g. ``git worktree add /tmp/before 766ff9e``) and ``--after`` (default: this checkout). The child also records
   whether pydicom was imported: a PNG cold start must not pay for it.
2. ``dicom``: in one process, ``Predictor.predict`` on a DICOM file (decode, Modality LUT, window, resize,
   normalise, session.run, decode the result) and the same work written directly with pydicom + numpy + Pillow +
   ONNX Runtime (read, rescale, window, resize, normalise, run, argmax), interleaved call by call after a warm-up,
   starting with a different one each round; a third variant adds what the platform's segmentation decoder also
   does with the argmax (the mask back at the original size, per-class counts, the indexed PNG). The ratio of the
   medians is the platform's cost; target <= 1.15. Each call is timed twice: wall clock, and the calling thread's
   CPU time (ONNX Runtime with one intra-op thread computes on the calling thread), which time slices given to other
   processes on a shared machine do not inflate. ``--checkout`` puts another checkout's ``modelrun`` under the
   platform side (the bare side and the workload stay this checkout's), for before/after runs.

Usage::

    python bench/dicom.py cold --before /tmp/before [--after .] [--n 15]
    python bench/dicom.py dicom [--n 300]    # a generated 512x512 CT slice, the cells graph behind a CT window
    python bench/dicom.py dicom --checkout /tmp/before    # the same, the platform side from another checkout
    python bench/dicom.py dicom --model ct --models-dir models --image samples/ct/<file>.dcm   # a real model

Prints a Markdown table; with ``--out`` writes every sample as JSON. See bench/README.md, "DICOM".
"""

from __future__ import annotations

import argparse
import datetime
import io
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import harness

COLD_SAMPLE = Path("samples") / "digits" / "digit-3-0045.png"  # relative to the measured checkout


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def commit_of(checkout: Path) -> str:
    finished = subprocess.run(
        ["git", "-C", str(checkout), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    )
    return finished.stdout.strip() or "unknown"


def child_environment(checkout: Path) -> dict[str, str]:
    """The handler's environment, with the measured checkout's package first on the path (not the venv's copy)."""
    env = harness.handler_environment(checkout / "models", default_model="digits")
    env["PYTHONPATH"] = os.pathsep.join([str(checkout / "layers" / "modelrun" / "python"), str(harness.BENCH)])
    return env


def run_child(kind: str, env: dict[str, str], *options: str) -> dict[str, Any]:
    """One measurement in a fresh interpreter; its stdout (the handler's logs) goes to /dev/null, as cheap a sink
    as Lambda's log pipe."""
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as handle:
        out = Path(handle.name)
    command = [sys.executable, str(Path(__file__).resolve()), kind, "--out", str(out), *options]
    try:
        finished = subprocess.run(
            command, env=env, cwd=harness.REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        if finished.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed ({finished.returncode}):\n{finished.stderr[-4000:]}")
        result: dict[str, Any] = json.loads(out.read_text())
        return result
    finally:
        out.unlink(missing_ok=True)


# -- cold start --------------------------------------------------------------------------------------------------
def child_cold(args: argparse.Namespace) -> dict[str, Any]:
    """Init of a fresh execution environment, then its first request: what a user waits for after a cold start."""
    import importlib.util

    checkout = Path(args.checkout)
    image = (checkout / COLD_SAMPLE).read_bytes()
    event = harness.prediction_event(image, "digits")
    started = time.perf_counter()
    spec = importlib.util.spec_from_file_location(
        f"bench_predict_{uuid.uuid4().hex}", checkout / "functions" / "predict" / "app.py"
    )
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import the predict handler of {checkout}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    initialised = time.perf_counter()
    response = module.lambda_handler(event, harness.BenchContext())
    answered = time.perf_counter()
    if response.get("statusCode") != 200:
        raise RuntimeError(f"the first prediction answered {response.get('statusCode')}: {response.get('body')}")
    import modelrun

    return {
        "init_ms": (initialised - started) * 1000,
        "first_prediction_ms": (answered - initialised) * 1000,
        "total_ms": (answered - started) * 1000,
        "label": json.loads(response["body"])["label"],
        "pydicom_imported": "pydicom" in sys.modules,
        "modelrun_from": str(Path(modelrun.__file__).parent),
    }


def measure_cold(checkouts: dict[str, Path], runs: int) -> dict[str, Any]:
    names = list(checkouts)
    samples: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    for round_index in range(runs):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            checkout = checkouts[name]
            samples[name].append(run_child("child-cold", child_environment(checkout), "--checkout", str(checkout)))
        log(f"cold round {round_index + 1}/{runs}")
    results: dict[str, Any] = {}
    for name, runs_of in samples.items():
        expected = str(checkouts[name] / "layers" / "modelrun" / "python" / "modelrun")
        if any(run["modelrun_from"] != expected for run in runs_of):
            raise RuntimeError(f"{name}: the child imported modelrun from elsewhere than {expected}")
        results[name] = {
            "checkout": str(checkouts[name]),
            "commit": commit_of(checkouts[name]),
            "pydicom_imported": any(run["pydicom_imported"] for run in runs_of),
            **{
                figure: harness.summarise([run[figure] for run in runs_of])
                for figure in ("init_ms", "first_prediction_ms", "total_ms")
            },
        }
    return results


def cold_table(results: dict[str, Any]) -> str:
    lines = [
        "| checkout | commit | N | init p50 (ms) | first PNG prediction p50 (ms) | total p50 (ms) | total max (ms) "
        "| pydicom imported |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for name, result in results.items():
        lines.append(
            f"| {name} | {result['commit']} | {result['total_ms']['n']} | {result['init_ms']['p50_ms']:.1f} "
            f"| {result['first_prediction_ms']['p50_ms']:.2f} | {result['total_ms']['p50_ms']:.1f} "
            f"| {result['total_ms']['max_ms']:.1f} | {'yes' if result['pydicom_imported'] else 'no'} |"
        )
    return "\n".join(lines)


# -- DICOM per image ---------------------------------------------------------------------------------------------
def child_dicom(args: argparse.Namespace) -> dict[str, Any]:
    """``Predictor.predict`` against the bare pipeline on one DICOM file, interleaved call by call."""
    import numpy as np
    import onnxruntime
    import pydicom
    from PIL import Image

    from modelrun.images.decode import Limits
    from modelrun.models.registry import ModelRegistry
    from modelrun.predict import Predictor

    data = Path(args.image).read_bytes()
    registry = ModelRegistry(Path(args.models_dir))
    predictor = Predictor(registry, Limits.from_env(), args.model)
    loaded = registry.get(args.model)
    spec = loaded.spec
    folder = registry.root / args.model / registry.versions(args.model)[-1]
    plan = BarePlan.from_model_json(json.loads((folder / "model.json").read_text()))
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = registry.intra_op_threads
    options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(str(folder / "model.onnx"), options, providers=["CPUExecutionProvider"])
    input_name, output_name = spec.input_name, spec.output.name

    def bare(payload: bytes) -> Any:
        ds = pydicom.dcmread(io.BytesIO(payload))
        values = ds.pixel_array.astype(np.float32)
        values = values * float(getattr(ds, "RescaleSlope", 1)) + float(getattr(ds, "RescaleIntercept", 0))
        # DICOM's linear window (PS3.3 C.11.2.1.2), as the platform applies it.
        c, w = plan.center, plan.width
        values = np.clip(((values - (c - 0.5)) / (w - 1) + 0.5) * 255.0, 0.0, 255.0)
        if ds.PhotometricInterpretation == "MONOCHROME1":
            values = 255.0 - values
        resized = np.asarray(Image.fromarray(values, mode="F").resize(plan.size_wh, Image.Resampling.BILINEAR))
        tensor = ((resized * plan.scale - plan.mean) / plan.std).astype(np.float32)[np.newaxis, np.newaxis]
        scores = session.run([output_name], {input_name: tensor})[0]
        return scores[0].argmax(axis=0), ds

    def bare_with_outputs(payload: bytes) -> Any:
        # What the platform's segmentation decoder also does with the argmax: the mask back at the original size,
        # each class's pixel count, and the mask as an indexed PNG.
        classes, ds = bare(payload)
        mask = Image.fromarray(classes.astype(np.uint8), mode="L").resize(
            (int(ds.Columns), int(ds.Rows)), Image.Resampling.NEAREST
        )
        counts = np.bincount(np.asarray(mask).ravel(), minlength=len(spec.labels))
        mask = mask.convert("P")
        buffer = io.BytesIO()
        mask.save(buffer, format="PNG")
        return counts, buffer.getvalue()

    def platform(payload: bytes) -> Any:
        return predictor.predict(payload, model=args.model)

    import modelrun

    variants: dict[str, Callable[[bytes], Any]] = {
        "platform": platform,
        "bare": bare,
        "bare_with_outputs": bare_with_outputs,
    }
    for run in variants.values():
        for _ in range(args.warmup):
            run(data)
    names = list(variants)
    samples: dict[str, list[float]] = {name: [] for name in names}
    cpu: dict[str, list[float]] = {name: [] for name in names}
    for round_index in range(args.n):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            started, started_cpu = time.perf_counter_ns(), time.thread_time_ns()
            variants[name](data)
            cpu[name].append((time.thread_time_ns() - started_cpu) / 1e6)
            samples[name].append((time.perf_counter_ns() - started) / 1e6)

    def paired(figures: dict[str, list[float]]) -> dict[str, list[float]]:
        return {
            name: [mine / theirs for mine, theirs in zip(figures["platform"], figures[name], strict=True)]
            for name in ("bare", "bare_with_outputs")
        }

    return {
        "samples_ms": samples,
        "cpu_samples_ms": cpu,
        "paired_ratios": paired(samples),
        "cpu_paired_ratios": paired(cpu),
        "intra_op_threads": registry.intra_op_threads,
        "modelrun_from": str(Path(modelrun.__file__).parent),
    }


class BarePlan:
    """The numbers the bare pipeline needs, read from the model's model.json (window, input size, normalisation)."""

    def __init__(self, center: float, width: float, size_hw: list[int], scale: float, mean: float, std: float):
        self.center, self.width = center, width
        self.size_wh = (size_hw[1], size_hw[0])
        self.scale, self.mean, self.std = scale, mean, std

    @classmethod
    def from_model_json(cls, document: dict[str, Any]) -> BarePlan:
        steps = {step["op"]: step for step in document.get("transforms") or []}
        window, resize, normalize = steps["window"], steps["resize"], steps.get("normalize", {})
        return cls(
            center=float(window["center"]),
            width=float(window["width"]),
            size_hw=list(resize["size"]),
            scale=float(normalize.get("scale", 1 / 255)),
            mean=float((normalize.get("mean") or [0.0])[0]),
            std=float((normalize.get("std") or [1.0])[0]),
        )


CT_WINDOW: Final = (40, 400)
CT_SIDE: Final = 512


def make_ct_workload(folder: Path) -> tuple[Path, Path]:
    """A windowed segmentation model (the cells demo's graph, 256x256 input, behind a CT soft-tissue window) and a
    512x512 CT slice of 16-bit stored values with a rescale intercept: the model folder root and the file."""
    sys.path.insert(0, str(harness.REPO))
    from tests.dicomfactory import ct_slice, dicom_bytes

    model = folder / "models" / "ct-bench" / "1"
    model.mkdir(parents=True)
    (model / "model.onnx").write_bytes((harness.REPO / "models" / "cells" / "1" / "model.onnx").read_bytes())
    spec = json.loads((harness.REPO / "models" / "cells" / "1" / "model.json").read_text())
    spec.update(name="ct-bench", description="bench: the cells graph behind a CT window")
    spec["transforms"] = [
        {"op": "color", "mode": "L"},
        {"op": "window", "center": CT_WINDOW[0], "width": CT_WINDOW[1]},
        {"op": "resize", "size": [256, 256], "resample": "bilinear"},
        {"op": "normalize", "scale": 1 / 255, "mean": [0.0], "std": [1.0]},
        {"op": "layout", "layout": "NCHW"},
    ]
    (model / "model.json").write_text(json.dumps(spec, indent=2))
    image = folder / "ct-512.dcm"
    image.write_bytes(dicom_bytes(ct_slice(CT_SIDE), intercept=-1024, window=(400, 1500)))
    return folder / "models", image


def measure_dicom(args: argparse.Namespace) -> dict[str, Any]:
    if args.image is None:
        scratch = Path(tempfile.mkdtemp(prefix="modelrun-bench-dicom-"))
        models_dir, image = make_ct_workload(scratch)
        args.models_dir, args.image, args.model = str(models_dir), str(image), "ct-bench"
    checkout = Path(args.checkout).resolve()
    env = child_environment(checkout)
    env["MODEL_ROOT"] = str(Path(args.models_dir).resolve())
    env["DEFAULT_MODEL"] = args.model
    result = run_child(
        "child-dicom",
        env,
        *("--model", args.model, "--models-dir", str(Path(args.models_dir).resolve())),
        *("--image", str(Path(args.image).resolve()), "--n", str(args.n), "--warmup", str(args.warmup)),
    )
    expected = checkout / "layers" / "modelrun" / "python" / "modelrun"
    if result["modelrun_from"] != str(expected):
        raise RuntimeError(f"the child imported modelrun from {result['modelrun_from']}, not {expected}")
    summary = {name: harness.summarise(values) for name, values in result["samples_ms"].items()}
    cpu = {name: harness.summarise(values) for name, values in result["cpu_samples_ms"].items()}
    ratios, cpu_ratios = result["paired_ratios"], result["cpu_paired_ratios"]
    return {
        **summary,
        "cpu": cpu,
        "ratio_of_medians": {name: summary["platform"]["p50_ms"] / summary[name]["p50_ms"] for name in ratios},
        "paired_ratio_p50": {name: harness.percentile(values, 50) for name, values in ratios.items()},
        "paired_ratios": {name: [round(value, 4) for value in values] for name, values in ratios.items()},
        "cpu_ratio_of_medians": {name: cpu["platform"]["p50_ms"] / cpu[name]["p50_ms"] for name in cpu_ratios},
        "cpu_paired_ratio_p50": {name: harness.percentile(values, 50) for name, values in cpu_ratios.items()},
        "cpu_paired_ratios": {name: [round(value, 4) for value in values] for name, values in cpu_ratios.items()},
        "intra_op_threads": result["intra_op_threads"],
        "platform_checkout": str(checkout),
        "platform_commit": commit_of(checkout),
    }


def dicom_table(result: dict[str, Any]) -> str:
    lines = [
        f"Platform side: modelrun of {result['platform_commit']} ({result['platform_checkout']})",
        "",
        "| variant | N | p50 (ms) | p90 (ms) | mean (ms) | CPU p50 (ms) | CPU mean (ms) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, label in (
        ("platform", "Predictor.predict (DICOM bytes)"),
        ("bare", "bare pydicom+numpy+ORT to the argmax"),
        ("bare_with_outputs", "bare, plus mask at original size, counts, PNG"),
    ):
        figures, cpu = result[name], result["cpu"][name]
        lines.append(
            f"| {label} | {figures['n']} | {figures['p50_ms']:.3f} | {figures['p90_ms']:.3f} "
            f"| {figures['mean_ms']:.3f} | {cpu['p50_ms']:.3f} | {cpu['mean_ms']:.3f} |"
        )
    lines.append("")
    for name in ("bare", "bare_with_outputs"):
        lines.append(
            f"platform / {name}: wall {result['ratio_of_medians'][name]:.3f}x (ratio of medians), "
            f"{result['paired_ratio_p50'][name]:.3f}x (median of paired ratios); CPU "
            f"{result['cpu_ratio_of_medians'][name]:.3f}x, {result['cpu_paired_ratio_p50'][name]:.3f}x; "
            "target <= 1.15x"
        )
    return "\n".join(lines)


# -- main --------------------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    cold = commands.add_parser("cold", help="cold start before and after, fresh processes")
    cold.add_argument("--before", type=Path, required=True, help="the checkout to compare with (e.g. 766ff9e)")
    cold.add_argument("--after", type=Path, default=harness.REPO, help="default: this checkout")
    cold.add_argument("--n", type=int, default=15)
    dicom = commands.add_parser("dicom", help="a DICOM prediction: platform vs bare, interleaved")
    dicom.add_argument("--model", default="ct-bench")
    dicom.add_argument("--models-dir", default=str(harness.REPO / "models"))
    dicom.add_argument("--image", help="a DICOM file (default: a generated 512x512 CT slice and ct-bench model)")
    dicom.add_argument("--n", type=int, default=300)
    dicom.add_argument("--warmup", type=int, default=20)
    dicom.add_argument(
        "--checkout", type=Path, default=harness.REPO, help="whose modelrun the platform side runs (default: this one)"
    )
    for command in (cold, dicom):
        command.add_argument("--out", type=Path, help="JSON result file")
    child = commands.add_parser("child-cold")
    child.add_argument("--checkout", required=True)
    child.add_argument("--out", type=Path, required=True)
    child_d = commands.add_parser("child-dicom")
    for option in ("--model", "--models-dir", "--image"):
        child_d.add_argument(option, required=True)
    child_d.add_argument("--n", type=int, required=True)
    child_d.add_argument("--warmup", type=int, required=True)
    child_d.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)

    if args.command in ("child-cold", "child-dicom"):
        result = child_cold(args) if args.command == "child-cold" else child_dicom(args)
        harness.write_json(args.out, result)
        return 0
    info = harness.machine()
    if args.command == "cold":
        checkouts = {"before": args.before.resolve(), "after": args.after.resolve()}
        results = measure_cold(checkouts, args.n)
        text = cold_table(results)
    else:
        results = measure_dicom(args)
        text = dicom_table(results)
    info["loadavg_end"] = list(os.getloadavg())
    report = {
        "timestamp": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "git_commit": commit_of(harness.REPO),
        "command": " ".join(["python", "bench/dicom.py", *(argv if argv is not None else sys.argv[1:])]),
        "machine": info,
        "results": results,
    }
    if args.out is not None:
        harness.write_json(args.out, report)
    print(text)
    print()
    print(f"Machine: {harness.machine_line(info)}")
    print(f"Commit {report['git_commit']}, {report['timestamp']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
