"""DynamoDB stream event source mappings with Lambda's semantics, by polling moto's DynamoDB Streams.

moto records stream records for a table with a ``StreamSpecification`` (``StreamEnabled`` must be set, see
``stack._table``), and its own event source mapping would invoke the function inside the table write. Lambda's real
mapping polls each shard (about four times a second), starting where ``StartingPosition`` says (LATEST: records
written after the mapping starts), gathers up to ``BatchSize`` records or waits ``MaximumBatchingWindowInSeconds``,
and invokes the function with them. A shard's records are handled in order, one batch at a time:

- a function error retries the batch (split in two first when ``BisectBatchOnFunctionError``; a split does not use
  up a retry), until ``MaximumRetryAttempts`` retries or ``MaximumRecordAgeInSeconds`` (-1: no limit);
- with ``ReportBatchItemFailures``, ``{"batchItemFailures": [{"itemIdentifier": <sequence number>}]}`` retries from
  the lowest sequence number reported (records before it are done); a malformed answer fails the whole batch;
- a batch given up on is reported to the ``OnFailure`` destination (an invocation record with the shard and
  sequence numbers, not the records), and the shard moves on.
"""

from __future__ import annotations

import base64
import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar

from modelrun_local import LOGGER
from modelrun_local.lambdas import LocalFunction
from modelrun_local.polling import PollingLoop

log = logging.getLogger(LOGGER)

RETRY_BACKOFF_S = (0.1, 0.2, 0.5, 1.0, 2.0)


def _json_ready(value: Any) -> Any:
    """DynamoDB JSON from boto3 (bytes for B/BS) as Lambda delivers it (base64 strings)."""
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, dict):
        return {key: _json_ready(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_json_ready(item) for item in value]
    return value


def _epoch(value: Any) -> float:
    if isinstance(value, datetime):
        return value.timestamp()
    try:
        return float(value)
    except (TypeError, ValueError):
        return time.time()


def _iso(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{int(epoch_s * 1000) % 1000:03d}Z"


@dataclass
class _Shard:
    shard_id: str
    iterator: str | None
    pending: list[dict[str, Any]] = field(default_factory=list)  # records read, not yet done, in order
    first_seen: float = 0.0  # when the oldest pending record was read (the batching window runs from there)


@dataclass
class StreamPoller(PollingLoop):
    kind: ClassVar[str] = "stream"

    function: LocalFunction
    streams: Any  # a boto3 dynamodbstreams client
    stream_arn: str
    region: str
    batch_size: int = 100
    batching_window_s: float = 0.0
    starting_position: str = "LATEST"
    maximum_retry_attempts: int = -1
    maximum_record_age_s: int = -1
    bisect_on_error: bool = False
    report_batch_item_failures: bool = False
    on_failure: Callable[[dict[str, Any]], None] | None = None
    idle_wait_s: float = 0.25
    _shards: list[_Shard] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> StreamPoller:
        """Take the shard iterators now (LATEST: what is written from here on) and poll on a thread."""
        self.open_shards()
        self._start_thread()
        return self

    def open_shards(self) -> None:
        description = self.streams.describe_stream(StreamArn=self.stream_arn)["StreamDescription"]
        for shard in description.get("Shards", []):
            iterator = self.streams.get_shard_iterator(
                StreamArn=self.stream_arn, ShardId=shard["ShardId"], ShardIteratorType=self.starting_position
            )["ShardIterator"]
            self._shards.append(_Shard(shard_id=shard["ShardId"], iterator=iterator))

    def poll_once(self) -> int:
        """Read each shard once and deliver what is due; returns how many records were delivered."""
        delivered = 0
        for shard in self._shards:
            self._read(shard)
            if shard.pending and self._due(shard):
                delivered += self._deliver(shard)
        return delivered

    def _read(self, shard: _Shard) -> None:
        if shard.iterator is None or len(shard.pending) >= self.batch_size:
            return
        used = shard.iterator
        page = self.streams.get_records(ShardIterator=used, Limit=min(1000, max(1, self.batch_size)))
        shard.iterator = page.get("NextShardIterator")
        _expire_iterator(self.region, used)
        if page.get("Records"):
            if not shard.pending:
                shard.first_seen = time.monotonic()
            shard.pending += page["Records"]

    def _due(self, shard: _Shard) -> bool:
        full = len(shard.pending) >= self.batch_size
        return full or time.monotonic() - shard.first_seen >= self.batching_window_s

    def _deliver(self, shard: _Shard) -> int:
        """Invoke with the next batch until it is done or given up on (retries block the shard, as on Lambda)."""
        batch = shard.pending[: self.batch_size]
        done = self._process(shard, batch)
        shard.pending = shard.pending[len(batch) :]
        shard.first_seen = time.monotonic()
        return done

    def _process(self, shard: _Shard, batch: list[dict[str, Any]]) -> int:
        retries = 0
        while batch and not self._stop.is_set():
            invocation = self.function.invoke({"Records": [self.record(record) for record in batch]})
            if not invocation.failed:
                retry_from = self._retry_from(invocation.payload, batch)
                if retry_from is None:
                    return len(batch)
                batch = batch[retry_from:]
            elif self.bisect_on_error and len(batch) > 1:
                half = len(batch) // 2
                log.warning("%s failed on %d records: bisecting", self.function.logical_id, len(batch))
                return self._process(shard, batch[:half]) + self._process(shard, batch[half:])
            if self._expired(batch) or (0 <= self.maximum_retry_attempts <= retries):
                self._give_up(shard, batch, retries + 1, invocation.failed)
                return len(batch)
            self._stop.wait(RETRY_BACKOFF_S[min(retries, len(RETRY_BACKOFF_S) - 1)])
            retries += 1
        return 0

    def _retry_from(self, payload: Any, batch: list[dict[str, Any]]) -> int | None:
        """The index of the first record to retry (None: the batch succeeded)."""
        if not self.report_batch_item_failures:
            return None
        failures = payload.get("batchItemFailures") if isinstance(payload, dict) else None
        if failures is None and isinstance(payload, dict):
            return None
        if not isinstance(failures, list):
            return 0  # a malformed partial-batch response fails the whole batch
        if not failures:
            return None
        sequence_numbers = [str(record["dynamodb"]["SequenceNumber"]) for record in batch]
        reported = [str(entry.get("itemIdentifier")) if isinstance(entry, dict) else "" for entry in failures]
        if not all(identifier in sequence_numbers for identifier in reported):
            return 0
        return min(sequence_numbers.index(identifier) for identifier in reported)

    def _expired(self, batch: list[dict[str, Any]]) -> bool:
        if self.maximum_record_age_s < 0:
            return False
        oldest = _epoch(batch[0]["dynamodb"].get("ApproximateCreationDateTime"))
        return time.time() - oldest > self.maximum_record_age_s

    def _give_up(self, shard: _Shard, batch: list[dict[str, Any]], invokes: int, function_error: bool) -> None:
        log.error("%s gave up on %d stream records after %d invocations", self.function.logical_id, len(batch), invokes)
        if self.on_failure is None:
            return
        created = [_epoch(record["dynamodb"].get("ApproximateCreationDateTime")) for record in batch]
        self.on_failure(
            {
                "requestContext": {
                    "requestId": str(uuid.uuid4()),
                    "functionArn": self.function.arn,
                    "condition": "RecordAgeExceeded" if self._expired(batch) else "RetryAttemptsExhausted",
                    "approximateInvokeCount": invokes,
                },
                "responseContext": {
                    "statusCode": 200,
                    "executedVersion": "$LATEST",
                    **({"functionError": "Unhandled"} if function_error else {}),
                },
                "version": "1.0",
                "timestamp": _iso(time.time()),
                "DDBStreamBatchInfo": {
                    "shardId": shard.shard_id,
                    "startSequenceNumber": str(batch[0]["dynamodb"]["SequenceNumber"]),
                    "endSequenceNumber": str(batch[-1]["dynamodb"]["SequenceNumber"]),
                    "approximateArrivalOfFirstRecord": _iso(min(created)),
                    "approximateArrivalOfLastRecord": _iso(max(created)),
                    "batchSize": len(batch),
                    "streamArn": self.stream_arn,
                },
            }
        )

    def record(self, record: dict[str, Any]) -> dict[str, Any]:
        """The stream record as Lambda delivers it (creation time in epoch seconds, binary values base64)."""
        dynamodb = _json_ready(dict(record["dynamodb"]))
        dynamodb["ApproximateCreationDateTime"] = int(_epoch(record["dynamodb"].get("ApproximateCreationDateTime")))
        return {
            "eventID": record.get("eventID") or uuid.uuid4().hex,
            "eventName": record["eventName"],
            "eventVersion": "1.1",
            "eventSource": "aws:dynamodb",
            "awsRegion": self.region,
            "dynamodb": dynamodb,
            "eventSourceARN": self.stream_arn,
        }


def _expire_iterator(region: str, iterator: str) -> None:
    """AWS expires a shard iterator after 15 minutes; moto keeps every one it hands out (one per GetRecords), which
    grows without bound in a long-running local stack. Drop the one just used."""
    try:
        from moto.core import DEFAULT_ACCOUNT_ID
        from moto.dynamodbstreams.models import dynamodbstreams_backends

        dynamodbstreams_backends[DEFAULT_ACCOUNT_ID][region].shard_iterators.pop(iterator, None)
    except (ImportError, KeyError, AttributeError):
        pass
