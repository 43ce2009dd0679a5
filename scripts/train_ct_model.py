"""Train the medical demo: a CT segmenter of body, bone and lesions in the soft-tissue window, with its DICOM series.

Data (made here, nothing is downloaded): axial slices of synthetic body phantoms in Hounsfield units with exact
class masks (``scripts/ct_phantom.py``): 0 background, 1 body, 2 bone, 3 lesion (a hypodense spot in a
liver-like organ). The model declares the window it was trained with in its model.json: the platform applies
the DICOM linear VOI function (centre 40, width 400) to the Modality LUT output (HU) and gets grey levels 0..255;
this script computes the same thing from the phantoms' HU itself (``ct_phantom.window``), then divides by 255.

Model: a small U-Net-like network (four stride-2 stages, additive skips on the way up, scores upsampled
bilinearly inside the graph) with a symbolic batch, height and width (multiples of 32); its output ``scores`` is
``[N, 4, H, W]``. The platform sizes the input with ``resize longer 128`` and ``pad_to_multiple 32``; the
sample slices are 128 x 128, so neither changes them.

Then: the sample series is written to ``samples/ct`` as DICOM files (``scripts/ct_dicom.py``) with one indexed
mask PNG per slice, and the exported model is measured with ONNX Runtime (mean IoU per class and over classes)
on those files, read with pydicom by the reference in ``tests/bare_dicom.py``, and on held-out phantoms drawn
from a stream of their own.

Needs torch and pydicom with pylibjpeg-openjpeg and pylibjpeg-rle (the ``train`` extra plus those):
``python scripts/train_ct_model.py``.
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from numpy.typing import NDArray
from PIL import Image
from torch import nn

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from scripts.ct_dicom import TRANSFER_SYNTAX_NAMES, dicom_bytes, sample_series  # noqa: E402
from scripts.ct_phantom import LABELS, SIDE, WINDOW_CENTER, WINDOW_WIDTH, random_phantom, window  # noqa: E402
from scripts.synthetic_scenes import json_text, png_bytes, replace_samples  # noqa: E402
from tests.bare_dicom import segment_dicom  # noqa: E402
from tests.bare_onnx import BareModel  # noqa: E402
from tests.quality import class_ious, confusion_matrix, mean_iou  # noqa: E402

MODEL_NAME = "ct"
MODEL_VERSION = "1"
SEED = 0
OPSET = 17
Z_RANGE = (-10.0, 10.0)  # training and held-out slices are cut anywhere in this range
MIN_MEAN_IOU = 0.8
# Grey levels that make each class a visible mask colour when the mask PNG is opened in an image viewer.
MASK_PALETTE = [0, 0, 0, 200, 120, 90, 240, 240, 220, 40, 200, 60]
TRANSFORMS: list[dict[str, Any]] = [
    {"op": "color", "mode": "L"},
    {"op": "window", "center": WINDOW_CENTER, "width": WINDOW_WIDTH},
    {"op": "resize", "longer": SIDE, "resample": "bilinear"},
    {"op": "pad_to_multiple", "multiple": 32, "fill": 0, "align": "top_left"},
    {"op": "normalize", "scale": 1 / 255, "mean": [0.0], "std": [1.0]},
    {"op": "layout", "layout": "NCHW"},
]


# --- the network -------------------------------------------------------------------------------------------------


def conv(channels_in: int, channels_out: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(channels_in, channels_out, 3, stride, 1, bias=False), nn.BatchNorm2d(channels_out), nn.SiLU()
    )


class CtNet(nn.Module):
    """Encoder at strides 2, 4, 8, 16; decoder adds each skip to the upsampled path; scores at stride 2."""

    def __init__(self, classes: int) -> None:
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
        self.scores = nn.Conv2d(widths[0], classes, 1)

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


def make_slices(
    rng: np.random.Generator, phantoms: int, per_phantom: int
) -> tuple[NDArray[np.float32], NDArray[np.uint8]]:
    """Windowed slices scaled to 0..1 ``(n, SIDE, SIDE)`` and their masks, ``per_phantom`` cut from each phantom."""
    images = np.zeros((phantoms * per_phantom, SIDE, SIDE), dtype=np.float32)
    masks = np.zeros((phantoms * per_phantom, SIDE, SIDE), dtype=np.uint8)
    for index in range(phantoms):
        phantom = random_phantom(rng)
        for offset, z in enumerate(rng.uniform(*Z_RANGE, size=per_phantom)):
            hu, mask = phantom.slice(float(z))
            images[index * per_phantom + offset] = window(hu) * np.float32(1 / 255)
            masks[index * per_phantom + offset] = mask
    return images, masks


def training_batch(
    images: NDArray[np.float32], masks: NDArray[np.uint8], rng: np.random.Generator, size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``size`` slices at random, each mirrored left to right half the time (a body's two sides are alike here)."""
    chosen = rng.integers(len(images), size=size)
    batch_images, batch_masks = images[chosen].copy(), masks[chosen].astype(np.int64)
    flip = rng.uniform(size=size) < 0.5
    batch_images[flip] = batch_images[flip][:, :, ::-1]
    batch_masks[flip] = batch_masks[flip][:, :, ::-1]
    return torch.from_numpy(batch_images[:, np.newaxis]), torch.from_numpy(batch_masks)


def segmentation_loss(logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Cross-entropy plus a soft Dice loss over the foreground classes (small lesions would drown otherwise)."""
    probabilities = torch.softmax(logits, dim=1)[:, 1:]
    truth = F.one_hot(masks, len(LABELS)).permute(0, 3, 1, 2)[:, 1:].float()
    shared = (probabilities * truth).sum(dim=(0, 2, 3))
    total = probabilities.sum(dim=(0, 2, 3)) + truth.sum(dim=(0, 2, 3))
    dice = 1 - (2 * shared + 1) / (total + 1)
    return F.cross_entropy(logits, masks) + dice.mean()


def train(
    steps: int, batch_size: int, images: NDArray[np.float32], masks: NDArray[np.uint8], rng: np.random.Generator
) -> CtNet:
    net = CtNet(len(LABELS))
    optimiser = torch.optim.AdamW(net.parameters(), lr=3e-3, weight_decay=1e-4)
    warmup = max(1, steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimiser,
        lambda step: min(1.0, (step + 1) / warmup) * 0.5 * (1 + np.cos(np.pi * min(step, steps) / steps)),
    )
    net.train()
    started, running = time.monotonic(), 0.0
    for step in range(steps):
        batch_images, batch_masks = training_batch(images, masks, rng, batch_size)
        loss = segmentation_loss(net(batch_images), batch_masks)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        schedule.step()
        running = 0.98 * running + 0.02 * loss.item() if step else loss.item()
        if (step + 1) % 100 == 0 or step + 1 == steps:
            print(f"step {step + 1}/{steps}  loss {running:.3f}  {time.monotonic() - started:.0f} s", flush=True)
    return net.eval()


def export_onnx(net: CtNet) -> bytes:
    buffer = io.BytesIO()
    dummy = torch.zeros(1, 1, SIDE, SIDE // 2)
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
    model.producer_name = "modelrun scripts/train_ct_model.py"
    model.doc_string = (
        "Synthetic CT segmenter: HU in the window centre 40 width 400, scaled to 0..1, [N, 1, H, W] with H and W "
        "multiples of 32; scores [N, 4, H, W] = logits of background, body, bone, lesion."
    )
    onnx.checker.check_model(model, full_check=True)
    return model.SerializeToString()


# --- samples and measurement -------------------------------------------------------------------------------------


def model_spec() -> dict[str, Any]:
    return {
        "name": MODEL_NAME,
        "version": MODEL_VERSION,
        "description": (
            "Segments the body, bone and liver lesions in axial CT slices (a demo trained on synthetic phantoms, "
            "not for clinical use). DICOM in Hounsfield units, seen through the soft-tissue window (centre 40, "
            "width 400); every frame of a multi-frame file. Its longer side is resized to 128 and padded to a "
            "multiple of 32."
        ),
        "task": "segmentation",
        "input": {"name": "image"},
        "transforms": TRANSFORMS,
        "frames": "all",
        "output": {"name": "scores", "type": "class_scores", "layout": "NCHW"},
        "labels": LABELS,
    }


def mask_image(mask: NDArray[np.uint8]) -> Image.Image:
    """The class mask as an indexed (palette mode) PNG image: pixel value = class index."""
    picture = Image.fromarray(mask, mode="P")
    picture.putpalette(MASK_PALETTE)
    return picture


def make_samples() -> tuple[dict[str, bytes], dict[str, Any]]:
    """The DICOM files with one mask PNG per slice, and the ground truth document that lists them."""
    files: dict[str, bytes] = {}
    entries: dict[str, Any] = {}
    for item, masks in sample_series():
        name = f"{item.stem}.dcm"
        files[name] = dicom_bytes(item)
        frames = []
        for frame, mask in enumerate(masks):
            mask_name = f"{item.stem}.mask.png" if len(masks) == 1 else f"{item.stem}.frame-{frame}.mask.png"
            files[mask_name] = png_bytes(mask_image(mask))
            frames.append({"frame": frame, "slice_location_mm": item.z_mm[frame], "mask": mask_name})
        entries[name] = {
            "transfer_syntax": str(item.transfer_syntax),
            "transfer_syntax_name": TRANSFER_SYNTAX_NAMES[item.transfer_syntax],
            "photometric_interpretation": "MONOCHROME1" if item.monochrome1 else "MONOCHROME2",
            "width": SIDE,
            "height": SIDE,
            "frames": frames,
        }
    document = {
        "task": "segmentation",
        "labels": LABELS,
        "window": {"center": WINDOW_CENTER, "width": WINDOW_WIDTH},
        "mask_format": "indexed PNG (palette mode) per slice, of the slice's size; pixel value = index into labels",
        "files": entries,
    }
    return files, document


def measure_samples(model: BareModel, samples_dir: Path, document: dict[str, Any]) -> NDArray[np.int64]:
    """The confusion matrix of the model over the written sample files, every frame of each."""
    matrix = np.zeros((len(LABELS), len(LABELS)), dtype=np.int64)
    for name, entry in document["files"].items():
        predicted = segment_dicom(model, samples_dir / name)
        for frame, mask in zip(entry["frames"], predicted, strict=True):
            with Image.open(samples_dir / frame["mask"]) as truth:
                matrix += confusion_matrix(np.asarray(truth), mask, len(LABELS))
    return matrix


def measure_phantoms(model: BareModel, images: NDArray[np.float32], masks: NDArray[np.uint8]) -> NDArray[np.int64]:
    """The confusion matrix over held-out slices already windowed and scaled (SIDE is a multiple of 32)."""
    matrix = np.zeros((len(LABELS), len(LABELS)), dtype=np.int64)
    for start in range(0, len(images), 32):
        batch = images[start : start + 32, np.newaxis]
        (scores,) = model.session.run([model.output_name], {model.input_name: batch})
        for truth, predicted in zip(masks[start : start + 32], np.argmax(scores, axis=1), strict=True):
            matrix += confusion_matrix(truth, predicted, len(LABELS))
    return matrix


def report(title: str, matrix: NDArray[np.int64]) -> float:
    overall, foreground = mean_iou(matrix), mean_iou(matrix, range(1, len(LABELS)))
    per_class = ", ".join(f"{lab} {iou:.4f}" for lab, iou in zip(LABELS, class_ious(matrix), strict=True))
    print(f"{title}: mean IoU {overall:.4f} over all {len(LABELS)} classes, {foreground:.4f} over the foreground")
    print(f"  per class: {per_class}")
    return overall


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "models", help="models root folder")
    parser.add_argument("--samples", type=Path, default=REPO_ROOT / "samples" / MODEL_NAME, help="sample folder")
    parser.add_argument("--steps", type=int, default=800, help="training steps")
    parser.add_argument("--batch", type=int, default=10, help="slices per training step")
    parser.add_argument("--phantoms", type=int, default=400, help="distinct training phantoms")
    parser.add_argument("--per-phantom", type=int, default=5, help="training slices cut from each phantom")
    parser.add_argument("--held-out", type=int, default=60, help="held-out phantoms (8 slices each) measured")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    args = parser.parse_args(argv)

    torch.manual_seed(SEED)
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)  # denormal floats late in training can slow CPU arithmetic many times over
    train_rng, held_out_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(SEED).spawn(2))

    started = time.monotonic()
    images, masks = make_slices(train_rng, args.phantoms, args.per_phantom)
    print(f"made {len(images)} training slices in {time.monotonic() - started:.0f} s", flush=True)
    net = train(args.steps, args.batch, images, masks, train_rng)
    model_dir = args.out / MODEL_NAME / MODEL_VERSION
    model_dir.mkdir(parents=True, exist_ok=True)
    onnx_path = model_dir / "model.onnx"
    onnx_path.write_bytes(export_onnx(net))
    (model_dir / "model.json").write_text(json_text(model_spec()), encoding="utf-8")

    files, document = make_samples()
    replace_samples(args.samples, files, "ct-*")
    (args.samples / "ground_truth.json").write_text(json_text(document), encoding="utf-8")
    print(f"wrote {onnx_path} ({onnx_path.stat().st_size} bytes) and model.json")
    print(f"wrote {len(document['files'])} DICOM files and their masks ({sum(map(len, files.values()))} bytes)")

    model = BareModel(model_dir)
    frames = sum(len(entry["frames"]) for entry in document["files"].values())
    on_samples = report(
        f"sample series ({frames} slices, read from DICOM)", measure_samples(model, args.samples, document)
    )
    held_images, held_masks = make_slices(held_out_rng, args.held_out, 8)
    on_held_out = report(
        f"held-out phantoms ({args.held_out} phantoms, {len(held_images)} slices)",
        measure_phantoms(model, held_images, held_masks),
    )
    if min(on_samples, on_held_out) < MIN_MEAN_IOU:
        print(f"mean IoU below the required {MIN_MEAN_IOU}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
