"""The S3 objects a batch's outcomes point to: segmentation masks, and the full detection lists cut from the items.

An outcome lives in one DynamoDB item, which must stay far under DynamoDB's 400 KB: a mask never goes there (its PNG
is the batch's ``masks/{item}.png``), and a detection list longer than :data:`MAX_ITEM_DETECTIONS` keeps its best
ones in the item while the whole list goes to the batch's ``detections/{item}.json``, both under its results in its
tenant's space (:class:`~modelrun.batches.keys.BatchKeys`). The objects are written before the outcome is recorded,
so a recorded outcome never points to a missing object; a chunk predicted again writes the same bytes again.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Final

from modelrun.batches.keys import BatchKeys
from modelrun.decoders import Mask

MAX_ITEM_DETECTIONS: Final = 100
"""At most this many detections (best first) in an outcome's item; ``count`` still says how many there are."""

MASK_CONTENT_TYPE: Final = "image/png"


@dataclass
class ResultObjects:
    """Writes and reads the objects of a batch's outcomes in the stack's images bucket."""

    s3: Any
    bucket: str

    def keep(self, batch: BatchKeys, item: int, result: dict[str, Any], frame: int | None = None) -> dict[str, Any]:
        """The result as the outcome's item holds it, its mask and any cut detections first written to S3.

        Args:
            batch: the batch's keys (its tenant's space).
            item: the image's item number in the batch.
            result: one image's decoded result (a segmentation's :class:`~modelrun.decoders.Mask` under "mask").
            frame: the frame the result is of, for a model that predicts every frame; its objects are the frame's.

        Returns:
            The result with ``mask`` as ``{"format", "width", "height", "s3_key"}`` and, when there were more than
            :data:`MAX_ITEM_DETECTIONS` detections, only the best of them and ``detections_truncated: true``.

        Raises:
            botocore.exceptions.ClientError: a PUT failed (the caller tells transient failures apart).
        """
        kept = dict(result)
        mask = kept.get("mask")
        if isinstance(mask, Mask):
            key = batch.mask(item, frame)
            self.s3.put_object(Bucket=self.bucket, Key=key, Body=mask.png, ContentType=MASK_CONTENT_TYPE)
            kept["mask"] = mask.stored(key)
        detections = kept.get("detections")
        if isinstance(detections, list) and len(detections) > MAX_ITEM_DETECTIONS:
            self.s3.put_object(
                Bucket=self.bucket,
                Key=batch.detections(item, frame),
                Body=json.dumps(detections, separators=(",", ":")).encode("utf-8"),
                ContentType="application/json",
            )
            kept["detections"] = detections[:MAX_ITEM_DETECTIONS]
            kept["detections_truncated"] = True
        return kept

    def full_detections(self, batch: BatchKeys, item: int, frame: int | None = None) -> list[dict[str, Any]]:
        """The whole detection list of an outcome (or of one of its frames) whose item holds only the best ones."""
        body = self.s3.get_object(Bucket=self.bucket, Key=batch.detections(item, frame))["Body"].read()
        detections: list[dict[str, Any]] = json.loads(body)
        return detections
