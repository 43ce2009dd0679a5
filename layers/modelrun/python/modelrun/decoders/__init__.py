"""Task decoders: one image's graph outputs -> its JSON-ready result, one module per task.

A new task is one new module with a :class:`TaskDecoder` and one line in :data:`_DECODERS`; the code that runs
models only ever calls :func:`decoder_for`.
"""

from __future__ import annotations

from typing import Final

from modelrun.decoders.base import Dim, FailFn, Mask, TaskDecoder
from modelrun.decoders.classification import ClassificationDecoder
from modelrun.decoders.detection import DetectionDecoder
from modelrun.decoders.multilabel import MultilabelDecoder
from modelrun.decoders.segmentation import SegmentationDecoder

_DECODERS: Final[dict[str, TaskDecoder]] = {
    decoder.task: decoder
    for decoder in (
        ClassificationDecoder(),
        MultilabelDecoder(),
        DetectionDecoder(),
        SegmentationDecoder(),
    )
}

TASKS: Final[tuple[str, ...]] = tuple(_DECODERS)
"""The task names model.json's ``task`` accepts."""


def decoder_for(task: str) -> TaskDecoder:
    """The decoder for ``task``.

    Raises:
        ValueError: ``task`` is not one of :data:`TASKS` (the message lists them).
    """
    decoder = _DECODERS.get(task)
    if decoder is None:
        known = ", ".join(f'"{name}"' for name in TASKS)
        raise ValueError(f'unknown task "{task}"; known tasks: {known}')
    return decoder


__all__ = ["TASKS", "Dim", "FailFn", "Mask", "TaskDecoder", "decoder_for"]
