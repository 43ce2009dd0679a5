"""Quality measures for the demo detection and segmentation models, in plain numpy.

- Detection: average precision at one IoU threshold, Pascal VOC style (from 2010 on): detections of a class
  from every image are ranked by score, each is a true positive when it overlaps a ground-truth box of
  its class, not yet matched, by at least the threshold (the best-overlapping box is the one tried), and
  the precision/recall curve is integrated over all points after making precision monotone. The mean
  is over the classes that have ground truth.
- Segmentation: intersection over union per class from one confusion matrix accumulated over all
  images (so a large image weighs more than a small one), and their mean over classes.

Both the training scripts (which print the held-out figures) and the unit tests (which keep them) use this
module, so the figures reported and the figures tested are computed the same way.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray


@dataclass(frozen=True)
class LabelledBox:
    """A box ``[x1, y1, x2, y2]`` in image pixels with its label; ground truth has no score."""

    label: str
    box: tuple[float, float, float, float]
    score: float = 1.0


def box_iou(box: Sequence[float], boxes: NDArray[np.float64]) -> NDArray[np.float64]:
    """IoU of one ``[x1, y1, x2, y2]`` box with each row of ``boxes`` (shape ``(n, 4)``); 0 where both are empty."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    x1, y1, x2, y2 = (float(value) for value in box)
    width = np.clip(np.minimum(x2, boxes[:, 2]) - np.maximum(x1, boxes[:, 0]), 0, None)
    height = np.clip(np.minimum(y2, boxes[:, 3]) - np.maximum(y1, boxes[:, 1]), 0, None)
    intersection = width * height
    area = max(x2 - x1, 0.0) * max(y2 - y1, 0.0)
    areas = np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)
    union = area + areas - intersection
    return np.divide(intersection, union, out=np.zeros_like(intersection), where=union > 0)


def average_precision(recall: NDArray[np.float64], precision: NDArray[np.float64]) -> float:
    """Area under the precision/recall curve with all-point interpolation (VOC 2010 and later).

    Args:
        recall: recall after each ranked detection, non-decreasing.
        precision: precision after each ranked detection.

    Returns:
        The sum over recall steps of the step width times the best precision at that recall or beyond.
    """
    recall_points = np.concatenate([[0.0], np.asarray(recall, dtype=np.float64), [1.0]])
    precision_points = np.concatenate([[0.0], np.asarray(precision, dtype=np.float64), [0.0]])
    precision_points = np.maximum.accumulate(precision_points[::-1])[::-1]
    steps = np.flatnonzero(recall_points[1:] != recall_points[:-1])
    return float(np.sum((recall_points[steps + 1] - recall_points[steps]) * precision_points[steps + 1]))


def class_average_precision(
    predictions: Mapping[str, Sequence[LabelledBox]],
    truths: Mapping[str, Sequence[LabelledBox]],
    label: str,
    iou_threshold: float = 0.5,
) -> float | None:
    """Average precision of one class over a set of images.

    Args:
        predictions: image name -> detections (any labels; only ``label`` is used). Images missing here have none.
        truths: image name -> ground-truth boxes; every image of the set is a key.
        label: the class measured.
        iou_threshold: the least IoU for a detection to match a ground-truth box.

    Returns:
        The average precision, or None when no image has a ground-truth box of this class.

    Raises:
        ValueError: when a prediction names an image that has no ground truth entry.
    """
    unknown = set(predictions) - set(truths)
    if unknown:
        raise ValueError(f"predictions for images without ground truth: {sorted(unknown)}")
    truth_boxes = {
        image: np.array([item.box for item in items if item.label == label], dtype=np.float64).reshape(-1, 4)
        for image, items in truths.items()
    }
    total = sum(len(boxes) for boxes in truth_boxes.values())
    if total == 0:
        return None
    ranked = sorted(
        (
            (item.score, image, item.box)
            for image, items in predictions.items()
            for item in items
            if item.label == label
        ),
        key=lambda entry: -entry[0],
    )
    matched = {image: np.zeros(len(boxes), dtype=bool) for image, boxes in truth_boxes.items()}
    true_positive = np.zeros(len(ranked))
    for rank, (_, image, box) in enumerate(ranked):
        boxes = truth_boxes[image]
        if len(boxes) == 0:
            continue
        overlaps = box_iou(box, boxes)
        best = int(np.argmax(overlaps))
        if overlaps[best] >= iou_threshold and not matched[image][best]:
            matched[image][best] = True
            true_positive[rank] = 1
    hits = np.cumsum(true_positive)
    recall = hits / total
    precision = hits / np.arange(1, len(ranked) + 1)
    return average_precision(recall, precision)


def mean_average_precision(
    predictions: Mapping[str, Sequence[LabelledBox]],
    truths: Mapping[str, Sequence[LabelledBox]],
    labels: Sequence[str],
    iou_threshold: float = 0.5,
) -> tuple[float, dict[str, float]]:
    """mAP at ``iou_threshold``: the mean of :func:`class_average_precision` over classes with ground truth.

    Returns:
        ``(mean, {label: average precision})``; classes without ground truth are left out of both.

    Raises:
        ValueError: when no class has ground truth.
    """
    per_class = {}
    for label in labels:
        value = class_average_precision(predictions, truths, label, iou_threshold)
        if value is not None:
            per_class[label] = value
    if not per_class:
        raise ValueError("no ground-truth boxes of any class")
    return float(np.mean(list(per_class.values()))), per_class


def detection_counts(
    predictions: Mapping[str, Sequence[LabelledBox]],
    truths: Mapping[str, Sequence[LabelledBox]],
    iou_threshold: float = 0.5,
) -> tuple[int, int, int]:
    """``(true positives, false positives, missed ground-truth boxes)`` over all images and classes.

    Within an image, detections are taken best score first and each matches the unmatched ground-truth box of
    its class that it overlaps most, if that overlap reaches ``iou_threshold`` (the same rule as the AP).
    """
    true_positives = false_positives = 0
    total = sum(len(items) for items in truths.values())
    for image, items in predictions.items():
        truth = truths[image]
        matched = [False] * len(truth)
        for item in sorted(items, key=lambda entry: -entry.score):
            candidates = [index for index, other in enumerate(truth) if other.label == item.label]
            overlaps = box_iou(item.box, np.array([truth[index].box for index in candidates], dtype=np.float64))
            best = int(np.argmax(overlaps)) if len(candidates) else -1
            if best >= 0 and overlaps[best] >= iou_threshold and not matched[candidates[best]]:
                matched[candidates[best]] = True
                true_positives += 1
            else:
                false_positives += 1
    return true_positives, false_positives, total - true_positives


def confusion_matrix(truth: NDArray[np.integer], predicted: NDArray[np.integer], classes: int) -> NDArray[np.int64]:
    """``matrix[t, p]`` counts pixels of true class ``t`` predicted as ``p``; masks must have the same shape.

    Raises:
        ValueError: on different shapes, or a class index outside ``0..classes-1``.
    """
    truth = np.asarray(truth)
    predicted = np.asarray(predicted)
    if truth.shape != predicted.shape:
        raise ValueError(f"mask shapes differ: truth {truth.shape}, predicted {predicted.shape}")
    for name, mask in (("truth", truth), ("predicted", predicted)):
        if mask.size and (mask.min() < 0 or mask.max() >= classes):
            raise ValueError(f"{name} mask has a class index outside 0..{classes - 1}")
    pairs = truth.astype(np.int64).ravel() * classes + predicted.astype(np.int64).ravel()
    return np.bincount(pairs, minlength=classes * classes).reshape(classes, classes)


def class_ious(matrix: NDArray[np.int64]) -> NDArray[np.float64]:
    """IoU per class from a confusion matrix; NaN for a class absent from both truth and prediction."""
    matrix = np.asarray(matrix, dtype=np.float64)
    intersection = np.diag(matrix)
    union = matrix.sum(axis=0) + matrix.sum(axis=1) - intersection
    return np.divide(intersection, union, out=np.full_like(intersection, np.nan), where=union > 0)


def mean_iou(matrix: NDArray[np.int64], classes: Sequence[int] | None = None) -> float:
    """Mean of :func:`class_ious` over ``classes`` (default all), ignoring classes absent from both masks."""
    ious = class_ious(matrix)
    chosen = ious if classes is None else ious[list(classes)]
    return float(np.nanmean(chosen))
