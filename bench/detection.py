"""Per-image latency of the detection demo: the platform's prediction against bare ONNX Runtime.

The model is ``models/shapes/1`` (YOLO, output ``[N, 7, 1024]`` features first, letterbox to 256x256 with fill 114);
the inputs are the committed PNGs in ``samples/shapes/``. Two sides, loaded once in this process:

- platform: ``Predictor.predict(png, model="shapes")``, as ``POST /predictions`` calls it: registry lookup, defensive
  decode (``modelrun.images.decode``), the model's transforms, ``session.run``, the detection decoder (threshold,
  mapping onto the original image, NMS), ids and timings;
- bare: Pillow decode, the same letterbox and normalisation written directly in numpy/Pillow for this model,
  ``session.run`` on its own session with the platform's session options, and a numpy YOLO decode with per-class
  greedy NMS, boxes mapped back onto the original image.

First both sides must agree on every sample (same labels in the same order, boxes within 0.5 px, scores within 1e-4),
else the run fails. Then each round times every image once on each side, the two calls back to back, which one goes
first alternating by image and by round, so drift and a neighbour's burst of load fall on both sides alike. A
separate, shorter pass times the stages of both sides (decode, transforms, run, decode outputs).

Usage: python bench/detection.py [--quick] [--rounds 20] [--out bench/results/detection-latest.json]
"""

from __future__ import annotations

import argparse
import datetime
import gc
import hashlib
import io
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import harness
from harness import percentile, summarise

# The worktree's own package, whatever the virtualenv's editable install points at.
sys.path.insert(0, str(harness.REPO / "layers" / "modelrun" / "python"))
# The predict function's memory (template.yaml's Globals): the registry then gives ONNX Runtime 1 intra-op thread.
os.environ["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"] = str(harness.MEMORY_MB)

import numpy as np
import onnxruntime as ort
from PIL import Image

MODEL: Final = "shapes"
MODELS_ROOT: Final = harness.REPO / "models"
SAMPLES: Final = harness.REPO / "samples" / "shapes"
DEFAULT_OUT: Final = harness.BENCH / "results" / "detection-latest.json"
TARGET_RATIO: Final = 1.15
BOX_TOLERANCE_PX: Final = 0.5
SCORE_TOLERANCE: Final = 1e-4
VERSIONED: Final = ("onnxruntime", "numpy", "pillow")
MEASURED_PATHS: Final = ("layers", "bench/detection.py")


@dataclass(frozen=True)
class Found:
    """One detection, in the original image's pixels."""

    label: str
    score: float
    box: tuple[float, float, float, float]


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------------------------------------------
# Bare side: Pillow + numpy + ONNX Runtime, nothing from modelrun
# ----------------------------------------------------------------------------------------------------------------


class BareDetector:
    """The shapes model run directly: model.json read by hand, the letterbox in Pillow, the rest in numpy."""

    def __init__(self, folder: Path, intra_op_threads: int) -> None:
        spec = json.loads((folder / "model.json").read_text(encoding="utf-8"))
        steps = {step["op"]: step for step in spec["transforms"]}
        if set(steps) != {"color", "letterbox", "normalize", "layout"} or steps["color"]["mode"] != "RGB":
            raise ValueError(f"{folder}: this bare pipeline is written for RGB, letterbox, normalize, layout")
        letterbox, normalize, output = steps["letterbox"], steps["normalize"], spec["output"]
        if steps["layout"]["layout"] != "NCHW" or letterbox.get("align", "center") != "center":
            raise ValueError(f"{folder}: this bare pipeline is written for NCHW and centred padding")
        if output["format"] != "yolo" or output["layout"] != "features_first" or output.get("objectness"):
            raise ValueError(f"{folder}: this bare pipeline is written for YOLO features_first without objectness")
        if output.get("class_agnostic", False) or letterbox.get("resample", "bilinear") != "bilinear":
            raise ValueError(f"{folder}: this bare pipeline is written for per-class NMS and bilinear resizing")
        self.height, self.width = letterbox["size"]
        self.fill = (int(letterbox.get("fill", 114)),) * 3
        self.scale_up = bool(letterbox.get("scale_up", True))
        self.scale = np.float32(normalize.get("scale", 1.0))
        self.mean = np.asarray(normalize.get("mean", [0.0]), dtype=np.float32).reshape(-1, 1, 1)
        self.std = np.asarray(normalize.get("std", [1.0]), dtype=np.float32).reshape(-1, 1, 1)
        self.labels: list[str] = spec["labels"]
        self.score_threshold = float(output.get("score_threshold", 0.25))
        self.iou_threshold = float(output.get("iou_threshold", 0.45))
        self.max_detections = int(output.get("max_detections", 100))
        self.input_name: str = spec["input"]["name"]
        self.output_name: str = output["name"]
        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(
            str(folder / "model.onnx"), sess_options=options, providers=["CPUExecutionProvider"]
        )

    def decode(self, data: bytes) -> Image.Image:
        image = Image.open(io.BytesIO(data))
        image.load()
        return image if image.mode == "RGB" else image.convert("RGB")

    def transform(self, image: Image.Image) -> tuple[np.ndarray, tuple[float, float, float, float]]:
        """The ``[1, 3, H, W]`` float32 input and ``(sx, sy, dx, dy)``: ``x_input = x * sx + dx``."""
        width, height = image.size
        ratio = min(self.height / height, self.width / width)
        if not self.scale_up:
            ratio = min(ratio, 1.0)
        new_width, new_height = max(1, round(width * ratio)), max(1, round(height * ratio))
        if (new_width, new_height) != (width, height):
            image = image.resize((new_width, new_height), Image.Resampling.BILINEAR)
        left = round((self.width - new_width) / 2 - 0.1)
        top = round((self.height - new_height) / 2 - 0.1)
        canvas = Image.new("RGB", (self.width, self.height), self.fill)
        canvas.paste(image, (left, top))
        # Channels first, then per-channel arithmetic on whole planes (fast, unlike a length-3 last axis).
        planes = np.multiply(np.asarray(canvas).transpose(2, 0, 1), self.scale, dtype=np.float32, order="C")
        planes -= self.mean
        planes /= self.std
        tensor = planes[np.newaxis]
        return tensor, (new_width / width, new_height / height, float(left), float(top))

    def run(self, tensor: np.ndarray) -> np.ndarray:
        (output,) = self.session.run([self.output_name], {self.input_name: tensor})
        return np.asarray(output[0])

    def detections(
        self, output: np.ndarray, mapping: tuple[float, float, float, float], size: tuple[int, int]
    ) -> list[Found]:
        """``[4 + C, A]`` -> detections best first: threshold, map back and clip, per-class NMS, cap."""
        rows = output.T
        classes = np.argmax(rows[:, 4:], axis=1)
        scores = rows[np.arange(len(rows)), 4 + classes]
        keep = scores >= self.score_threshold
        rows, classes, scores = rows[keep].astype(np.float64), classes[keep], scores[keep].astype(np.float64)
        half_w, half_h = rows[:, 2] / 2, rows[:, 3] / 2
        boxes = np.stack([rows[:, 0] - half_w, rows[:, 1] - half_h, rows[:, 0] + half_w, rows[:, 1] + half_h], 1)
        sx, sy, dx, dy = mapping
        width, height = size
        original = np.empty_like(boxes)
        original[:, 0::2] = np.clip((boxes[:, 0::2] - dx) / sx, 0.0, width)
        original[:, 1::2] = np.clip((boxes[:, 1::2] - dy) / sy, 0.0, height)
        visible = (original[:, 2] > original[:, 0]) & (original[:, 3] > original[:, 1])
        boxes, original, classes, scores = boxes[visible], original[visible], classes[visible], scores[visible]
        kept: list[int] = []
        for label in np.unique(classes):
            members = np.flatnonzero(classes == label)
            kept.extend(members[greedy_nms(boxes[members], scores[members], self.iou_threshold)].tolist())
        kept.sort(key=lambda index: (-scores[index], index))
        return [
            Found(self.labels[classes[index]], float(scores[index]), tuple(original[index].tolist()))
            for index in kept[: self.max_detections]
        ]

    def detect(self, data: bytes) -> list[Found]:
        image = self.decode(data)
        tensor, mapping = self.transform(image)
        return self.detections(self.run(tensor), mapping, image.size)


def greedy_nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> list[int]:
    """Indices kept, best first: each box suppresses the lower-scored ones overlapping it by more than the threshold."""
    order = np.argsort(-scores, kind="stable")
    x1, y1, x2, y2 = boxes.T
    areas = (x2 - x1).clip(0) * (y2 - y1).clip(0)
    kept: list[int] = []
    while order.size:
        best, rest = order[0], order[1:]
        kept.append(int(best))
        inter = (np.minimum(x2[best], x2[rest]) - np.maximum(x1[best], x1[rest])).clip(0) * (
            np.minimum(y2[best], y2[rest]) - np.maximum(y1[best], y1[rest])
        ).clip(0)
        union = areas[best] + areas[rest] - inter
        iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
        order = rest[iou <= iou_threshold]
    return kept


# ----------------------------------------------------------------------------------------------------------------
# Platform side
# ----------------------------------------------------------------------------------------------------------------


class PlatformSide:
    """The registry, the predictor and the loaded model, as the predict function holds them."""

    def __init__(self) -> None:
        from modelrun.images.decode import Limits, decode_image
        from modelrun.models.registry import ModelRegistry
        from modelrun.predict import Predictor

        self.registry = ModelRegistry(MODELS_ROOT)
        self.limits = Limits.from_env({})
        self.predictor = Predictor(self.registry, self.limits, default_model=MODEL)
        self.loaded = self.registry.get(MODEL)
        self.decode_image = decode_image

    def predict(self, data: bytes) -> dict[str, Any]:
        return self.predictor.predict(data, model=MODEL)

    def detect(self, data: bytes) -> list[Found]:
        return [Found(d["label"], d["score"], tuple(d["box"])) for d in self.predict(data)["detections"]]


# ----------------------------------------------------------------------------------------------------------------
# Agreement and timing
# ----------------------------------------------------------------------------------------------------------------


def compare(name: str, platform_found: Sequence[Found], bare_found: Sequence[Found]) -> list[str]:
    """What differs between the two sides' detections of one image (empty when they agree)."""
    if len(platform_found) != len(bare_found):
        return [f"{name}: platform found {len(platform_found)} detections, bare {len(bare_found)}"]
    problems = []
    for rank, (ours, theirs) in enumerate(zip(platform_found, bare_found, strict=True)):
        box_gap = max(abs(a - b) for a, b in zip(ours.box, theirs.box, strict=True))
        if ours.label != theirs.label or box_gap > BOX_TOLERANCE_PX or abs(ours.score - theirs.score) > SCORE_TOLERANCE:
            problems.append(f"{name} #{rank}: platform {ours}, bare {theirs}")
    return problems


def check_agreement(platform_side: PlatformSide, bare: BareDetector, images: dict[str, bytes]) -> dict[str, Any]:
    problems: list[str] = []
    counts = []
    worst_box = worst_score = 0.0
    for name, data in images.items():
        ours, theirs = platform_side.detect(data), bare.detect(data)
        problems.extend(compare(name, ours, theirs))
        counts.append(len(ours))
        for a, b in zip(ours, theirs, strict=False):
            worst_box = max(worst_box, *(abs(x - y) for x, y in zip(a.box, b.box, strict=True)))
            worst_score = max(worst_score, abs(a.score - b.score))
    if problems:
        raise SystemExit("the platform and the bare pipeline disagree:\n" + "\n".join(problems[:20]))
    return {
        "images": len(images),
        "detections": sum(counts),
        "detections_per_image": {"min": min(counts), "max": max(counts)},
        "max_box_difference_px": round(worst_box, 6),
        "max_score_difference": round(worst_score, 9),
    }


def timed(call: Callable[[bytes], object], data: bytes) -> float:
    started = time.perf_counter()
    call(data)
    return (time.perf_counter() - started) * 1000


def measure_paired(
    platform_side: PlatformSide, bare: BareDetector, images: list[bytes], rounds: int
) -> tuple[list[float], list[float], list[float], list[float]]:
    """Per-call milliseconds of each side, paired, plus each round's ratio of summed times and its 1-minute load."""
    ours: list[float] = []
    theirs: list[float] = []
    round_ratios: list[float] = []
    round_loads: list[float] = []
    for round_index in range(rounds):
        round_ours = round_theirs = 0.0
        for index, data in enumerate(images):
            if (round_index + index) % 2 == 0:
                a = timed(platform_side.predict, data)
                b = timed(bare.detect, data)
            else:
                b = timed(bare.detect, data)
                a = timed(platform_side.predict, data)
            ours.append(a)
            theirs.append(b)
            round_ours += a
            round_theirs += b
        round_ratios.append(round_ours / round_theirs)
        round_loads.append(os.getloadavg()[0])
        log(f"round {round_index + 1}/{rounds}: ratio {round_ratios[-1]:.3f}, load {round_loads[-1]:.2f}")
    return ours, theirs, round_ratios, round_loads


def platform_stages(side: PlatformSide, data: bytes) -> dict[str, float]:
    """The platform's steps one by one, as ``Predictor.predict`` chains them (without its lookup and ids)."""
    loaded = side.loaded
    t0 = time.perf_counter()
    image = side.decode_image(data, side.limits)
    t1 = time.perf_counter()
    feeds, geometry = loaded.prepare(image)
    t2 = time.perf_counter()
    (outputs,) = loaded.infer([feeds])
    t3 = time.perf_counter()
    loaded.decode(outputs, geometry)
    t4 = time.perf_counter()
    return _stage_ms(t0, t1, t2, t3, t4)


def bare_stages(bare: BareDetector, data: bytes) -> dict[str, float]:
    t0 = time.perf_counter()
    image = bare.decode(data)
    t1 = time.perf_counter()
    tensor, mapping = bare.transform(image)
    t2 = time.perf_counter()
    output = bare.run(tensor)
    t3 = time.perf_counter()
    bare.detections(output, mapping, image.size)
    t4 = time.perf_counter()
    return _stage_ms(t0, t1, t2, t3, t4)


STAGES: Final = ("decode", "transforms", "run", "decode_outputs")


def _stage_ms(*marks: float) -> dict[str, float]:
    return {stage: (end - start) * 1000 for stage, start, end in zip(STAGES, marks, marks[1:], strict=False)}


def measure_stages(
    platform_side: PlatformSide, bare: BareDetector, images: list[bytes], rounds: int
) -> dict[str, dict[str, dict[str, float]]]:
    samples: dict[str, dict[str, list[float]]] = {
        side: {stage: [] for stage in STAGES} for side in ("platform", "bare")
    }
    for round_index in range(rounds):
        for index, data in enumerate(images):
            pair = [("platform", lambda d: platform_stages(platform_side, d)), ("bare", lambda d: bare_stages(bare, d))]
            if (round_index + index) % 2:
                pair.reverse()
            for side, call in pair:
                for stage, value in call(data).items():
                    samples[side][stage].append(value)
    return {
        side: {
            stage: {"p50_ms": round(percentile(values, 50), 3), "mean_ms": round(statistics.fmean(values), 3)}
            for stage, values in stages.items()
        }
        for side, stages in samples.items()
    }


# ----------------------------------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------------------------------


def git(*args: str) -> str:
    import subprocess

    finished = subprocess.run(["git", *args], cwd=harness.REPO, capture_output=True, text=True, check=False)
    return finished.stdout.strip() if finished.returncode == 0 else ""


def versions() -> dict[str, str]:
    import importlib.metadata

    found = {"python": platform.python_version()}
    for name in VERSIONED:
        found[name] = importlib.metadata.version(name)
    return found


def shown_path(path: Path) -> str:
    """Relative to the repository when inside it (the package measured may be put first on sys.path)."""
    return str(path.relative_to(harness.REPO) if path.is_relative_to(harness.REPO) else path)


def stats(values: list[float]) -> dict[str, Any]:
    return summarise(values)


def table(report: dict[str, Any]) -> str:
    platform_stats, bare_stats = report["results"]["platform"], report["results"]["bare"]
    ratio = report["results"]["ratio"]
    lines = [
        "| per image (ms) | N | p50 | p90 | mean |",
        "|---|---:|---:|---:|---:|",
        *(
            f"| {label} | {figures['n']} | {figures['p50_ms']:.2f} | {figures['p90_ms']:.2f} "
            f"| {figures['mean_ms']:.2f} |"
            for label, figures in (
                ("platform: Predictor.predict", platform_stats),
                ("bare ONNX Runtime + numpy", bare_stats),
            )
        ),
        f"| ratio platform / bare | - | {ratio['p50']:.3f} | {ratio['p90']:.3f} | {ratio['mean']:.3f} |",
    ]
    rounds = ratio["per_round"]
    lines.append("")
    lines.append(
        f"Per-round ratio of summed times over {rounds['n']} rounds: median {rounds['p50']:.3f}, "
        f"min {rounds['min']:.3f}, max {rounds['max']:.3f}; paired per-image ratio p50 {ratio['paired_p50']:.3f}"
        f" (target at most {TARGET_RATIO})"
    )
    stages = report["results"]["stages"]
    lines.append("")
    lines.append("| stage, p50 (ms) | " + " | ".join(STAGES) + " |")
    lines.append("|---|" + "---:|" * len(STAGES))
    for side in ("platform", "bare"):
        lines.append(f"| {side} | " + " | ".join(f"{stages[side][stage]['p50_ms']:.3f}" for stage in STAGES) + " |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 rounds: a smoke run of a few seconds")
    parser.add_argument("--rounds", type=int, default=20, help="rounds over every sample (default 20)")
    parser.add_argument("--stage-rounds", type=int, default=5, help="rounds of the stage breakdown (default 5)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON result file")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.stage_rounds = 3, 1
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    began = time.perf_counter()
    info = harness.machine()
    paths = sorted(SAMPLES.glob("*.png"))
    images = {path.name: path.read_bytes() for path in paths}
    log(f"loading both sides; {len(images)} samples from {SAMPLES.relative_to(harness.REPO)}")
    platform_side = PlatformSide()
    import modelrun

    threads = platform_side.registry.intra_op_threads
    bare = BareDetector(MODELS_ROOT / MODEL / platform_side.loaded.spec.version, intra_op_threads=threads)
    agreement = check_agreement(platform_side, bare, images)
    log(f"both sides agree on {agreement['images']} images ({agreement['detections']} detections)")
    data = list(images.values())
    for _ in range(2):  # warm-up: caches, allocator, ONNX Runtime's first runs
        for item in data:
            platform_side.predict(item)
            bare.detect(item)
    gc.collect()
    ours, theirs, round_ratios, round_loads = measure_paired(platform_side, bare, data, args.rounds)
    log(f"stage breakdown, {args.stage_rounds} rounds ...")
    stages = measure_stages(platform_side, bare, data, args.stage_rounds)
    paired = [a / b for a, b in zip(ours, theirs, strict=True)]
    platform_stats, bare_stats = stats(ours), stats(theirs)
    info["loadavg_end"] = list(os.getloadavg())
    report = {
        "timestamp": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "git_commit": git("rev-parse", "--short", "HEAD"),
        "uncommitted_changes_in_measured_code": git("status", "--porcelain", "--", *MEASURED_PATHS).splitlines(),
        "command": " ".join(["python", "bench/detection.py", *(argv if argv is not None else sys.argv[1:])]),
        "modelrun_package": shown_path(Path(modelrun.__file__).parent),
        "machine": info,
        "versions": versions(),
        "settings": {
            "rounds": args.rounds,
            "stage_rounds": args.stage_rounds,
            "warmup_passes": 2,
            "intra_op_threads": threads,
            "inter_op_threads": 1,
            "memory_mb": harness.MEMORY_MB,
            "target_ratio": TARGET_RATIO,
        },
        "inputs": {
            "model": f"models/{MODEL}/{platform_side.loaded.spec.version}",
            "images": [
                {"file": name, "bytes": len(blob), "sha256": hashlib.sha256(blob).hexdigest()}
                for name, blob in images.items()
            ],
            "sizes_px": sorted({Image.open(io.BytesIO(blob)).size for blob in data}),
        },
        "agreement": agreement,
        "results": {
            "platform": platform_stats,
            "bare": bare_stats,
            "ratio": {
                "p50": round(platform_stats["p50_ms"] / bare_stats["p50_ms"], 4),
                "p90": round(platform_stats["p90_ms"] / bare_stats["p90_ms"], 4),
                "mean": round(platform_stats["mean_ms"] / bare_stats["mean_ms"], 4),
                "paired_p50": round(percentile(paired, 50), 4),
                "per_round": {
                    "n": len(round_ratios),
                    "p50": round(percentile(round_ratios, 50), 4),
                    "min": round(min(round_ratios), 4),
                    "max": round(max(round_ratios), 4),
                    "values": [round(value, 4) for value in round_ratios],
                    "load_1min": round_loads,
                },
            },
            "stages": stages,
        },
        "duration_s": round(time.perf_counter() - began, 1),
    }
    partial = args.out.with_name(args.out.name + ".tmp")
    harness.write_json(partial, report)
    partial.replace(args.out)
    print(table(report))
    print()
    print(f"Machine: {harness.machine_line(info)}")
    print(f"Versions: {', '.join(f'{name} {version}' for name, version in report['versions'].items())}")
    print(f"Commit {report['git_commit']}, {report['timestamp']}, {report['duration_s']} s; JSON: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
