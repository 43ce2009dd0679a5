"""Batch prediction's domain: request parsing, submitting (manifest, job row, execution), predicting one chunk with
the demo digits model, and closing the job (moto S3, DynamoDB tables from template.yaml, Step Functions)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from modelrun.aws.dynamo import plain
from modelrun.aws.s3 import ImageStore
from modelrun.batches.chunks import Chunk, ChunkPredictor
from modelrun.batches.close import BatchCloser, final_status
from modelrun.batches.faults import Faults
from modelrun.batches.manifest import SUBMIT_MARGIN_MS
from modelrun.batches.requests import BatchLimits, BatchRequest, resolve_version
from modelrun.batches.results import ResultObjects
from modelrun.batches.retry import RETRYABLE, BatchRetrier
from modelrun.batches.store import (
    COMPLETED,
    COMPLETED_WITH_ERRORS,
    FAILED,
    FAILED_OUTCOME,
    PREDICTED,
    QUEUED,
    RECOVERING,
    RUNNING,
    JobStore,
    Outcome,
)
from modelrun.batches.submit import BatchSubmitter
from modelrun.errors import (
    Conflict,
    ImageNotFound,
    InvalidRequest,
    NotFound,
    TooManyToList,
    TransientFailure,
    UnknownModel,
)
from modelrun.images.decode import DEFAULT_MAX_BYTES, Limits
from modelrun.models.registry import ModelRegistry
from modelrun.tenants import Tenant
from tests.batchfixtures import BUCKET, DEFAULT, MODELS, BatchAws, TimeLeft, digit_samples, true_label

LIMITS = BatchLimits()
BATCH = "b-20250101T000000-0123456789ab"
PASS_MACHINE = {"StartAt": "Done", "States": {"Done": {"Type": "Pass", "End": True}}}
ROLE = "arn:aws:iam::123456789012:role/modelrun-unit-state-machine"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def registry() -> ModelRegistry:
    """The committed demo model, loaded once for the module (no AWS in it)."""
    return ModelRegistry(MODELS, intra_op_threads=1)


@pytest.fixture
def store(aws: BatchAws) -> JobStore:
    return aws.store


@pytest.fixture
def sfn(aws: BatchAws) -> Any:
    return boto3.client("stepfunctions")


@pytest.fixture
def state_machine(sfn: Any) -> str:
    created = sfn.create_state_machine(name="modelrun-unit-batch", definition=json.dumps(PASS_MACHINE), roleArn=ROLE)
    arn: str = created["stateMachineArn"]
    return arn


@pytest.fixture
def submitter(aws: BatchAws, sfn: Any, state_machine: str, registry: ModelRegistry) -> BatchSubmitter:
    return BatchSubmitter(
        store=aws.store,
        s3=aws.s3,
        sfn=sfn,
        registry=registry,
        bucket=BUCKET,
        state_machine_arn=state_machine,
        default_model="digits",
    ).for_tenant(DEFAULT)


@pytest.fixture
def pool() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(max_workers=4) as executor:
        yield executor


@pytest.fixture
def predictor(aws: BatchAws, registry: ModelRegistry, pool: ThreadPoolExecutor) -> ChunkPredictor:
    return ChunkPredictor(
        store=aws.store,
        images=ImageStore(aws.s3, {BUCKET}),
        registry=registry,
        limits=Limits(),
        pool=pool,
        results=ResultObjects(aws.s3, BUCKET),
    )


@pytest.fixture
def closer(aws: BatchAws) -> BatchCloser:
    return BatchCloser(store=aws.store, s3=aws.s3, bucket=BUCKET)


def parse(**body: Any) -> BatchRequest:
    return BatchRequest.parse(body, LIMITS)


def upload_digits(aws: BatchAws) -> dict[str, str]:
    """One sample of each digit under uploads/; key -> true label."""
    labels = {}
    for sample in digit_samples():
        key = f"uploads/{sample.name}"
        aws.put(key, sample.read_bytes())
        labels[key] = true_label(sample)
    return labels


def new_job(store: JobStore, total: int, *, batch_id: str = BATCH, attempt: int = 1) -> None:
    store.for_tenant(DEFAULT).create(
        {"batch_id": batch_id, "model": "digits", "version": "1", "total": total, "attempt": attempt}
    )


def chunk_of(keys: list[str], *, first_item: int = 0, index: int = 0, attempt: int = 1) -> Chunk:
    return Chunk(
        batch_id=BATCH,
        index=index,
        items=[(first_item + offset, key) for offset, key in enumerate(keys)],
        bucket=BUCKET,
        model="digits",
        version="1",
        tenant=DEFAULT,
        attempt=attempt,
    )


def outcomes_by_item(store: JobStore) -> dict[int, dict[str, Any]]:
    """Each item's record, its prediction's result fields beside the record's own."""
    records = (plain(record) for record in store.iter_outcomes(BATCH))
    return {int(record["item"]): {**record, **record.get("result", {})} for record in records}


# --- BatchRequest.parse -------------------------------------------------------------------------------------


def test_an_inline_request_gets_the_default_chunk_size_and_concurrency() -> None:
    # given a list of images and nothing else
    # when it is parsed
    request = parse(images=["a.png", "b.png"])

    # then the source is the list and the defaults apply
    assert request == BatchRequest(
        model=None,
        version=None,
        source="images",
        value=["a.png", "b.png"],
        chunk_size=LIMITS.default_chunk_size,
        max_concurrency=LIMITS.default_concurrency,
    )


@pytest.mark.parametrize(("source", "value"), [("s3_prefix", "uploads/2025/"), ("manifest", "lists/batch.csv")])
def test_a_prefix_or_manifest_file_request_names_its_source(source: str, value: str) -> None:
    # given one string source
    # when it is parsed, then it is the source
    request = parse(**{source: value})
    assert (request.source, request.value) == (source, value)


def test_a_request_keeps_its_model_version_and_work_split() -> None:
    # given every field
    # when it is parsed
    request = parse(model="digits", version="1", images=["a.png"], chunk_size=25, max_concurrency=4)

    # then each is kept
    assert (request.model, request.version, request.chunk_size, request.max_concurrency) == ("digits", "1", 25, 4)


@pytest.mark.parametrize("body", [[], "images", None, 3], ids=["list", "string", "null", "number"])
def test_a_body_that_is_not_an_object_is_refused(body: Any) -> None:
    # given a JSON body of another type
    # when it is parsed, then it is refused
    with pytest.raises(InvalidRequest, match="the request body must be a JSON object"):
        BatchRequest.parse(body, LIMITS)


@pytest.mark.parametrize(
    "body",
    [{}, {"model": "digits"}, {"images": ["a.png"], "s3_prefix": "x/"}, {"s3_prefix": "x/", "manifest": "m.csv"}],
    ids=["none", "model-only", "images-and-prefix", "prefix-and-manifest"],
)
def test_a_request_must_name_exactly_one_source(body: dict[str, Any]) -> None:
    # given no source or two
    # when it is parsed, then it asks for exactly one
    with pytest.raises(InvalidRequest, match='send exactly one of "images"'):
        BatchRequest.parse(body, LIMITS)


def test_unknown_fields_are_refused_and_named_in_order() -> None:
    # given two misspelt fields
    # when it is parsed, then both are named, sorted
    with pytest.raises(InvalidRequest, match=r"^unknown field\(s\): chunksize, modle$"):
        parse(images=["a.png"], modle="digits", chunksize=5)


@pytest.mark.parametrize("source", ["s3_prefix", "manifest"])
@pytest.mark.parametrize("value", ["", "   ", 5, ["a/"]], ids=["empty", "blank", "number", "list"])
def test_a_string_source_must_be_a_non_empty_string(source: str, value: Any) -> None:
    # given a prefix or manifest that is not a usable string
    # when it is parsed, then the source is named
    with pytest.raises(InvalidRequest, match=f'^"{source}" must be a non-empty string$'):
        parse(**{source: value})


@pytest.mark.parametrize("name", ["model", "version"])
@pytest.mark.parametrize("value", ["", " ", 1, None], ids=["empty", "blank", "number", "null"])
def test_model_and_version_must_be_non_empty_strings(name: str, value: Any) -> None:
    # given a model or version that is not a usable string (a number version included)
    # when it is parsed, then the field is named
    with pytest.raises(InvalidRequest, match=f'^"{name}" must be a non-empty string$'):
        parse(images=["a.png"], **{name: value})


@pytest.mark.parametrize(
    ("name", "maximum"), [("chunk_size", LIMITS.max_chunk_size), ("max_concurrency", LIMITS.max_concurrency)]
)
@pytest.mark.parametrize("edge", ["lowest", "highest"])
def test_the_work_split_accepts_its_bounds(name: str, maximum: int, edge: str) -> None:
    # given 1 or the maximum
    value = 1 if edge == "lowest" else maximum

    # when it is parsed, then it is kept
    assert getattr(parse(images=["a.png"], **{name: value}), name) == value


@pytest.mark.parametrize(
    ("name", "maximum"), [("chunk_size", LIMITS.max_chunk_size), ("max_concurrency", LIMITS.max_concurrency)]
)
@pytest.mark.parametrize(
    "value",
    [0, -1, "over", True, False, 2.0, "10", None],
    ids=["zero", "negative", "over-maximum", "true", "false", "float", "string", "null"],
)
def test_the_work_split_refuses_anything_but_an_integer_within_bounds(name: str, maximum: int, value: Any) -> None:
    # given a value out of bounds, a bool, a float, a string or null
    value = maximum + 1 if value == "over" else value

    # when it is parsed, then the error names the field and its range
    with pytest.raises(InvalidRequest, match=f'^"{name}" must be an integer from 1 to {maximum}, got '):
        parse(images=["a.png"], **{name: value})


# --- resolve_version ----------------------------------------------------------------------------------------


@pytest.fixture
def versions_registry(tmp_path: Path) -> ModelRegistry:
    """A model "shapes" with versions 1, 2 and 10 (resolve_version needs only the folders and their model.json)."""
    for version in ("1", "2", "10"):
        folder = tmp_path / "shapes" / version
        folder.mkdir(parents=True)
        (folder / "model.json").write_text("{}", encoding="utf-8")
    return ModelRegistry(tmp_path)


def test_without_a_version_the_latest_is_used_in_numeric_order(versions_registry: ModelRegistry) -> None:
    # given versions 1, 2 and 10
    # when none is asked for, then 10 is the latest
    assert resolve_version(versions_registry, "shapes", None) == "10"


def test_a_named_version_that_exists_is_used(versions_registry: ModelRegistry) -> None:
    # given versions 1, 2 and 10
    # when 2 is asked for, then 2 is used
    assert resolve_version(versions_registry, "shapes", "2") == "2"


def test_an_unknown_version_is_unknown_model_listing_the_versions(versions_registry: ModelRegistry) -> None:
    # given versions 1, 2 and 10
    # when 3 is asked for
    with pytest.raises(UnknownModel) as caught:
        resolve_version(versions_registry, "shapes", "3")

    # then it is a 404 that lists what exists
    assert (caught.value.code, caught.value.status) == ("unknown_model", 404)
    assert caught.value.message == "model 'shapes' has no version '3'; available: 1, 2, 10"


def test_an_unknown_model_is_unknown_model(versions_registry: ModelRegistry) -> None:
    # given no model "circles"
    # when it is resolved, then it is unknown
    with pytest.raises(UnknownModel, match="circles"):
        resolve_version(versions_registry, "circles", None)


# --- BatchSubmitter.submit ----------------------------------------------------------------------------------


def test_a_submitted_batch_is_a_queued_job_with_its_totals(submitter: BatchSubmitter, store: JobStore) -> None:
    # given five images in chunks of two
    request = parse(images=[f"uploads/{number}.png" for number in range(5)], chunk_size=2, max_concurrency=3)

    # when it is submitted
    submitted = submitter.submit(request)

    # then the job row is queued with the totals, the resolved model and the execution it started
    job = store.get(submitted["batch_id"])
    assert job["status"] == QUEUED
    assert (job["model"], job["version"], job["attempt"]) == ("digits", "1", 1)
    assert (job["total"], job["chunk_count"], job["chunk_size"], job["max_concurrency"]) == (5, 3, 2, 3)
    assert (job["predicted"], job["failed"]) == (0, 0)
    assert job["source"] == {"images": "inline"}
    assert job["manifest_key"] == f"jobs/{submitted['batch_id']}/manifest.json"
    assert job["keys_object"] == f"jobs/{submitted['batch_id']}/keys.jsonl"
    assert job["execution_arn"] == submitted["execution_arn"]


def test_submitting_answers_with_the_id_status_model_total_and_execution(submitter: BatchSubmitter) -> None:
    # given two images
    # when they are submitted
    submitted = submitter.submit(parse(images=["a.png", "b.png"]))

    # then the answer is the new batch, queued
    assert set(submitted) == {"batch_id", "status", "model", "version", "total", "execution_arn"}
    assert (submitted["status"], submitted["total"]) == ("QUEUED", 2)
    assert submitted["batch_id"].startswith("b-")


def test_a_submitted_batch_has_its_keys_file_and_manifest_written(submitter: BatchSubmitter, aws: BatchAws) -> None:
    # given three images in chunks of two
    keys = ["uploads/a.png", "uploads/b.png", "uploads/c.png"]

    # when they are submitted
    batch_id = submitter.submit(parse(images=keys, chunk_size=2))["batch_id"]

    # then the keys file lists them in order and the manifest has two chunks
    lines = aws.text(f"jobs/{batch_id}/keys.jsonl").splitlines()
    assert [json.loads(line) for line in lines] == keys
    chunks = json.loads(aws.text(f"jobs/{batch_id}/manifest.json"))
    assert [(chunk["index"], chunk["first_item"], chunk["count"]) for chunk in chunks] == [(0, 0, 2), (1, 2, 1)]


def test_a_submitted_batch_starts_an_execution_named_by_its_id_with_the_documented_input(
    submitter: BatchSubmitter, sfn: Any, state_machine: str
) -> None:
    # given a request with a concurrency limit
    # when it is submitted
    submitted = submitter.submit(parse(images=["a.png"], max_concurrency=7))
    batch_id = submitted["batch_id"]

    # then the execution of the state machine is named by the batch id and has the documented input
    execution = sfn.describe_execution(executionArn=submitted["execution_arn"])
    assert execution["stateMachineArn"] == state_machine
    assert execution["name"] == batch_id
    assert json.loads(execution["input"]) == {
        "batch_id": batch_id,
        "tenant": "default",
        "model": "digits",
        "version": "1",
        "bucket": BUCKET,
        "manifest": {"bucket": BUCKET, "key": f"jobs/{batch_id}/manifest.json"},
        "keys_object": f"jobs/{batch_id}/keys.jsonl",
        "max_concurrency": 7,
        "attempt": 1,
        "faults": {
            "transient_rate": 0.0,
            "timeout_rate": 0.0,
            "exit_rate": 0.0,
            "segfault_rate": 0.0,
            "memory_rate": 0.0,
            "fail_chunks": [],
        },
        "dataset": {},
    }


def test_a_prefix_batch_takes_every_object_under_the_prefix(submitter: BatchSubmitter, aws: BatchAws) -> None:
    # given three objects under a prefix and a folder placeholder
    for key in ("set/", "set/a.png", "set/b.png", "set/c.png"):
        aws.put(key, b"")

    # when the prefix is submitted
    submitted = submitter.submit(parse(s3_prefix="set/"))

    # then the batch holds the three objects and records its source
    assert submitted["total"] == 3
    assert aws.store.get(submitted["batch_id"])["source"] == {"s3_prefix": "set/"}


def test_a_manifest_file_batch_takes_the_files_keys(submitter: BatchSubmitter, aws: BatchAws) -> None:
    # given a CSV list of two keys
    aws.put("lists/run.csv", b"key\nuploads/a.png\nuploads/b.png\n")

    # when it is submitted
    submitted = submitter.submit(parse(manifest="lists/run.csv"))

    # then the batch holds them and records its source
    assert submitted["total"] == 2
    assert aws.store.get(submitted["batch_id"])["source"] == {"manifest": "lists/run.csv"}


def test_an_empty_batch_is_refused_before_any_job_or_execution(
    submitter: BatchSubmitter, aws: BatchAws, sfn: Any, state_machine: str
) -> None:
    # given a prefix with nothing under it
    # when it is submitted
    with pytest.raises(InvalidRequest, match="the batch names no images"):
        submitter.submit(parse(s3_prefix="empty/"))

    # then no job, no object and no execution exist
    assert aws.jobs.scan()["Items"] == []
    assert aws.object_keys() == []
    assert sfn.list_executions(stateMachineArn=state_machine)["executions"] == []


def test_a_missing_manifest_file_is_image_not_found_and_starts_nothing(
    submitter: BatchSubmitter, aws: BatchAws
) -> None:
    # given no list file
    # when it is submitted, then it is not found and no job was made
    with pytest.raises(ImageNotFound, match=r"lists/none\.jsonl"):
        submitter.submit(parse(manifest="lists/none.jsonl"))
    assert aws.jobs.scan()["Items"] == []


PLENTY_MS = 20_000
SHORT_MS = SUBMIT_MARGIN_MS - 1


def timed(submitter: BatchSubmitter, time_left: TimeLeft) -> BatchSubmitter:
    """The submitter in an invocation with that much time left, checking it every 10 keys."""
    return dataclasses.replace(submitter, remaining_ms=time_left, deadline_check_every=10)


def test_a_prefix_that_cannot_be_listed_in_time_is_refused_with_its_count_and_starts_nothing(
    submitter: BatchSubmitter, aws: BatchAws, sfn: Any, state_machine: str
) -> None:
    # given 25 objects under a prefix, and time that runs short at the third check
    for number in range(25):
        aws.put(f"set/{number:02d}.png", b"")
    late = timed(submitter, TimeLeft(PLENTY_MS, PLENTY_MS, SHORT_MS))

    # when the prefix is submitted
    with pytest.raises(TooManyToList) as caught:
        late.submit(parse(s3_prefix="set/"))

    # then it is a 413 naming the 20 keys listed, and no job, no execution and no jobs/ object exist
    assert (caught.value.code, caught.value.status) == ("too_many_to_list", 413)
    assert "after 20 keys" in caught.value.message
    assert aws.jobs.scan()["Items"] == []
    assert sfn.list_executions(stateMachineArn=state_machine)["executions"] == []
    assert [key for key in aws.object_keys() if key.startswith("jobs/")] == []


def test_a_prefix_listed_within_time_is_submitted_whole(submitter: BatchSubmitter, aws: BatchAws) -> None:
    # given 25 objects under a prefix and time enough throughout
    for number in range(25):
        aws.put(f"set/{number:02d}.png", b"")
    time_left = TimeLeft(PLENTY_MS)

    # when the prefix is submitted
    submitted = timed(submitter, time_left).submit(parse(s3_prefix="set/"))

    # then the batch holds every object, and the time left was asked per 10 keys
    assert submitted["total"] == 25
    assert aws.store.get(submitted["batch_id"])["total"] == 25
    assert time_left.calls == 3


def test_a_manifest_file_that_cannot_be_read_in_time_is_refused_and_starts_nothing(
    submitter: BatchSubmitter, aws: BatchAws, sfn: Any, state_machine: str
) -> None:
    # given a list file of 25 keys, and time that runs short at the second check
    aws.put("lists/big.jsonl", "".join(f'"set/{number:02d}.png"\n' for number in range(25)).encode())
    late = timed(submitter, TimeLeft(PLENTY_MS, SHORT_MS))

    # when it is submitted
    with pytest.raises(TooManyToList, match=r"manifest file 'lists/big\.jsonl' after 10 keys"):
        late.submit(parse(manifest="lists/big.jsonl"))

    # then no job and no execution exist
    assert aws.jobs.scan()["Items"] == []
    assert sfn.list_executions(stateMachineArn=state_machine)["executions"] == []


def test_an_inline_list_is_never_refused_for_time(submitter: BatchSubmitter) -> None:
    # given an invocation already short of time
    time_left = TimeLeft(SHORT_MS)

    # when an inline list is submitted, then it is (the list is in memory already) and the time was not asked
    assert timed(submitter, time_left).submit(parse(images=["a.png", "b.png"]))["total"] == 2
    assert time_left.calls == 0


def test_an_unknown_model_is_refused_before_anything_is_written(submitter: BatchSubmitter, aws: BatchAws) -> None:
    # given a model that does not exist
    # when a batch for it is submitted
    with pytest.raises(UnknownModel):
        submitter.submit(parse(model="letters", images=["a.png"]))

    # then nothing was written
    assert aws.object_keys() == []
    assert aws.jobs.scan()["Items"] == []


def test_an_unknown_version_of_a_known_model_is_refused(submitter: BatchSubmitter) -> None:
    # given a version the demo model does not have
    # when a batch for it is submitted, then it names the version
    with pytest.raises(UnknownModel, match="has no version '9'"):
        submitter.submit(parse(model="digits", version="9", images=["a.png"]))


# --- Chunk.from_event ---------------------------------------------------------------------------------------


def test_a_chunk_event_reads_its_keys_from_the_keys_file(submitter: BatchSubmitter, aws: BatchAws) -> None:
    # given a submitted batch of five in chunks of two
    keys = [f"uploads/{number}.png" for number in range(5)]
    batch_id = submitter.submit(parse(images=keys, chunk_size=2))["batch_id"]
    second = json.loads(aws.text(f"jobs/{batch_id}/manifest.json"))[1]

    # when the Map iteration of its second chunk arrives (numbers as the state machine passes them)
    event = {
        "batch_id": batch_id,
        "tenant": "default",
        "bucket": BUCKET,
        "keys_object": f"jobs/{batch_id}/keys.jsonl",
        "model": "digits",
        "version": 1,
        "chunk": second,
    }
    chunk = Chunk.from_event(event, aws.s3)

    # then it is that chunk with its own items, attempt 1 and no faults by default
    assert chunk == Chunk(
        batch_id=batch_id,
        index=1,
        items=[(2, keys[2]), (3, keys[3])],
        bucket=BUCKET,
        model="digits",
        version="1",
        tenant=DEFAULT,
        attempt=1,
        faults=Faults(),
    )


# --- ChunkPredictor.run -------------------------------------------------------------------------------------


def test_every_image_of_a_chunk_gets_one_prediction_with_its_true_label(
    predictor: ChunkPredictor, aws: BatchAws
) -> None:
    # given one sample of each digit and a job for them
    labels = upload_digits(aws)
    keys = list(labels)
    new_job(aws.store, total=len(keys))

    # when the chunk runs
    summary = predictor.run(chunk_of(keys))

    # then each item has one prediction, the sample's digit, under its own item number
    outcomes = outcomes_by_item(aws.store)
    assert sorted(outcomes) == list(range(10))
    assert {outcomes[item]["key"]: outcomes[item]["label"] for item in outcomes} == labels
    assert {outcome["status"] for outcome in outcomes.values()} == {PREDICTED}
    assert all(outcomes[item]["key"] == keys[item] for item in outcomes)
    assert (summary["images"], summary["predicted"], summary["failed"], summary["newly_recorded"]) == (10, 10, 0, 10)


def test_a_chunk_numbers_its_items_from_its_first_item(predictor: ChunkPredictor, aws: BatchAws) -> None:
    # given the third chunk of a batch, starting at item 20
    keys = list(upload_digits(aws))[:3]
    new_job(aws.store, total=23)

    # when it runs
    predictor.run(chunk_of(keys, first_item=20, index=2))

    # then its outcomes are items 20..22 of chunk 2
    outcomes = outcomes_by_item(aws.store)
    assert {item: (outcome["key"], outcome["chunk"]) for item, outcome in outcomes.items()} == {
        20: (keys[0], 2),
        21: (keys[1], 2),
        22: (keys[2], 2),
    }


def test_a_chunk_moves_the_job_counters_by_its_outcomes(predictor: ChunkPredictor, aws: BatchAws) -> None:
    # given three good images and one missing
    keys = [*list(upload_digits(aws))[:3], "uploads/missing.png"]
    new_job(aws.store, total=4)

    # when the chunk runs
    predictor.run(chunk_of(keys))

    # then the job counts three predicted and one failed
    job = aws.store.get(BATCH)
    assert (job["predicted"], job["failed"]) == (3, 1)


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (PNG_SIGNATURE + b"\x00\x00\x00\rIHDR\x00\x00", "invalid_image"),
        (b"this is not an image", "invalid_image"),
        (b"", "invalid_image"),
        (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n", "unsupported_media_type"),
        (PNG_SIGNATURE + bytes(DEFAULT_MAX_BYTES), "image_too_large"),
        (None, "image_not_found"),
    ],
    ids=["truncated-png", "text", "empty", "pdf", "over-size", "missing"],
)
def test_a_bad_image_is_a_failed_outcome_with_its_code_and_its_neighbours_are_predicted(
    predictor: ChunkPredictor, aws: BatchAws, body: bytes | None, code: str
) -> None:
    # given a bad image between two good ones
    good = list(upload_digits(aws))
    if body is not None:
        aws.put("uploads/bad", body)
    new_job(aws.store, total=3)

    # when the chunk runs
    summary = predictor.run(chunk_of([good[0], "uploads/bad", good[1]]))

    # then the bad one failed with its stable code and message, and the others were predicted
    outcomes = outcomes_by_item(aws.store)
    assert (outcomes[1]["status"], outcomes[1]["error_code"]) == (FAILED_OUTCOME, code)
    assert outcomes[1]["error_message"]
    assert (outcomes[0]["label"], outcomes[2]["label"]) == ("0", "1")
    assert (summary["predicted"], summary["failed"]) == (2, 1)


def test_rerunning_a_chunk_records_nothing_new_and_leaves_the_counters(
    predictor: ChunkPredictor, aws: BatchAws
) -> None:
    # given a chunk with one missing image that has run once
    keys = [*list(upload_digits(aws))[:2], "uploads/missing.png"]
    new_job(aws.store, total=3)
    predictor.run(chunk_of(keys))
    before = (outcomes_by_item(aws.store), aws.store.get(BATCH))

    # when the same chunk runs again (a redelivery), even with the missing image now there
    aws.put("uploads/missing.png", digit_samples()[5].read_bytes())
    summary = predictor.run(chunk_of(keys))

    # then nothing new is recorded and neither outcomes nor counters move
    assert summary["newly_recorded"] == 0
    assert (outcomes_by_item(aws.store), aws.store.get(BATCH)) == before


def test_a_later_attempt_replaces_only_the_failures(predictor: ChunkPredictor, aws: BatchAws) -> None:
    # given attempt 1 of a chunk that failed on a missing image
    keys = [*list(upload_digits(aws))[:2], "uploads/late.png"]
    new_job(aws.store, total=3)
    predictor.run(chunk_of(keys, attempt=1))
    first_prediction = outcomes_by_item(aws.store)[0]

    # when the image arrives and attempt 2 (started after attempt 1 ended with the failure) runs the chunk
    aws.store.close(BATCH, COMPLETED_WITH_ERRORS)
    assert aws.store.start_attempt(BATCH, seen_attempt=1, statuses=RETRYABLE)
    aws.put("uploads/late.png", digit_samples()[7].read_bytes())
    summary = predictor.run(chunk_of(keys, attempt=2))

    # then the failure became a prediction, the earlier prediction stayed, and the counters moved by one
    outcomes = outcomes_by_item(aws.store)
    assert (outcomes[2]["status"], outcomes[2]["label"], outcomes[2]["attempt"]) == (PREDICTED, "7", 2)
    assert outcomes[0] == first_prediction
    assert summary["newly_recorded"] == 1
    job = aws.store.get(BATCH)
    assert (job["predicted"], job["failed"]) == (3, 0)


def test_only_the_given_items_of_a_chunk_are_run(predictor: ChunkPredictor, aws: BatchAws) -> None:
    # given a chunk of five from item 10
    keys = list(upload_digits(aws))[:5]
    new_job(aws.store, total=15)

    # when only two of its items are asked for
    summary = predictor.run(chunk_of(keys, first_item=10), only={11, 14})

    # then only those two have outcomes, under their own item numbers
    outcomes = outcomes_by_item(aws.store)
    assert {item: outcome["key"] for item, outcome in outcomes.items()} == {11: keys[1], 14: keys[4]}
    assert summary["images"] == 2
    assert aws.store.get(BATCH)["predicted"] == 2


def test_a_key_named_twice_in_a_chunk_gets_an_outcome_per_item(predictor: ChunkPredictor, aws: BatchAws) -> None:
    # given a chunk that names the same image twice
    key = next(iter(upload_digits(aws)))
    new_job(aws.store, total=2)

    # when it runs
    predictor.run(chunk_of([key, key]))

    # then both items have the prediction
    assert [outcome["label"] for outcome in outcomes_by_item(aws.store).values()] == ["0", "0"]
    assert aws.store.get(BATCH)["predicted"] == 2


# --- BatchCloser.try_close ----------------------------------------------------------------------------------


def record(store: JobStore, item: int, *, ok: bool = True, attempt: int = 1) -> None:
    if ok:
        outcome = Outcome(
            item=item,
            key=f"k{item}",
            chunk=0,
            status=PREDICTED,
            attempt=attempt,
            result={"label": "4", "score": 0.75, "top_k": [{"label": "4", "score": 0.75}]},
        )
    else:
        outcome = Outcome(
            item=item,
            key=f"k{item}",
            chunk=0,
            status=FAILED_OUTCOME,
            attempt=attempt,
            error_code="invalid_image",
            error_message="corrupt",
        )
    store.record_outcome(BATCH, outcome)


def results_lines(aws: BatchAws, attempt: int = 1) -> list[dict[str, Any]]:
    return [json.loads(line) for line in aws.text(f"results/{BATCH}/results-{attempt}.jsonl").splitlines()]


def test_a_batch_with_missing_outcomes_waits_for_recovery_with_its_pending_count(
    closer: BatchCloser, aws: BatchAws
) -> None:
    # given a running job of five with three outcomes, the last of whose writers has not added it to the counters yet
    new_job(aws.store, total=5)
    aws.store.update(BATCH, status=RUNNING)
    for item in (0, 1, 2):
        record(aws.store, item, ok=item != 1)
    aws.store.add_counts(BATCH, predicted=1, failed=1)

    # when it is closed, and then that writer adds its outcome
    result = closer.try_close(BATCH)
    aws.store.add_counts(BATCH, predicted=1, failed=0)

    # then it is RECOVERING with two pending, its counters exact (the writer's ADD was not lost), and no results file
    assert result == {"batch_id": BATCH, "status": RECOVERING, "pending": 2, "closed": False}
    job = aws.store.get(BATCH)
    assert (job["status"], job["predicted"], job["failed"]) == (RECOVERING, 2, 1)
    assert aws.object_keys() == []


def test_a_recount_while_the_map_may_still_run_keeps_the_status_and_reports_pending(
    closer: BatchCloser, aws: BatchAws
) -> None:
    # given a running job of four with one outcome
    new_job(aws.store, total=4)
    aws.store.update(BATCH, status=RUNNING)
    record(aws.store, 0)

    # when recovery (not the end of the Map) tries to close it
    result = closer.try_close(BATCH, map_done=False)

    # then it stays RUNNING, with three pending and its counters still the writers' (none added yet)
    assert result == {"batch_id": BATCH, "status": RUNNING, "pending": 3, "closed": False}
    job = aws.store.get(BATCH)
    assert (job["status"], job["predicted"], job["failed"]) == (RUNNING, 0, 0)


def test_a_batch_whose_images_were_all_predicted_completes(closer: BatchCloser, aws: BatchAws) -> None:
    # given a job of three, all predicted
    new_job(aws.store, total=3)
    for item in range(3):
        record(aws.store, item)

    # when it is closed
    result = closer.try_close(BATCH)

    # then it is COMPLETED with its counts, finish time and results file
    assert result == {"batch_id": BATCH, "status": COMPLETED, "closed": True, "predicted": 3, "failed": 0}
    job = aws.store.get(BATCH)
    assert (job["status"], job["predicted"], job["failed"]) == (COMPLETED, 3, 0)
    assert job["results_key"] == f"results/{BATCH}/results-1.jsonl"
    assert job["finished_at"].endswith("Z")


def test_a_batch_with_some_failures_completes_with_errors(closer: BatchCloser, aws: BatchAws) -> None:
    # given a job of three, one failed
    new_job(aws.store, total=3)
    for item in range(3):
        record(aws.store, item, ok=item != 2)

    # when it is closed, then it completed with errors
    result = closer.try_close(BATCH)
    assert (result["status"], result["predicted"], result["failed"]) == (COMPLETED_WITH_ERRORS, 2, 1)
    assert aws.store.get(BATCH)["status"] == COMPLETED_WITH_ERRORS


def test_a_batch_whose_images_all_failed_is_failed(closer: BatchCloser, aws: BatchAws) -> None:
    # given a job of two, both failed
    new_job(aws.store, total=2)
    for item in range(2):
        record(aws.store, item, ok=False)

    # when it is closed, then it failed
    assert closer.try_close(BATCH)["status"] == FAILED
    assert aws.store.get(BATCH)["status"] == FAILED


def test_the_results_file_has_one_line_per_outcome_in_item_order(closer: BatchCloser, aws: BatchAws) -> None:
    # given a job of three outcomes recorded out of order, one failed
    new_job(aws.store, total=3)
    for item in (2, 0, 1):
        record(aws.store, item, ok=item != 1)

    # when it is closed
    closer.try_close(BATCH)

    # then the results file lists each outcome once, in item order, as the API shows them
    lines = results_lines(aws)
    assert [line["item"] for line in lines] == [0, 1, 2]
    assert (lines[0]["key"], lines[0]["label"], lines[0]["score"]) == ("k0", "4", 0.75)
    assert lines[1]["error"] == {"code": "invalid_image", "message": "corrupt"}
    head = aws.s3.head_object(Bucket=BUCKET, Key=f"results/{BATCH}/results-1.jsonl")
    assert head["ContentType"] == "application/x-ndjson"


def test_the_results_file_is_named_after_the_jobs_attempt(closer: BatchCloser, aws: BatchAws) -> None:
    # given a job on its second attempt
    new_job(aws.store, total=1, attempt=2)
    record(aws.store, 0, attempt=2)

    # when it is closed
    closer.try_close(BATCH)

    # then the results are results-2.jsonl
    assert aws.object_keys() == [f"results/{BATCH}/results-2.jsonl"]
    assert aws.store.get(BATCH)["results_key"] == f"results/{BATCH}/results-2.jsonl"


def test_a_batch_closes_once_and_a_second_close_reports_it_was_already_closed(
    closer: BatchCloser, aws: BatchAws
) -> None:
    # given a job closed once
    new_job(aws.store, total=1)
    record(aws.store, 0)
    closer.try_close(BATCH)
    finished = aws.store.get(BATCH)["finished_at"]

    # when it is closed again
    result = closer.try_close(BATCH)

    # then nothing closes a second time and the job is unchanged
    assert result == {"batch_id": BATCH, "status": COMPLETED, "closed": False}
    assert aws.store.get(BATCH)["finished_at"] == finished


def test_a_recovering_batch_closes_once_its_last_outcomes_arrive(closer: BatchCloser, aws: BatchAws) -> None:
    # given a job left RECOVERING with one of two outcomes
    new_job(aws.store, total=2)
    record(aws.store, 0)
    assert closer.try_close(BATCH)["status"] == RECOVERING

    # when the missing one is recorded and it is closed again
    record(aws.store, 1, ok=False)
    result = closer.try_close(BATCH)

    # then it closes with both
    assert (result["status"], result["closed"]) == (COMPLETED_WITH_ERRORS, True)
    assert [line["item"] for line in results_lines(aws)] == [0, 1]


def test_closing_calls_back_once_with_the_closed_job(aws: BatchAws) -> None:
    # given a closer that notifies, and a finished job
    notified: list[dict[str, Any]] = []
    closer = BatchCloser(store=aws.store, s3=aws.s3, bucket=BUCKET, on_closed=notified.append)
    new_job(aws.store, total=1)
    record(aws.store, 0)

    # when it is closed twice
    closer.try_close(BATCH)
    closer.try_close(BATCH)

    # then the callback ran once, with the job as stored after closing
    assert [(job["batch_id"], job["status"]) for job in notified] == [(BATCH, COMPLETED)]
    assert notified[0]["results_key"] == f"results/{BATCH}/results-1.jsonl"


class FinalizeAndRecoverRace(JobStore):
    """A store on which another closer closes the job right after this one has read (recounted) its outcomes."""

    def iter_outcomes(self, batch_id: str, *, status: str | None = None) -> Iterator[dict[str, Any]]:
        outcomes = list(super().iter_outcomes(batch_id, status=status))
        yield from outcomes
        predicted = sum(1 for outcome in outcomes if outcome["status"] == PREDICTED)
        assert self.close(batch_id, COMPLETED, predicted=predicted, failed=len(outcomes) - predicted)


def test_a_closer_that_loses_the_race_reports_closed_false_and_does_not_call_back(aws: BatchAws) -> None:
    # given a finished job, and another closer that closes it while this one is between its recount and its close
    notified: list[dict[str, Any]] = []
    racing = FinalizeAndRecoverRace(aws.jobs, aws.items)
    closer = BatchCloser(store=racing, s3=aws.s3, bucket=BUCKET, on_closed=notified.append)
    new_job(aws.store, total=1)
    record(aws.store, 0)

    # when this closer tries to close it
    result = closer.try_close(BATCH)

    # then it reports that it did not close it, and nobody is told twice
    assert result["closed"] is False
    assert notified == []
    assert aws.store.get(BATCH)["status"] == COMPLETED


# --- BatchRetrier.retry ------------------------------------------------------------------------------------


@pytest.fixture
def retrier(aws: BatchAws, sfn: Any, state_machine: str) -> BatchRetrier:
    return BatchRetrier(store=aws.store, s3=aws.s3, sfn=sfn, bucket=BUCKET, state_machine_arn=state_machine)


def ended_with_one_failure(submitter: BatchSubmitter, closer: BatchCloser, aws: BatchAws) -> str:
    """A closed batch of three whose item 2 failed; its id."""
    batch_id: str = submitter.submit(parse(images=["uploads/a.png", "uploads/b.png", "uploads/c.png"]))["batch_id"]
    for item in range(3):
        outcome = Outcome(
            item=item, key=f"k{item}", chunk=0, status=PREDICTED, result={"label": "4", "score": 0.5, "top_k": []}
        )
        if item == 2:
            outcome = Outcome(item=2, key="k2", chunk=0, status=FAILED_OUTCOME, error_code="image_not_found")
        aws.store.record_outcome(batch_id, outcome)
    assert closer.try_close(batch_id)["status"] == COMPLETED_WITH_ERRORS
    return batch_id


def test_a_retried_batch_does_not_close_while_its_new_attempt_has_not_recorded_the_failed_image(
    submitter: BatchSubmitter, closer: BatchCloser, retrier: BatchRetrier, aws: BatchAws
) -> None:
    # given a batch that ended with one failed image, retried as attempt 2
    batch_id = ended_with_one_failure(submitter, closer, aws)
    started = retrier.retry(batch_id)
    assert (started["attempt"], started["retried"]) == (2, 1)

    # when recovery tries to close it before attempt 2 has recorded that image
    early = closer.try_close(batch_id, map_done=False)

    # then it stays open with the image pending, and closes once attempt 2 predicts it
    assert (early["closed"], early["pending"], aws.store.get(batch_id)["status"]) == (False, 1, QUEUED)
    prediction = Outcome(
        item=2, key="k2", chunk=0, status=PREDICTED, attempt=2, result={"label": "4", "score": 0.5, "top_k": []}
    )
    aws.store.record_outcome(batch_id, prediction)
    closed = closer.try_close(batch_id)
    assert (closed["closed"], closed["status"], closed["predicted"], closed["failed"]) == (True, COMPLETED, 3, 0)


class AnotherRetryInBetween(JobStore):
    """A store on which another retry starts the next attempt right after this one has read the job."""

    other_retry: Any = None

    def get(self, batch_id: str) -> dict[str, Any]:
        job = super().get(batch_id)
        other, self.other_retry = self.other_retry, None
        if other is not None:
            other(batch_id)
        return job


def test_of_two_retries_at_once_only_one_starts_an_attempt_and_the_other_is_a_conflict(
    submitter: BatchSubmitter, closer: BatchCloser, retrier: BatchRetrier, aws: BatchAws, sfn: Any, state_machine: str
) -> None:
    # given a batch that ended with a failure, and a retry that another retry overtakes after reading the job
    batch_id = ended_with_one_failure(submitter, closer, aws)
    racing = AnotherRetryInBetween(aws.jobs, aws.items)
    racing.other_retry = retrier.retry
    overtaken = BatchRetrier(store=racing, s3=aws.s3, sfn=sfn, bucket=BUCKET, state_machine_arn=state_machine)

    # when the overtaken retry goes on
    with pytest.raises(Conflict):
        overtaken.retry(batch_id)

    # then one attempt 2 runs: one execution for it, and the job at attempt 2
    names = [execution["name"] for execution in sfn.list_executions(stateMachineArn=state_machine)["executions"]]
    assert sorted(names) == sorted([batch_id, f"{batch_id}-a2"])
    assert aws.store.get(batch_id)["attempt"] == 2


class ThrottledStepFunctions:
    """Step Functions that refuses to start executions, as when the account is throttled."""

    def __init__(self, sfn: Any) -> None:
        self.sfn = sfn

    def start_execution(self, **request: Any) -> dict[str, Any]:
        error = {"Error": {"Code": "ThrottlingException", "Message": "Rate exceeded"}}
        raise ClientError(error, "StartExecution")  # type: ignore[arg-type]

    def __getattr__(self, name: str) -> Any:
        return getattr(self.sfn, name)


def test_a_batch_whose_execution_cannot_start_is_recovering_and_the_error_is_transient(
    aws: BatchAws, sfn: Any, state_machine: str, registry: ModelRegistry
) -> None:
    # given a submitter whose Step Functions is throttled
    throttled = BatchSubmitter(
        store=aws.store,
        s3=aws.s3,
        sfn=ThrottledStepFunctions(sfn),
        registry=registry,
        bucket=BUCKET,
        state_machine_arn=state_machine,
        default_model="digits",
    ).for_tenant(DEFAULT)

    # when a batch is submitted
    with pytest.raises(TransientFailure):
        throttled.submit(parse(images=["uploads/a.png"]))

    # then the job is registered RECOVERING with the reason (a retry starts it), not QUEUED forever
    (job,) = [plain(item) for item in aws.jobs.scan()["Items"]]
    assert job["status"] == RECOVERING
    assert "ThrottlingException" in job["execution_error"]


def test_a_retry_whose_execution_cannot_start_leaves_the_batch_recovering_and_a_later_retry_starts_it(
    submitter: BatchSubmitter, closer: BatchCloser, retrier: BatchRetrier, aws: BatchAws, sfn: Any, state_machine: str
) -> None:
    # given a batch that ended with a failure, and a retry while Step Functions is throttled
    batch_id = ended_with_one_failure(submitter, closer, aws)
    throttled = BatchRetrier(
        store=aws.store, s3=aws.s3, sfn=ThrottledStepFunctions(sfn), bucket=BUCKET, state_machine_arn=state_machine
    )
    with pytest.raises(TransientFailure):
        throttled.retry(batch_id)
    assert (aws.store.get(batch_id)["status"], aws.store.get(batch_id)["attempt"]) == (RECOVERING, 2)

    # when it is retried again once Step Functions answers
    started = retrier.retry(batch_id)

    # then attempt 3 runs the failed image
    assert (started["attempt"], started["retried"], started["status"]) == (3, 1, QUEUED)


def test_a_retry_that_runs_out_of_time_is_too_many_to_list_and_leaves_the_batch_as_it_was(
    submitter: BatchSubmitter, closer: BatchCloser, aws: BatchAws, sfn: Any, state_machine: str
) -> None:
    # given a batch that ended with a failure, and a retry whose invocation is short of time
    batch_id = ended_with_one_failure(submitter, closer, aws)
    before = aws.store.get(batch_id)
    hurried = BatchRetrier(
        store=aws.store,
        s3=aws.s3,
        sfn=sfn,
        bucket=BUCKET,
        state_machine_arn=state_machine,
        remaining_ms=TimeLeft(SHORT_MS),
    )

    # when it is retried
    with pytest.raises(TooManyToList, match="the batch is unchanged"):
        hurried.retry(batch_id)

    # then the job is as it was (still retryable), and no execution of attempt 2 started
    after = aws.store.get(batch_id)
    assert (after["status"], after["attempt"], after["failed"]) == (before["status"], 1, before["failed"])
    names = [execution["name"] for execution in sfn.list_executions(stateMachineArn=state_machine)["executions"]]
    assert names == [batch_id]


class RecoverClosesAfterTheRecount(JobStore):
    """A store on which recover records the last outcome and closes the job right after this closer's recount."""

    def iter_outcomes(self, batch_id: str, *, status: str | None = None) -> Iterator[dict[str, Any]]:
        yield from list(super().iter_outcomes(batch_id, status=status))
        record(self, 1)
        assert JobStore(self.jobs, self.items).close(batch_id, COMPLETED, predicted=2, failed=0)


def test_a_finalize_that_loses_the_race_to_recover_does_not_reopen_the_job_it_closed(aws: BatchAws) -> None:
    # given a running job of two with one outcome, whose last outcome recover records and closes meanwhile
    new_job(aws.store, total=2)
    aws.store.update(BATCH, status=RUNNING)
    record(aws.store, 0)
    finalize = BatchCloser(store=RecoverClosesAfterTheRecount(aws.jobs, aws.items), s3=aws.s3, bucket=BUCKET)

    # when finalize, which counted one pending, goes on
    result = finalize.try_close(BATCH)

    # then it reports the job recover closed, which stays COMPLETED (RECOVERING would wait for nothing, forever)
    assert result == {"batch_id": BATCH, "status": COMPLETED, "closed": False}
    assert aws.store.get(BATCH)["status"] == COMPLETED


def test_closing_an_unknown_batch_is_not_found(closer: BatchCloser) -> None:
    # given no job
    # when it is closed, then it is not found
    with pytest.raises(NotFound, match="no batch 'b-ghost'"):
        closer.try_close("b-ghost")


# --- final_status -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("predicted", "failed", "status"),
    [(5, 0, COMPLETED), (4, 1, COMPLETED_WITH_ERRORS), (1, 4, COMPLETED_WITH_ERRORS), (0, 5, FAILED)],
)
def test_the_final_status_follows_from_the_counts(predicted: int, failed: int, status: str) -> None:
    # given final counts
    # when the status is derived, then it is the documented one
    assert final_status(predicted, failed) == status


def test_a_tenants_submitter_creates_the_tenants_job_which_no_other_tenant_reads(submitter: BatchSubmitter) -> None:
    # given tenant acme's image
    acme = Tenant("acme")

    # when acme submits it
    submitted = submitter.for_tenant(acme).submit(parse(images=["tenants/acme/a.png"]))

    # then the job is acme's: found for acme, not found for another tenant (as a missing one)
    assert submitter.store.for_tenant(acme).get(submitted["batch_id"])["tenant"] == "acme"
    with pytest.raises(NotFound):
        submitter.store.for_tenant(Tenant("other")).get(submitted["batch_id"])


def test_a_tenant_cannot_submit_keys_outside_its_space(submitter: BatchSubmitter) -> None:
    with pytest.raises(ImageNotFound):
        submitter.for_tenant(Tenant("acme")).submit(parse(images=["tenants/acme/a.png", "tenants/other/b.png"]))
    with pytest.raises(ImageNotFound):
        submitter.for_tenant(Tenant("acme")).submit(parse(manifest="tenants/other/list.jsonl"))


def test_a_named_tenants_batch_files_and_execution_are_in_its_space(
    submitter: BatchSubmitter, aws: BatchAws, sfn: Any
) -> None:
    # given tenant acme's images
    acme = submitter.for_tenant(Tenant("acme"))

    # when acme submits them
    submitted = acme.submit(parse(images=["tenants/acme/a.png", "tenants/acme/b.png"]))
    batch_id = submitted["batch_id"]

    # then its keys file and manifest are under acme's prefix, and the execution names acme for its chunks
    job = acme.store.get(batch_id)
    assert job["keys_object"] == f"tenants/acme/jobs/{batch_id}/keys.jsonl"
    assert job["manifest_key"] == f"tenants/acme/jobs/{batch_id}/manifest.json"
    assert sorted(aws.object_keys()) == sorted([job["keys_object"], job["manifest_key"]])
    execution = json.loads(sfn.describe_execution(executionArn=submitted["execution_arn"])["input"])
    assert (execution["tenant"], execution["keys_object"]) == ("acme", job["keys_object"])
    assert execution["manifest"]["key"] == job["manifest_key"]


def test_an_unscoped_submitter_submits_nothing(submitter: BatchSubmitter, aws: BatchAws) -> None:
    # given the submitter a function builds its tenants' views from
    unscoped = dataclasses.replace(submitter, store=aws.store, tenant=None)

    # when it is asked to submit, then it refuses, as a wiring mistake, before writing anything
    with pytest.raises(RuntimeError, match="for_tenant"):
        unscoped.submit(parse(images=["a.png"]))
    assert aws.object_keys() == []


def test_a_named_tenants_chunk_results_file_and_retry_are_in_its_space(
    submitter: BatchSubmitter, predictor: ChunkPredictor, closer: BatchCloser, retrier: BatchRetrier, aws: BatchAws
) -> None:
    # given acme's batch of one good image and one that is not an image, predicted as its one chunk
    aws.put("tenants/acme/in/good.png", digit_samples()[3].read_bytes())
    aws.put("tenants/acme/in/bad.png", b"not an image")
    keys = ["tenants/acme/in/good.png", "tenants/acme/in/bad.png"]
    batch_id = submitter.for_tenant(Tenant("acme")).submit(parse(images=keys))["batch_id"]
    chunk = dataclasses.replace(chunk_of(keys), batch_id=batch_id, tenant=Tenant("acme"))
    predictor.run(chunk)

    # when the batch closes and is retried
    closer.try_close(batch_id)
    job = aws.store.get(batch_id)
    retrier.retry(batch_id)

    # then every object it wrote is under acme's prefix, none outside it
    assert job["results_key"] == f"tenants/acme/results/{batch_id}/results-1.jsonl"
    assert job["errors_csv_key"] == f"tenants/acme/results/{batch_id}/errors-1.csv"
    assert job["errors_jsonl_key"] == f"tenants/acme/results/{batch_id}/errors-1.jsonl"
    written = [key for key in aws.object_keys() if key not in keys]
    assert f"tenants/acme/jobs/{batch_id}/keys-2.jsonl" in written
    assert all(key.startswith("tenants/acme/") for key in written), written
