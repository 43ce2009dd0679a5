"""Train the demo cell segmenter on synthetic greyscale images and export it as an ONNX model of any input size.

Data (made here, nothing is downloaded): greyscale images of 200 to 480 pixels a side, any aspect, showing
"cells" (bright ellipses, each with a darker "nucleus" ellipse inside) and "debris" (dark irregular blobs)
on a textured background. Classes: 0 background, 1 cell, 2 nucleus, 3 debris.

Model: a small U-Net-like network (four stride-2 stages, additive skips on the way up) whose class scores are
computed at half the input resolution and upsampled bilinearly inside the graph. It is fully convolutional:
the exported graph has a symbolic batch, height and width (both multiples of 32), and its one output ``scores``
is ``[N, 4, H, W]``, the class scores (logits) for every input pixel. The platform sizes the input with
``resize longer 256`` and ``pad_to_multiple 32`` (padding 0 on the right and bottom).

Then: the held-out images are written to ``samples/cells`` with one indexed ground-truth mask PNG each, and
the exported model is measured on them (mean IoU over classes, at the original image size) with ONNX Runtime
and the reference preprocessing in ``tests/bare_onnx.py``.

Needs torch (the ``train`` extra, a Python with torch 2.13): ``python scripts/train_segmentation_model.py``.
"""

from __future__ import annotations

import argparse
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
from tests.bare_onnx import BareModel, apply_transforms  # noqa: E402
from tests.quality import class_ious, confusion_matrix, mean_iou  # noqa: E402

MODEL_NAME = "cells"
MODEL_VERSION = "1"
LABELS = ["background", "cell", "nucleus", "debris"]
SEED = 0
LONGER_SIDE = 256
MULTIPLE = 32
SIDE_RANGE = (200, 480)
OPSET = 17
SAMPLE_COUNT = 50
MIN_MEAN_IOU = 0.8
# Grey levels that make each class a visible mask colour when the mask PNG is opened in an image viewer.
MASK_PALETTE = [0, 0, 0, 230, 200, 60, 200, 40, 160, 60, 140, 230]
TRANSFORMS: list[dict[str, Any]] = [
    {"op": "color", "mode": "L"},
    {"op": "resize", "longer": LONGER_SIDE, "resample": "bilinear"},
    {"op": "pad_to_multiple", "multiple": MULTIPLE, "fill": 0, "align": "top_left"},
    {"op": "normalize", "scale": 1 / 255, "mean": [0.0], "std": [1.0]},
    {"op": "layout", "layout": "NCHW"},
]
SCALE_ONLY = [TRANSFORMS[0], TRANSFORMS[1], TRANSFORMS[3], TRANSFORMS[4]]  # no padding: training pads itself


# --- the synthetic scenes -------------------------------------------------------------------------------------


def ellipse_outline(
    centre: tuple[float, float], radii: tuple[float, float], angle: float, wobble: NDArray[np.float64] | None = None
) -> list[tuple[float, float]]:
    """Points around a turned ellipse; ``wobble`` (amplitudes of harmonics 2, 3, 4, ...) makes it a blob."""
    turns = np.linspace(0, 2 * np.pi, 72, endpoint=False)
    scale = np.ones_like(turns)
    if wobble is not None:
        for harmonic, (amplitude, phase) in enumerate(wobble, start=2):
            scale += amplitude * np.cos(harmonic * turns + phase)
    x = radii[0] * scale * np.cos(turns)
    y = radii[1] * scale * np.sin(turns)
    rotated_x = centre[0] + x * np.cos(angle) - y * np.sin(angle)
    rotated_y = centre[1] + x * np.sin(angle) + y * np.cos(angle)
    return list(zip(rotated_x.tolist(), rotated_y.tolist(), strict=True))


def region(width: int, height: int, outline: list[tuple[float, float]]) -> NDArray[np.bool_]:
    canvas = Image.new("1", (width, height), 0)
    ImageDraw.Draw(canvas).polygon(outline, fill=1)
    return np.array(canvas, dtype=bool)


def make_scene(rng: np.random.Generator) -> tuple[Image.Image, NDArray[np.uint8]]:
    """One greyscale image and its class mask (same size, values 0..3)."""
    width, height = (int(side) for side in rng.integers(SIDE_RANGE[0], SIDE_RANGE[1] + 1, size=2))
    small = min(width, height)
    background = rng.uniform(40, 90)
    pixels = textured_background(rng, height, width, np.array([background]), amplitude=rng.uniform(8, 20))[:, :, 0]
    mask = np.zeros((height, width), dtype=np.uint8)
    wanted, placed = int(rng.integers(1, 7)), 0
    for _ in range(wanted * 20):
        if placed == wanted:
            break
        longer = rng.uniform(0.07, 0.2) * small
        radii = (longer, longer * rng.uniform(0.6, 1.0))
        centre = (float(rng.uniform(0, width)), float(rng.uniform(0, height)))
        angle = rng.uniform(0, np.pi)
        cell = region(width, height, ellipse_outline(centre, radii, angle))
        if not cell.any() or (mask[cell] != 0).mean() > 0.15:
            continue
        placed += 1
        brightness = rng.uniform(70, 130)
        pixels[cell] = pixels[cell] + brightness
        mask[cell] = 1
        inner = (radii[0] * rng.uniform(0.3, 0.5), radii[1] * rng.uniform(0.3, 0.5))
        shift = rng.uniform(-0.3, 0.3, size=2) * np.array(radii)
        nucleus_centre = (
            centre[0] + shift[0] * np.cos(angle) - shift[1] * np.sin(angle),
            centre[1] + shift[0] * np.sin(angle) + shift[1] * np.cos(angle),
        )
        nucleus = region(width, height, ellipse_outline(nucleus_centre, inner, angle + rng.uniform(-0.5, 0.5)))
        nucleus &= cell
        pixels[nucleus] = pixels[nucleus] - rng.uniform(45, 80)
        mask[nucleus] = 2
    wanted, placed = int(rng.integers(0, 6)), 0
    for _ in range(wanted * 20):
        if placed == wanted:
            break
        radius = rng.uniform(0.025, 0.07) * small
        wobble = np.stack([rng.uniform(0, 0.25, size=3), rng.uniform(0, 2 * np.pi, size=3)], axis=1)
        centre = (float(rng.uniform(0, width)), float(rng.uniform(0, height)))
        outline = ellipse_outline(centre, (radius, radius * rng.uniform(0.6, 1.0)), rng.uniform(0, np.pi), wobble)
        debris = region(width, height, outline)
        if not debris.any() or (mask[debris] != 0).any():
            continue
        placed += 1
        pixels[debris] = pixels[debris] - rng.uniform(25, 40)
        mask[debris] = 3
    image = Image.fromarray(np.rint(np.clip(pixels, 0, 255)).astype(np.uint8), mode="L")
    return image, mask


def mask_image(mask: NDArray[np.uint8]) -> Image.Image:
    """The class mask as an indexed (palette mode) PNG image: pixel value = class index."""
    picture = Image.fromarray(mask, mode="P")
    picture.putpalette(MASK_PALETTE)
    return picture


# --- the network -------------------------------------------------------------------------------------------------


def conv(channels_in: int, channels_out: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(channels_in, channels_out, 3, stride, 1, bias=False), nn.BatchNorm2d(channels_out), nn.SiLU()
    )


class CellsNet(nn.Module):
    """Encoder at strides 2, 4, 8, 16; decoder adds each skip to the upsampled path; scores at stride 2."""

    def __init__(self) -> None:
        super().__init__()
        widths = (16, 32, 48, 64)
        self.encoders = nn.ModuleList(
            nn.Sequential(conv(channels_in, channels, 2), conv(channels, channels))
            for channels_in, channels in zip((1, *widths[:-1]), widths, strict=True)
        )
        self.reducers = nn.ModuleList(
            nn.Conv2d(deep, shallow, 1) for deep, shallow in zip(widths[:0:-1], widths[-2::-1], strict=True)
        )
        self.decoders = nn.ModuleList(conv(channels, channels) for channels in widths[-2::-1])
        self.scores = nn.Conv2d(widths[0], len(LABELS), 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``(N, 1, H, W)`` with H and W multiples of 16 -> class logits ``(N, C, H, W)``."""
        skips = []
        features = images
        for encoder in self.encoders:
            features = encoder(features)
            skips.append(features)
        for reducer, decoder, skip in zip(self.reducers, self.decoders, skips[-2::-1], strict=True):
            features = decoder(skip + F.interpolate(reducer(features), scale_factor=2.0, mode="nearest"))
        return F.interpolate(self.scores(features), scale_factor=2.0, mode="bilinear", align_corners=False)


# --- training ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainingPool:
    """Training images already resized as the platform resizes them (not padded), with their masks."""

    pixels: list[NDArray[np.uint8]]  # (h, w) each, longer side LONGER_SIDE
    masks: list[NDArray[np.uint8]]


def make_pool(rng: np.random.Generator, count: int) -> TrainingPool:
    pixels, masks = [], []
    for _ in range(count):
        image, mask = make_scene(rng)
        array, geometry = apply_transforms(image, SCALE_ONLY)
        height, width = geometry.input_size
        pixels.append(np.rint(array[0] * 255).astype(np.uint8))  # normalize is pixel * (1/255): exact inverse
        masks.append(np.asarray(Image.fromarray(mask).resize((width, height), Image.Resampling.NEAREST)))
    return TrainingPool(pixels, masks)


def training_batch(
    pool: TrainingPool, rng: np.random.Generator, size: int, crop: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Images ``(B, 1, crop, crop)`` and masks ``(B, crop, crop)``: each image mirrored at random, padded at the
    right and bottom with 0 (background in the mask) to ``LONGER_SIDE`` square as the platform pads (to a
    multiple of 32, here further), and cut to a random ``crop`` square (the network is fully convolutional)."""
    images = np.zeros((size, 1, crop, crop), dtype=np.float32)
    masks = np.zeros((size, crop, crop), dtype=np.int64)
    for slot, index in enumerate(rng.integers(len(pool.pixels), size=size)):
        pixels, mask = pool.pixels[index], pool.masks[index]
        if rng.uniform() < 0.5:
            pixels, mask = pixels[:, ::-1], mask[:, ::-1]
        if rng.uniform() < 0.5:
            pixels, mask = pixels[::-1], mask[::-1]
        canvas = np.zeros((2, LONGER_SIDE, LONGER_SIDE), dtype=np.uint8)
        canvas[0, : pixels.shape[0], : pixels.shape[1]] = pixels
        canvas[1, : mask.shape[0], : mask.shape[1]] = mask
        top, left = (int(value) for value in rng.integers(0, LONGER_SIDE - crop + 1, size=2))
        window = canvas[:, top : top + crop, left : left + crop]
        images[slot, 0] = window[0].astype(np.float32) * np.float32(1 / 255)
        masks[slot] = window[1]
    return torch.from_numpy(images), torch.from_numpy(masks)


def segmentation_loss(logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Cross-entropy plus a soft Dice loss over the foreground classes (which background pixels outnumber)."""
    probabilities = torch.softmax(logits, dim=1)[:, 1:]
    truth = F.one_hot(masks, len(LABELS)).permute(0, 3, 1, 2)[:, 1:].float()
    shared = (probabilities * truth).sum(dim=(0, 2, 3))
    total = probabilities.sum(dim=(0, 2, 3)) + truth.sum(dim=(0, 2, 3))
    dice = 1 - (2 * shared + 1) / (total + 1)
    return F.cross_entropy(logits, masks) + dice.mean()


def train(steps: int, batch_size: int, crop: int, pool: TrainingPool, rng: np.random.Generator) -> CellsNet:
    net = CellsNet()
    optimiser = torch.optim.AdamW(net.parameters(), lr=3e-3, weight_decay=1e-4)
    warmup = max(1, steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimiser,
        lambda step: min(1.0, (step + 1) / warmup) * 0.5 * (1 + np.cos(np.pi * min(step, steps) / steps)),
    )
    net.train()
    started, running = time.monotonic(), 0.0
    for step in range(steps):
        images, masks = training_batch(pool, rng, batch_size, crop)
        loss = segmentation_loss(net(images), masks)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        schedule.step()
        running = 0.98 * running + 0.02 * loss.item() if step else loss.item()
        if (step + 1) % 100 == 0 or step + 1 == steps:
            print(f"step {step + 1}/{steps}  loss {running:.3f}  {time.monotonic() - started:.0f} s", flush=True)
    return net.eval()


def export_onnx(net: CellsNet) -> bytes:
    buffer = io.BytesIO()
    dummy = torch.zeros(1, 1, LONGER_SIDE, LONGER_SIDE // 2)
    torch.onnx.export(
        net.eval(),
        (dummy,),
        buffer,
        input_names=["image"],
        output_names=["scores"],
        dynamic_axes={"image": {0: "N", 2: "H", 3: "W"}, "scores": {0: "N", 2: "H", 3: "W"}},
        opset_version=OPSET,
        dynamo=False,
    )
    model = onnx.load_from_string(buffer.getvalue())
    model.producer_name = "modelrun scripts/train_segmentation_model.py"
    model.doc_string = (
        "Synthetic cell segmenter: greyscale in 0..1, [N, 1, H, W] with H and W multiples of 32; "
        "scores [N, 4, H, W] = logits of background, cell, nucleus, debris."
    )
    onnx.checker.check_model(model, full_check=True)
    return model.SerializeToString()


# --- samples and measurement -------------------------------------------------------------------------------------


def model_spec() -> dict[str, Any]:
    return {
        "name": MODEL_NAME,
        "version": MODEL_VERSION,
        "description": (
            "Segments cells, their nuclei and debris in greyscale images (a demo trained on synthetic images). "
            "Any image; it is made greyscale, its longer side resized to 256 and padded to a multiple of 32."
        ),
        "task": "segmentation",
        "input": {"name": "image"},
        "transforms": TRANSFORMS,
        "output": {"name": "scores", "type": "class_scores", "layout": "NCHW"},
        "labels": LABELS,
    }


def sample_name(index: int) -> str:
    return f"cells-{index:03d}"


def make_samples(rng: np.random.Generator) -> tuple[dict[str, bytes], dict[str, Any]]:
    """Sample PNGs with their mask PNGs, and the ground truth document that lists them."""
    files: dict[str, bytes] = {}
    images: dict[str, Any] = {}
    for index in range(SAMPLE_COUNT):
        image, mask = make_scene(rng)
        stem = sample_name(index)
        files[f"{stem}.png"] = png_bytes(image)
        files[f"{stem}.mask.png"] = png_bytes(mask_image(mask))
        images[f"{stem}.png"] = {"width": image.width, "height": image.height, "mask": f"{stem}.mask.png"}
    document = {
        "task": "segmentation",
        "labels": LABELS,
        "mask_format": "indexed PNG (palette mode) of the image's size; pixel value = index into labels",
        "images": images,
    }
    return files, document


def measure(model_dir: Path, samples_dir: Path) -> NDArray[np.int64]:
    """The confusion matrix of the exported model over the written sample files, at their original size."""
    document = json.loads((samples_dir / "ground_truth.json").read_text(encoding="utf-8"))
    model = BareModel(model_dir)
    matrix = np.zeros((len(LABELS), len(LABELS)), dtype=np.int64)
    for name, entry in document["images"].items():
        with Image.open(samples_dir / name) as image, Image.open(samples_dir / entry["mask"]) as truth:
            matrix += confusion_matrix(np.asarray(truth), model.segment(image), len(LABELS))
    return matrix


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "models", help="models root folder")
    parser.add_argument("--samples", type=Path, default=REPO_ROOT / "samples" / MODEL_NAME, help="sample folder")
    parser.add_argument("--steps", type=int, default=1500, help="training steps")
    parser.add_argument("--batch", type=int, default=12, help="images per training step")
    parser.add_argument("--crop", type=int, default=128, help="side of the square training crops (multiple of 16)")
    parser.add_argument("--pool", type=int, default=1500, help="distinct training images")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args(argv)

    torch.manual_seed(SEED)
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)  # denormal floats late in training can slow CPU arithmetic many times over
    train_rng, sample_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(SEED).spawn(2))

    started = time.monotonic()
    pool = make_pool(train_rng, args.pool)
    print(f"made {args.pool} training images in {time.monotonic() - started:.0f} s", flush=True)
    net = train(args.steps, args.batch, args.crop, pool, train_rng)
    model_dir = args.out / MODEL_NAME / MODEL_VERSION
    model_dir.mkdir(parents=True, exist_ok=True)
    onnx_path = model_dir / "model.onnx"
    onnx_path.write_bytes(export_onnx(net))
    (model_dir / "model.json").write_text(json_text(model_spec()), encoding="utf-8")

    files, document = make_samples(sample_rng)
    replace_samples(args.samples, files, "cells-*.png")
    (args.samples / "ground_truth.json").write_text(json_text(document), encoding="utf-8")

    matrix = measure(model_dir, args.samples)
    overall, foreground = mean_iou(matrix), mean_iou(matrix, range(1, len(LABELS)))
    print(f"wrote {onnx_path} ({onnx_path.stat().st_size} bytes) and model.json")
    print(f"wrote {SAMPLE_COUNT} sample PNGs and masks ({sum(map(len, files.values()))} bytes) to {args.samples}")
    print(
        f"held-out mean IoU (onnxruntime): {overall:.4f} over all {len(LABELS)} classes, "
        f"{foreground:.4f} over the foreground classes"
    )
    print(
        "held-out IoU per class: "
        + ", ".join(f"{lab} {iou:.4f}" for lab, iou in zip(LABELS, class_ious(matrix), strict=True))
    )
    if overall < MIN_MEAN_IOU:
        print(f"mean IoU below the required {MIN_MEAN_IOU}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
