"""Train the demo shape detector on synthetic images and export it as a single-output YOLO-layout ONNX model.

Data (made here, nothing is downloaded): RGB images of 200 to 480 pixels a side, any aspect, on a textured
background with a few thin distractor lines, holding 1 to 5 filled shapes of three classes (circle, square
turned up to 25 degrees, triangle at any angle) of varied size and colour that overlap a little at most.
The ground-truth box of a shape is the tight box of its drawn pixels.

Model: a small anchor-free detector (stride-8 grid over a 256x256 letterboxed input, with stride-16 and
stride-32 context merged top-down), trained with a quality focal loss on the class scores and a GIoU + L1 loss
on the box sides. The exported graph decodes the boxes itself, so its one output ``output0`` is
``[N, 4 + 3, 1024]``: centre x, centre y, width, height in input pixels, then the three class scores after a
sigmoid (YOLOv8's ``features_first`` layout, no objectness).

Then: the non-maximum suppression IoU and the score threshold are tuned on validation images; the held-out
images are written to ``samples/shapes`` with ``ground_truth.json``; and the exported model is measured on them
(mAP at IoU 0.5) with ONNX Runtime and the reference preprocessing in ``tests/bare_onnx.py``.

Needs torch (the ``train`` extra, a Python with torch 2.13): ``python scripts/train_detection_model.py``.
"""

from __future__ import annotations

import argparse
import colorsys
import io
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from numpy.typing import NDArray
from PIL import Image, ImageDraw
from torch import nn

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from scripts.synthetic_scenes import json_text, png_bytes, replace_samples, textured_background  # noqa: E402
from tests.bare_onnx import BareModel, apply_transforms, decode_yolo  # noqa: E402
from tests.quality import LabelledBox, detection_counts, mean_average_precision  # noqa: E402

MODEL_NAME = "shapes"
MODEL_VERSION = "1"
LABELS = ["circle", "square", "triangle"]
SEED = 0
INPUT_SIZE = 256
STRIDE = 8
GRID = INPUT_SIZE // STRIDE
CENTRE_RADIUS = 2.5  # grid cells around a box centre that may predict it (and lie inside the box)
SIDE_RANGE = (200, 480)
MAX_OVERLAP_IOU = 0.2
MAX_COVERED = 0.3  # of the smaller box, when two shapes overlap
OPSET = 17
SAMPLE_COUNT = 50
VALIDATION_COUNT = 200
NMS_CANDIDATES = (0.3, 0.4, 0.5, 0.6, 0.7)
SCORE_CANDIDATES = tuple(round(value, 2) for value in np.arange(0.05, 0.95, 0.05))
MIN_MAP = 0.8
TRANSFORMS: list[dict[str, Any]] = [
    {"op": "color", "mode": "RGB"},
    {"op": "letterbox", "size": [INPUT_SIZE, INPUT_SIZE], "fill": 114, "align": "center", "resample": "bilinear"},
    {"op": "normalize", "scale": 1 / 255, "mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0]},
    {"op": "layout", "layout": "NCHW"},
]


# --- the synthetic scenes -------------------------------------------------------------------------------------


def shape_outline(kind: str, centre: tuple[float, float], size: float, angle: float) -> list[tuple[float, float]]:
    """Corner points of a square (side ``size``) or an equilateral triangle (circumradius ``size / 2 * 1.15``)."""
    if kind == "square":
        radius, corners, start = size / np.sqrt(2), 4, np.pi / 4
    else:
        radius, corners, start = size / 2 * 1.15, 3, -np.pi / 2
    turns = start + angle + np.arange(corners) * 2 * np.pi / corners
    return [(centre[0] + radius * np.cos(turn), centre[1] + radius * np.sin(turn)) for turn in turns]


def draw_shape(
    draw: ImageDraw.ImageDraw, kind: str, centre: tuple[float, float], size: float, angle: float, fill: Any
) -> None:
    if kind == "circle":
        radius = size / 2
        draw.ellipse([centre[0] - radius, centre[1] - radius, centre[0] + radius, centre[1] + radius], fill=fill)
    else:
        draw.polygon(shape_outline(kind, centre, size, angle), fill=fill)


def contrasting_colour(rng: np.random.Generator, background: NDArray[np.float64]) -> tuple[int, int, int]:
    """A saturated colour at least 100 RGB units away from the background's mean colour."""
    while True:
        red, green, blue = colorsys.hsv_to_rgb(rng.uniform(), rng.uniform(0.5, 1.0), rng.uniform(0.25, 1.0))
        colour = np.array([red, green, blue]) * 255
        if np.linalg.norm(colour - background) >= 100:
            return int(colour[0]), int(colour[1]), int(colour[2])


def overlaps_too_much(box: NDArray[np.float64], others: list[NDArray[np.float64]]) -> bool:
    for other in others:
        width = max(0.0, min(box[2], other[2]) - max(box[0], other[0]))
        height = max(0.0, min(box[3], other[3]) - max(box[1], other[1]))
        shared = width * height
        areas = [(b[2] - b[0]) * (b[3] - b[1]) for b in (box, other)]
        if shared / (sum(areas) - shared) > MAX_OVERLAP_IOU or shared / min(areas) > MAX_COVERED:
            return True
    return False


def drawn_box(kind: str, centre: tuple[float, float], size: float, angle: float) -> NDArray[np.float64]:
    """The tight box of the pixels ``draw_shape`` colours, found by drawing the shape on a small canvas."""
    left, top = int(np.floor(centre[0] - size)), int(np.floor(centre[1] - size))
    side = int(np.ceil(2 * size)) + 2
    footprint = Image.new("L", (side, side), 0)
    draw_shape(ImageDraw.Draw(footprint), kind, (centre[0] - left, centre[1] - top), size, angle, 255)
    rows, cols = np.nonzero(np.asarray(footprint))
    return np.array(
        [cols.min() + left, rows.min() + top, cols.max() + 1 + left, rows.max() + 1 + top], dtype=np.float64
    )


def make_scene(rng: np.random.Generator) -> tuple[Image.Image, list[LabelledBox]]:
    """One image and the tight boxes (``[x1, y1, x2, y2]``, pixel edges) of its shapes."""
    width, height = (int(side) for side in rng.integers(SIDE_RANGE[0], SIDE_RANGE[1] + 1, size=2))
    base = rng.uniform(70, 190) + rng.uniform(-25, 25, size=3)
    pixels = textured_background(rng, height, width, base, amplitude=rng.uniform(10, 30))
    image = Image.fromarray(np.rint(pixels).astype(np.uint8), mode="RGB")
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(0, 4))):
        ends = [(float(rng.uniform(0, width)), float(rng.uniform(0, height))) for _ in range(2)]
        draw.line(ends, fill=contrasting_colour(rng, base), width=int(rng.integers(1, 4)))
    shapes: list[LabelledBox] = []
    boxes: list[NDArray[np.float64]] = []
    wanted = int(rng.integers(1, 6))
    for _ in range(wanted * 30):
        if len(shapes) == wanted:
            break
        kind = LABELS[int(rng.integers(len(LABELS)))]
        size = max(18.0, rng.uniform(0.12, 0.38) * min(width, height))
        margin = size * 0.6
        centre = (float(rng.uniform(margin, width - margin)), float(rng.uniform(margin, height - margin)))
        angle = rng.uniform(-np.pi / 7, np.pi / 7) if kind == "square" else rng.uniform(0, 2 * np.pi)
        box = drawn_box(kind, centre, size, angle)
        if overlaps_too_much(box, boxes):
            continue
        draw_shape(draw, kind, centre, size, angle, contrasting_colour(rng, base))
        boxes.append(box)
        shapes.append(LabelledBox(kind, (float(box[0]), float(box[1]), float(box[2]), float(box[3]))))
    return image, shapes


# --- the network -------------------------------------------------------------------------------------------------


def conv(channels_in: int, channels_out: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(channels_in, channels_out, 3, stride, 1, bias=False), nn.BatchNorm2d(channels_out), nn.SiLU()
    )


class ShapesNet(nn.Module):
    """Stride 2-4-8 stem, stride 16 and 32 context merged back top-down, one head on the stride-8 grid."""

    def __init__(self) -> None:
        super().__init__()
        self.stride8 = nn.Sequential(conv(3, 16, 2), conv(16, 24, 2), conv(24, 32, 2), conv(32, 32))
        self.stride16 = nn.Sequential(conv(32, 48, 2), conv(48, 48))
        self.stride32 = nn.Sequential(conv(48, 64, 2), conv(64, 64))
        self.lateral32 = nn.Conv2d(64, 48, 1)
        self.merge16 = conv(48, 48)
        self.lateral16 = nn.Conv2d(48, 32, 1)
        self.merge8 = conv(32, 32)
        self.head = conv(32, 48)
        self.boxes = nn.Conv2d(48, 4, 1)
        self.classes = nn.Conv2d(48, len(LABELS), 1)
        nn.init.constant_(self.classes.bias, -4.6)  # a prior score of 0.01: few anchors hold a shape

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw box sides ``(N, 4, A)`` (log of left, top, right, bottom in strides) and class logits ``(N, C, A)``."""
        c8 = self.stride8(images)
        c16 = self.stride16(c8)
        c32 = self.stride32(c16)
        p16 = self.merge16(c16 + F.interpolate(self.lateral32(c32), scale_factor=2.0, mode="nearest"))
        p8 = self.merge8(c8 + F.interpolate(self.lateral16(p16), scale_factor=2.0, mode="nearest"))
        features = self.head(p8)
        return self.boxes(features).flatten(2), self.classes(features).flatten(2)


def anchor_points() -> torch.Tensor:
    """``(2, A)`` grid-cell centres in input pixels, x then y, row by row."""
    centres = (torch.arange(GRID, dtype=torch.float32) + 0.5) * STRIDE
    ys, xs = torch.meshgrid(centres, centres, indexing="ij")
    return torch.stack([xs.flatten(), ys.flatten()])


def corner_boxes(raw_sides: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """``(N, 4, A)`` raw sides -> ``(N, 4, A)`` boxes x1, y1, x2, y2 in input pixels."""
    sides = torch.exp(raw_sides.clamp(-6.0, 6.0)) * STRIDE
    return torch.cat([points - sides[:, :2], points + sides[:, 2:]], dim=1)


class ExportedDetector(nn.Module):
    """The network plus decoding: ``[N, 4 + C, A]`` with cx, cy, w, h in input pixels and sigmoid scores."""

    def __init__(self, net: ShapesNet) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("points", anchor_points())

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        raw_sides, logits = self.net(images)
        corners = corner_boxes(raw_sides, self.points)
        centres = (corners[:, :2] + corners[:, 2:]) / 2
        sizes = corners[:, 2:] - corners[:, :2]
        return torch.cat([centres, sizes, torch.sigmoid(logits)], dim=1)


# --- training ----------------------------------------------------------------------------------------------------


def input_boxes(shapes: list[LabelledBox], geometry: Any) -> NDArray[np.float64]:
    """Ground-truth boxes in input pixels (``x_in = x * sx + dx``), shape ``(n, 4)``."""
    (sy, sx), (dy, dx) = geometry.scale, geometry.offset
    boxes = np.array([shape.box for shape in shapes], dtype=np.float64).reshape(-1, 4)
    return boxes * np.array([sx, sy, sx, sy]) + np.array([dx, dy, dx, dy])


def assign(boxes: NDArray[np.float64], classes: list[int]) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
    """Per anchor: the class it must find (-1 for none) and that box; the smallest box wins a shared anchor.

    An anchor is positive for a box when its centre lies inside the box and within ``CENTRE_RADIUS`` cells of
    the box centre; a box too small to hold any anchor centre gets the anchor nearest its centre.
    """
    points = anchor_points().numpy().astype(np.float64)
    target_class = np.full(GRID * GRID, -1, dtype=np.int64)
    target_box = np.zeros((GRID * GRID, 4), dtype=np.float32)
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    for index in np.argsort(-areas, kind="stable"):
        x1, y1, x2, y2 = boxes[index]
        centre_x, centre_y = (x1 + x2) / 2, (y1 + y2) / 2
        inside = (points[0] > x1) & (points[0] < x2) & (points[1] > y1) & (points[1] < y2)
        near = (np.abs(points[0] - centre_x) <= CENTRE_RADIUS * STRIDE) & (
            np.abs(points[1] - centre_y) <= CENTRE_RADIUS * STRIDE
        )
        positive = inside & near
        if not positive.any():
            positive[np.argmin((points[0] - centre_x) ** 2 + (points[1] - centre_y) ** 2)] = True
        target_class[positive] = classes[index]
        target_box[positive] = boxes[index]
    return target_class, target_box


@dataclass(frozen=True)
class TrainingPool:
    """Letterboxed training images kept as the 8-bit pixels, with their boxes in input pixels."""

    pixels: NDArray[np.uint8]  # (n, 3, S, S)
    boxes: list[NDArray[np.float64]]  # (k, 4) each
    classes: list[list[int]]


def make_pool(rng: np.random.Generator, count: int) -> TrainingPool:
    pixels = np.empty((count, 3, INPUT_SIZE, INPUT_SIZE), dtype=np.uint8)
    boxes, classes = [], []
    for index in range(count):
        image, shapes = make_scene(rng)
        array, geometry = apply_transforms(image, TRANSFORMS)
        pixels[index] = np.rint(array * 255)  # normalize is pixel * (1/255): this gives the pixels back exactly
        boxes.append(input_boxes(shapes, geometry))
        classes.append([LABELS.index(shape.label) for shape in shapes])
    return TrainingPool(pixels, boxes, classes)


def training_batch(
    pool: TrainingPool, rng: np.random.Generator, size: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Images ``(B, 3, S, S)`` (randomly mirrored either way), anchor classes ``(B, A)``, anchor boxes ``(B, A, 4)``.

    Mirroring keeps every class what it is: squares stay within 25 degrees, triangles take any angle.
    """
    images, classes, boxes = [], [], []
    for index in rng.integers(len(pool.pixels), size=size):
        pixels, box = pool.pixels[index], pool.boxes[index].copy()
        if rng.uniform() < 0.5:
            pixels, box[:, [0, 2]] = pixels[:, :, ::-1], INPUT_SIZE - box[:, [2, 0]]
        if rng.uniform() < 0.5:
            pixels, box[:, [1, 3]] = pixels[:, ::-1, :], INPUT_SIZE - box[:, [3, 1]]
        target_class, target_box = assign(box, pool.classes[index])
        images.append(pixels.astype(np.float32) * np.float32(1 / 255))
        classes.append(target_class)
        boxes.append(target_box)
    return torch.from_numpy(np.stack(images)), torch.from_numpy(np.stack(classes)), torch.from_numpy(np.stack(boxes))


def giou(predicted: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """IoU and generalised IoU of matching rows of two ``(M, 4)`` corner-box tensors."""
    width = (torch.minimum(predicted[:, 2], target[:, 2]) - torch.maximum(predicted[:, 0], target[:, 0])).clamp(0)
    height = (torch.minimum(predicted[:, 3], target[:, 3]) - torch.maximum(predicted[:, 1], target[:, 1])).clamp(0)
    shared = width * height
    area_predicted = (predicted[:, 2] - predicted[:, 0]) * (predicted[:, 3] - predicted[:, 1])
    area_target = (target[:, 2] - target[:, 0]) * (target[:, 3] - target[:, 1])
    union = area_predicted + area_target - shared + 1e-7
    iou = shared / union
    hull_width = torch.maximum(predicted[:, 2], target[:, 2]) - torch.minimum(predicted[:, 0], target[:, 0])
    hull_height = torch.maximum(predicted[:, 3], target[:, 3]) - torch.minimum(predicted[:, 1], target[:, 1])
    hull = hull_width * hull_height + 1e-7
    return iou, iou - (hull - union) / hull


def detection_loss(
    net: ShapesNet, points: torch.Tensor, images: torch.Tensor, classes: torch.Tensor, boxes: torch.Tensor
) -> torch.Tensor:
    """Quality focal loss on the scores (positive target = IoU of the predicted box) + GIoU + L1 on log sides."""
    raw_sides, logits = net(images)
    positive = classes >= 0  # (B, A)
    count = positive.sum().clamp(min=1).float()
    predicted_boxes = corner_boxes(raw_sides, points).permute(0, 2, 1)[positive]  # (M, 4)
    target_boxes = boxes[positive]
    iou, generalised = giou(predicted_boxes, target_boxes)
    score_target = torch.zeros_like(logits)  # (B, C, A)
    batch_index, anchor_index = positive.nonzero(as_tuple=True)
    score_target[batch_index, classes[positive], anchor_index] = iou.detach().clamp(0.05)
    probabilities = torch.sigmoid(logits)
    focal = F.binary_cross_entropy_with_logits(logits, score_target, reduction="none") * (
        probabilities - score_target
    ).abs().pow(2)
    anchor_xy = points.T.unsqueeze(0).expand(len(images), -1, -1)[positive]  # (M, 2)
    target_sides = torch.cat([anchor_xy - target_boxes[:, :2], target_boxes[:, 2:] - anchor_xy], dim=1)
    log_sides = torch.log(target_sides.clamp(min=1.0) / STRIDE)
    l1 = (raw_sides.permute(0, 2, 1)[positive] - log_sides).abs().sum(dim=1)
    return focal.sum() / count + 2.0 * (1 - generalised).sum() / count + 0.25 * l1.sum() / count


def train(steps: int, batch_size: int, pool: TrainingPool, rng: np.random.Generator) -> ShapesNet:
    net = ShapesNet()
    points = anchor_points()
    optimiser = torch.optim.AdamW(net.parameters(), lr=3e-3, weight_decay=1e-4)
    warmup = max(1, steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimiser,
        lambda step: min(1.0, (step + 1) / warmup) * 0.5 * (1 + np.cos(np.pi * min(step, steps) / steps)),
    )
    net.train()
    started, running = time.monotonic(), 0.0
    for step in range(steps):
        images, classes, boxes = training_batch(pool, rng, batch_size)
        loss = detection_loss(net, points, images, classes, boxes)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        schedule.step()
        running = 0.98 * running + 0.02 * loss.item() if step else loss.item()
        if (step + 1) % 100 == 0 or step + 1 == steps:
            print(f"step {step + 1}/{steps}  loss {running:.3f}  {time.monotonic() - started:.0f} s", flush=True)
    return net.eval()


def export_onnx(net: ShapesNet) -> bytes:
    buffer = io.BytesIO()
    dummy = torch.zeros(1, 3, INPUT_SIZE, INPUT_SIZE)
    torch.onnx.export(
        ExportedDetector(net).eval(),
        (dummy,),
        buffer,
        input_names=["images"],
        output_names=["output0"],
        dynamic_axes={"images": {0: "N"}, "output0": {0: "N"}},
        opset_version=OPSET,
        dynamo=False,
    )
    return finish_onnx(onnx.load_from_string(buffer.getvalue()))


def finish_onnx(model: onnx.ModelProto) -> bytes:
    """Static feature and anchor counts on the output (the exporter leaves them symbolic after its Concat),
    a producer and a description; the graph is checked."""
    features, anchors = model.graph.output[0].type.tensor_type.shape.dim[1:]
    features.Clear()
    features.dim_value = 4 + len(LABELS)
    anchors.Clear()
    anchors.dim_value = GRID * GRID
    model.producer_name = "modelrun scripts/train_detection_model.py"
    model.doc_string = (
        "Synthetic shape detector (circle, square, triangle): 256x256 letterboxed RGB in 0..1, "
        "output0 [N, 7, 1024] = cx, cy, w, h (input pixels), 3 sigmoid class scores."
    )
    onnx.checker.check_model(model, full_check=True)
    return model.SerializeToString()


# --- thresholds, samples, measurement ----------------------------------------------------------------------------


def model_spec(score_threshold: float, iou_threshold: float) -> dict[str, Any]:
    return {
        "name": MODEL_NAME,
        "version": MODEL_VERSION,
        "description": (
            "Detects filled circles, squares and triangles on a textured background (a demo trained on "
            "synthetic images). Any RGB image; it is letterboxed to 256x256."
        ),
        "task": "detection",
        "input": {"name": "images"},
        "transforms": TRANSFORMS,
        "output": {
            "format": "yolo",
            "name": "output0",
            "layout": "features_first",
            "objectness": False,
            "score_threshold": score_threshold,
            "iou_threshold": iou_threshold,
            "max_detections": 100,
            "class_agnostic": False,
        },
        "labels": LABELS,
    }


def raw_outputs(model: BareModel, images: list[Image.Image]) -> list[tuple[NDArray[np.float32], Any]]:
    return [model.run(image) for image in images]


def tune_thresholds(model: BareModel, rng: np.random.Generator) -> tuple[float, float]:
    """The NMS IoU with the best validation mAP (scores down to 0.01), then the score threshold with the best F1."""
    scenes = [make_scene(rng) for _ in range(VALIDATION_COUNT)]
    truths = {str(index): shapes for index, (_, shapes) in enumerate(scenes)}
    outputs = raw_outputs(model, [image for image, _ in scenes])

    def detections(iou_threshold: float) -> dict[str, list[LabelledBox]]:
        spec = {**model.spec["output"], "score_threshold": 0.01, "iou_threshold": iou_threshold}
        return {str(i): decode_yolo(out, spec, LABELS, geometry) for i, (out, geometry) in enumerate(outputs)}

    by_iou = {value: detections(value) for value in NMS_CANDIDATES}
    maps = {value: mean_average_precision(found, truths, LABELS)[0] for value, found in by_iou.items()}
    iou_threshold = max(NMS_CANDIDATES, key=lambda value: (maps[value], -value))
    print("validation mAP@0.5 by NMS IoU: " + ", ".join(f"{value}: {maps[value]:.4f}" for value in NMS_CANDIDATES))
    scores = {}
    for threshold in SCORE_CANDIDATES:
        kept = {image: [d for d in found if d.score >= threshold] for image, found in by_iou[iou_threshold].items()}
        hits, false_alarms, misses = detection_counts(kept, truths)
        scores[threshold] = 2 * hits / max(1, 2 * hits + false_alarms + misses)
    score_threshold = max(SCORE_CANDIDATES, key=lambda value: (scores[value], -value))
    print(
        f"validation F1 at score threshold {score_threshold}: {scores[score_threshold]:.4f} (NMS IoU {iou_threshold})"
    )
    return score_threshold, iou_threshold


def sample_name(index: int) -> str:
    return f"shapes-{index:03d}.png"


def make_samples(rng: np.random.Generator) -> tuple[dict[str, bytes], dict[str, Any]]:
    """Sample PNGs and the ground truth document that travels with them."""
    files: dict[str, bytes] = {}
    images: dict[str, Any] = {}
    for index in range(SAMPLE_COUNT):
        image, shapes = make_scene(rng)
        files[sample_name(index)] = png_bytes(image)
        images[sample_name(index)] = {
            "width": image.width,
            "height": image.height,
            "objects": [{"label": shape.label, "box": [int(value) for value in shape.box]} for shape in shapes],
        }
    document = {
        "task": "detection",
        "labels": LABELS,
        "box_format": "xyxy, original image pixels (pixel edges: a shape covering columns 3..9 has x1 3, x2 10)",
        "images": images,
    }
    return files, document


def ground_truth_boxes(document: dict[str, Any]) -> dict[str, list[LabelledBox]]:
    return {
        name: [LabelledBox(item["label"], tuple(item["box"])) for item in entry["objects"]]
        for name, entry in document["images"].items()
    }


def measure(model_dir: Path, samples_dir: Path) -> tuple[float, dict[str, float]]:
    """mAP@0.5 of the exported model on the written sample files, with the thresholds of its model.json."""
    document = json.loads((samples_dir / "ground_truth.json").read_text(encoding="utf-8"))
    model = BareModel(model_dir)
    predictions = {}
    for name in document["images"]:
        with Image.open(samples_dir / name) as image:
            predictions[name] = model.detect(image)
    return mean_average_precision(predictions, ground_truth_boxes(document), LABELS)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "models", help="models root folder")
    parser.add_argument("--samples", type=Path, default=REPO_ROOT / "samples" / MODEL_NAME, help="sample folder")
    parser.add_argument("--steps", type=int, default=1500, help="training steps")
    parser.add_argument("--pool", type=int, default=3000, help="distinct training images")
    parser.add_argument("--batch", type=int, default=16, help="images per training step")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args(argv)

    torch.manual_seed(SEED)
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)  # denormal floats late in training can slow CPU arithmetic many times over
    train_rng, validation_rng, sample_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(SEED).spawn(3))

    started = time.monotonic()
    pool = make_pool(train_rng, args.pool)
    print(f"made {args.pool} training images in {time.monotonic() - started:.0f} s", flush=True)
    net = train(args.steps, args.batch, pool, train_rng)
    model_dir = args.out / MODEL_NAME / MODEL_VERSION
    model_dir.mkdir(parents=True, exist_ok=True)
    onnx_path = model_dir / "model.onnx"
    onnx_path.write_bytes(export_onnx(net))
    (model_dir / "model.json").write_text(json_text(model_spec(0.25, 0.45)), encoding="utf-8")

    score_threshold, iou_threshold = tune_thresholds(BareModel(model_dir), validation_rng)
    (model_dir / "model.json").write_text(json_text(model_spec(score_threshold, iou_threshold)), encoding="utf-8")

    files, document = make_samples(sample_rng)
    replace_samples(args.samples, files, "shapes-*.png")
    (args.samples / "ground_truth.json").write_text(json_text(document), encoding="utf-8")

    mean_ap, per_class = measure(model_dir, args.samples)
    objects = sum(len(entry["objects"]) for entry in document["images"].values())
    print(f"wrote {onnx_path} ({onnx_path.stat().st_size} bytes) and model.json")
    print(f"wrote {len(files)} sample PNGs ({sum(map(len, files.values()))} bytes, {objects} shapes) to {args.samples}")
    print(f"held-out mAP@0.5 (onnxruntime, model.json thresholds): {mean_ap:.4f}")
    print("held-out AP@0.5 per class: " + ", ".join(f"{label} {value:.4f}" for label, value in per_class.items()))
    if mean_ap < MIN_MAP:
        print(f"mAP below the required {MIN_MAP}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
