"""One chunk of a batch: the Map iteration's input, and predicting it with one outcome per image."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from aws_lambda_powertools import Logger

from modelrun.aws.s3 import ImageStore
from modelrun.batches.failures import as_transient, is_transient
from modelrun.batches.faults import Faults
from modelrun.batches.keys import BatchKeys
from modelrun.batches.manifest import read_chunk_items
from modelrun.batches.results import ResultObjects
from modelrun.batches.store import FAILED_OUTCOME, PREDICTED, JobStore, Outcome
from modelrun.datasets.history import DatasetRun, PredictionHistory
from modelrun.datasets.ids import image_id_of
from modelrun.errors import ModelCodeError, ModelrunError
from modelrun.images.decode import Limits, decode_image
from modelrun.images.image import DecodedImage
from modelrun.models.onnx import Feeds, LoadedModel, Outputs
from modelrun.models.registry import ModelRegistry
from modelrun.predict import frame_results
from modelrun.tenants import Tenant
from modelrun.transforms.geometry import Geometry

logger = Logger(child=True)


@dataclass(frozen=True)
class Chunk:
    """One iteration of the Map: some items of a batch, with their image keys and the batch's tenant (whose space
    its result objects go to)."""

    batch_id: str
    index: int
    items: list[tuple[int, str]]
    bucket: str
    model: str
    version: str
    tenant: Tenant
    attempt: int = 1
    faults: Faults = field(default_factory=Faults)
    dataset: DatasetRun | None = None

    @property
    def keys(self) -> list[str]:
        return [key for _, key in self.items]

    @property
    def batch(self) -> BatchKeys:
        return BatchKeys(self.tenant, self.batch_id)

    def ids_of(self, key: str) -> dict[str, str]:
        """``dataset_id`` and ``image_id`` of an image of a batch over a dataset, for its outcome; else nothing."""
        if self.dataset is None:
            return {}
        return {"dataset_id": self.dataset.dataset_id, "image_id": image_id_of(self.dataset.dataset_id, key)}

    @classmethod
    def from_event(cls, event: dict[str, Any], s3: Any) -> Chunk:
        """The chunk a Map iteration (or a dead-letter message) describes, its keys read from the keys file."""
        chunk = event["chunk"]
        items = read_chunk_items(
            s3,
            event["bucket"],
            event["keys_object"],
            offset=int(chunk["offset"]),
            length=int(chunk["length"]),
            count=int(chunk["count"]),
            first_item=int(chunk["first_item"]),
        )
        return cls(
            batch_id=event["batch_id"],
            index=int(chunk["index"]),
            items=items,
            bucket=event["bucket"],
            model=event["model"],
            version=str(event["version"]),
            tenant=Tenant(str(event["tenant"])),
            attempt=int(event.get("attempt", 1)),
            faults=Faults.from_event(event),
            dataset=DatasetRun.from_event(event),
        )


@dataclass(frozen=True)
class Prepared:
    """One image of a chunk ready for the graph: each selected frame's inputs and where its pixels came from."""

    item: int
    key: str
    frames: list[tuple[Feeds, Geometry]]
    decoded: DecodedImage


@dataclass
class ChunkPredictor:
    """Decodes and prepares a chunk's images concurrently, runs batched inference, decodes each image's outputs,
    and records one outcome per image."""

    store: JobStore
    images: ImageStore
    registry: ModelRegistry
    limits: Limits
    pool: ThreadPoolExecutor
    results: ResultObjects
    # Where the outcomes of a batch over a dataset go into their images' prediction history.
    history: PredictionHistory | None = None

    def prepare(self, model: LoadedModel, chunk: Chunk, item: int, key: str) -> Prepared | ModelrunError:
        """The model inputs of one image, or the permanent failure that image is (a bad image, or the model's own
        code failing on it, is an outcome; anything else fails the chunk)."""
        try:
            data = self.images.read(chunk.bucket, key, max_bytes=self.limits.max_bytes)
            decoded = decode_image(data, self.limits, model.spec.frames)
            return Prepared(item, key, [model.prepare(frame) for frame in decoded.frames], decoded)
        except ModelCodeError as exc:
            return model_code_failure(exc, chunk, item, key)
        except ModelrunError as exc:
            if exc.status >= 500:
                raise
            return exc
        except Exception as exc:
            if is_transient(exc):
                raise as_transient(exc, f"reading s3://{chunk.bucket}/{key}") from exc
            raise

    def decode(self, model: LoadedModel, chunk: Chunk, image: Prepared, outputs: list[Outputs]) -> Outcome:
        """One image's outcome from its frames' outputs: its result (masks and long detection lists written to S3
        first; with the ``all`` frame policy, ``frames`` holding one result per frame), or ``model_code_error`` when
        the model's own postprocess fails on it."""
        try:
            results = [model.decode(out, geometry) for out, (_, geometry) in zip(outputs, image.frames, strict=True)]
        except ModelCodeError as exc:
            return failure_outcome(image.item, image.key, chunk, model_code_failure(exc, chunk, image.item, image.key))
        every = model.spec.frames == "all"
        try:
            if every:
                results = [
                    self.results.keep(chunk.batch, image.item, result, frame=frame.index)
                    for frame, result in zip(image.decoded.frames, results, strict=True)
                ]
            kept = frame_results(image.decoded, results, every=every)
            if not every:
                kept = self.results.keep(chunk.batch, image.item, kept)
        except Exception as exc:
            if is_transient(exc):
                raise as_transient(exc, f"writing the result objects of item {image.item}") from exc
            raise
        return Outcome(
            item=image.item,
            key=image.key,
            chunk=chunk.index,
            status=PREDICTED,
            attempt=chunk.attempt,
            result=kept,
            **chunk.ids_of(image.key),
        )

    def run(self, chunk: Chunk, only: set[int] | None = None) -> dict[str, Any]:
        """Predict the chunk (or only the given items of it) and record each image's outcome once."""
        started = time.perf_counter()
        model = self.registry.get(chunk.model, chunk.version)
        items = chunk.items if only is None else [(item, key) for item, key in chunk.items if item in only]
        prepared = list(self.pool.map(lambda entry: self.prepare(model, chunk, *entry), items))
        good = [image for image in prepared if isinstance(image, Prepared)]
        # Every frame of every image in one list, so the graph runs them in as few batched calls as it can.
        flat = model.infer([feeds for image in good for feeds, _ in image.frames]) if good else []
        outputs: list[list[Outputs]] = []
        for image in good:
            outputs.append(flat[: len(image.frames)])
            flat = flat[len(image.frames) :]
        outcomes = list(self.pool.map(lambda pair: self.decode(model, chunk, *pair), zip(good, outputs, strict=True)))
        failures = [
            failure_outcome(item, key, chunk, error)
            for (item, key), error in zip(items, prepared, strict=True)
            if isinstance(error, ModelrunError)
        ]
        failures += [outcome for outcome in outcomes if outcome.status == FAILED_OUTCOME]
        for failure in failures:
            logger.info(
                "image failed",
                extra={
                    "batch_id": chunk.batch_id,
                    "key": failure.key,
                    "item": failure.item,
                    "chunk": chunk.index,
                    "attempt": chunk.attempt,
                    "code": failure.error_code,
                    "kind": "permanent",
                },
            )
        outcomes = [outcome for outcome in outcomes if outcome.status == PREDICTED] + failures
        try:
            deltas = list(self.pool.map(lambda outcome: self.store.record_outcome(chunk.batch_id, outcome), outcomes))
            predicted = sum(delta[0] for delta in deltas)
            failed = sum(delta[1] for delta in deltas)
            self.store.add_counts(chunk.batch_id, predicted=predicted, failed=failed)
            self.record_history(chunk, [outcome for outcome, delta in zip(outcomes, deltas, strict=True) if any(delta)])
        except Exception as exc:
            # Outcomes already written stay (the next try skips them); the counters are reconciled at close.
            if is_transient(exc):
                raise as_transient(exc, f"recording chunk {chunk.index} of {chunk.batch_id}") from exc
            raise
        summary = {
            "batch_id": chunk.batch_id,
            "chunk": chunk.index,
            "images": len(items),
            "predicted": sum(1 for outcome in outcomes if outcome.status == PREDICTED),
            "failed": sum(1 for outcome in outcomes if outcome.status == FAILED_OUTCOME),
            "newly_recorded": sum(1 for delta in deltas if delta != (0, 0)),
            "duration_ms": round((time.perf_counter() - started) * 1000, 1),
        }
        logger.info("chunk predicted", extra=summary)
        return summary

    def record_history(self, chunk: Chunk, recorded: list[Outcome]) -> None:
        """The prediction history entries of the outcomes this run recorded, for a batch over a dataset.

        Only outcomes recorded now: an image whose outcome another run recorded has its entry from that run."""
        if chunk.dataset is None or self.history is None or not recorded:
            return
        self.history.record_outcomes(
            chunk.dataset, batch_id=chunk.batch_id, model=chunk.model, version=chunk.version, outcomes=recorded
        )


def model_code_failure(error: ModelCodeError, chunk: Chunk, item: int, key: str) -> ModelCodeError:
    """Log the model code's traceback with the image it failed on (the outcome keeps only its type and message)."""
    logger.warning(
        "model code failed on an image",
        exc_info=error.__cause__ or error,
        extra={"batch_id": chunk.batch_id, "chunk": chunk.index, "item": item, "key": key, "attempt": chunk.attempt},
    )
    return error


def failure_outcome(item: int, key: str, chunk: Chunk, error: ModelrunError, code: str | None = None) -> Outcome:
    return Outcome(
        item=item,
        key=key,
        chunk=chunk.index,
        status=FAILED_OUTCOME,
        attempt=chunk.attempt,
        error_code=code or error.code,
        error_message=error.message,
        **chunk.ids_of(key),
    )
